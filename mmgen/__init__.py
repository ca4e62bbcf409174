"""mmgen: multimodal autoregressive generation of images and video on one shared transformer."""
from mmgen.tokens import GridLayout, ScalesLayout, Tokens

__version__ = "0.1.0"

__all__ = ["create_generator", "create_model", "create_tokenizer", "list_models", "load", "Tokens", "GridLayout", "ScalesLayout"]


_PRESET_API = ("create_generator", "create_model", "create_tokenizer", "list_models")


def __getattr__(name: str):
    """``mmgen.create_*`` / ``mmgen.list_models``: the registry, once the model packages have registered their presets.

    Resolved on first use, so ``import mmgen`` (and ``mmgen --help``) stays light.
    """
    if name in _PRESET_API:
        import mmgen.models  # noqa: F401  (importing them registers their presets)
        import mmgen.tokenizers_vis  # noqa: F401
        from mmgen import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(path, device="cpu"):
    """Load a generation pipeline (tokenizer + generator) from one checkpoint folder."""
    from mmgen.pipeline import Pipeline

    return Pipeline.from_pretrained(path, device=device)
