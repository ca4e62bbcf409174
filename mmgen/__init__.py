"""mmgen: multimodal autoregressive generation of images and video on one shared transformer."""
from mmgen.registry import create_generator, create_model, create_tokenizer, list_models
from mmgen.tokens import GridLayout, ScalesLayout, Tokens

__version__ = "0.1.0"

__all__ = ["create_generator", "create_model", "create_tokenizer", "list_models", "load", "Tokens", "GridLayout", "ScalesLayout"]


def load(path, device="cpu"):
    """Load a generation pipeline (tokenizer + generator) from one checkpoint folder."""
    from mmgen.pipeline import Pipeline

    return Pipeline.from_pretrained(path, device=device)
