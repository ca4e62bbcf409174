"""mmgen: multimodal autoregressive generation of images and video on one shared transformer.

Names are imported on first use (PEP 562), so ``import mmgen`` and ``mmgen --help`` do not pay
for torch until something needs it.
"""
from __future__ import annotations

from importlib import import_module
from pathlib import Path

__version__ = "0.1.0"

__all__ = ["create_generator", "create_model", "create_tokenizer", "list_models", "load", "Pipeline", "SamplerConfig",
           "Tokens", "GridLayout", "ScalesLayout", "SHIPPED"]

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"  # the checkpoints a source checkout ships

_LAZY = {
    "create_generator": "mmgen.registry", "create_model": "mmgen.registry", "create_tokenizer": "mmgen.registry",
    "list_models": "mmgen.registry", "Pipeline": "mmgen.pipeline", "SamplerConfig": "mmgen.sampler",
    "Tokens": "mmgen.tokens", "GridLayout": "mmgen.tokens", "ScalesLayout": "mmgen.tokens",
}


_PRESET_API = ("create_generator", "create_model", "create_tokenizer", "list_models")


def __getattr__(name: str):
    if name in _PRESET_API:  # the registry, once the model packages have registered their presets
        import_module("mmgen.models")
        import_module("mmgen.tokenizers_vis")
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmgen' has no attribute {name!r}")


def load(path_or_repo_id, device="cpu", **hub_kwargs):
    """Load a generation pipeline (tokenizer + generator + recommended sampler) from a folder or a Hub repo id.

    The same as ``mmgen.Pipeline.from_pretrained``; ``hub_kwargs``: revision, cache_dir, local_files_only, token.
    """
    from mmgen.pipeline import Pipeline

    return Pipeline.from_pretrained(path_or_repo_id, device=device, **hub_kwargs)
