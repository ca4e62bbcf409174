"""Gradio web demo (the paradigm arena, text-to-image, text-to-video): ``build_app()``, ``launch()``, ``mount()``.

gradio is imported only when the page is built, so ``mmgen.app.handlers`` / ``models`` / ``arena`` /
``grammar`` / ``view`` (validation, streaming, model discovery, the arena, the words, the HTML) stay
cheap to import and test.
"""
from __future__ import annotations

__all__ = ["build_app", "launch", "mount", "page_style"]


def __getattr__(name: str):
    if name in __all__:
        from mmgen.app import demo

        return getattr(demo, name)
    raise AttributeError(f"module 'mmgen.app' has no attribute {name!r}")
