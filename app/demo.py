"""The Gradio page: the arena, a text-to-image tab, a text-to-video tab and the README's sections.

Only the page's frame lives here (header, tabs, queue, clean-up); the tabs are ``arena_tab`` and
``tab``; validation, generation, streaming and the arena are in ``handlers``/``arena`` (no
gradio, unit-tested). Generation goes through gradio's queue with a concurrency limit, and runs
in worker threads, so a slow request never blocks the page; light events (model info, random
seed) skip the queue. Theme and CSS are launch/mount options in gradio 6: ``page_style()``.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import weakref
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home; the demo works offline
import gradio as gr  # noqa: E402

from mmgen import SHIPPED  # noqa: E402
from mmgen.app import handlers as H  # noqa: E402
from mmgen.app import view  # noqa: E402
from mmgen.app.arena_tab import ArenaTab  # noqa: E402
from mmgen.app.models import InputError, ModelRegistry, without_paths  # noqa: E402
from mmgen.app.tab import GenerateTab  # noqa: E402

__all__ = ["build_app", "launch", "page_style", "mount"]

log = logging.getLogger("mmgen.app")
FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # local fonts: the page makes no outside requests
README_SECTIONS = ("What is here", "Usage", "Web demo", "Shipped checkpoints")
README = Path(__file__).resolve().parent.parent / "README.md"  # present in a source checkout (editable install)


def page_style() -> dict:
    """Theme and CSS, for ``launch`` or ``gr.mount_gradio_app`` (gradio 6 takes them there)."""
    theme = gr.themes.Default(primary_hue="orange", neutral_hue="slate", font=FONTS, font_mono=["ui-monospace", "monospace"])
    return {"theme": theme, "css": view.CSS}


def readme_sections(readme: Path = README) -> dict[str, str]:
    """The README's sections the header links to (empty where the README is not installed)."""
    if not readme.is_file():
        return {}
    parts = {}
    for block in ("\n" + readme.read_text()).split("\n## ")[1:]:
        title, _, body = block.partition("\n")
        if title.strip() in README_SECTIONS:
            lines = [line for line in body.splitlines() if not line.startswith("![")]  # the screenshots are of this page
            parts[title.strip()] = without_paths("\n".join(lines))
    return parts


def build_app(models_dir: str | Path | None = None, concurrency: int = 2, max_queue: int = 64, limits: H.Limits | None = None,
              preload: bool = True, device: str = "cpu") -> gr.Blocks:
    """The demo as a queued ``gr.Blocks``: launch it, or mount it with ``mount(fastapi_app, path)``.

    Args:
        models_dir: folder scanned for checkpoint folders (default: the shipped ``checkpoints/``).
        concurrency: generations running at once; more wait in the queue (at most ``max_queue``).
        preload: load the first image model in the background now, so the first click is fast.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if models_dir is not None and not Path(models_dir).is_dir():
        raise FileNotFoundError(f"--models-dir {str(models_dir)!r} is not a folder; give a folder of checkpoint folders (default: the shipped checkpoints/)")
    registry = ModelRegistry(models_dir or SHIPPED, device=device)
    limits = limits or H.Limits()
    outdir = Path(tempfile.mkdtemp(prefix="mmgen-demo-"))
    sections = readme_sections()
    with gr.Blocks(title="mmgen demo", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        with gr.Row(equal_height=True):
            gr.HTML(view.HEADER, elem_id="mmgen-header", container=False, padding=False, scale=5)
            with gr.Row(elem_id="mmgen-links", scale=2):
                links = [gr.Button(t, size="sm", variant="secondary", elem_id=f"readme-link-{k}", scale=0, min_width=40)
                         for k, t in enumerate(sections)]
        with gr.Tabs() as tabs:
            with gr.Tab("Arena: every paradigm", id="arena"):
                arena_tab = ArenaTab(registry, limits, outdir)
            with gr.Tab("Text to image", id="t2i"):
                image_tab = GenerateTab(registry, video=False, limits=limits, outdir=outdir)
            with gr.Tab("Text to video", id="t2v"):
                video_tab = GenerateTab(registry, video=True, limits=limits, outdir=outdir)
            if sections:
                with gr.Tab("About (README)", id="about"):
                    for k, (title, body) in enumerate(sections.items()):
                        gr.Markdown(f"## {title}\n{body}", elem_id=f"readme-{k}")
        for k, button in enumerate(links):
            scroll = f"() => {{ setTimeout(() => document.getElementById('readme-{k}')?.scrollIntoView(), 150); }}"
            button.click(lambda: gr.Tabs(selected="about"), None, tabs, js=scroll, queue=False, api_visibility="private")
    demo.mmgen_registry, demo.mmgen_tabs = registry, {"image": image_tab, "video": video_tab, "arena": arena_tab}  # for tests and embedding code
    # the result files go with the app: when it is collected, or at interpreter exit at the latest
    demo.mmgen_outdir = outdir
    demo.mmgen_cleanup = weakref.finalize(demo, shutil.rmtree, outdir, ignore_errors=True)
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    first = registry.default(video=False)
    if preload and first is not None and first.ok:
        threading.Thread(target=_preload, args=(registry, first.name), daemon=True).start()
    return demo


def _preload(registry: ModelRegistry, name: str) -> None:
    try:
        registry.get(name)
    except InputError as e:  # shown again, to the user, on the first request
        log.warning("could not preload %s: %s", name, e)


def mount(app, path: str = "/demo", **kwargs):
    """Mount the demo on an existing FastAPI ``app`` at ``path`` (``kwargs`` go to ``build_app``)."""
    return gr.mount_gradio_app(app, build_app(**kwargs), path=path, **page_style())


def launch(host: str = "127.0.0.1", port: int = 7860, models_dir: str | Path | None = None, share: bool = False,
           concurrency: int = 2, block: bool = True) -> gr.Blocks:
    """Serve the demo (localhost only unless ``host`` says otherwise) and print its address."""
    demo = build_app(models_dir, concurrency=concurrency)
    if threading.current_thread() is threading.main_thread():  # SIGTERM (kill, systemd) exits like Ctrl-C: temp files removed
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, show_error=True, quiet=True,
                max_file_size="1mb", **page_style())
    print(f"mmgen demo ready: {demo.local_url}" + (f" (public: {demo.share_url})" if share and demo.share_url else ""), flush=True)
    if block:
        demo.block_thread()
    return demo
