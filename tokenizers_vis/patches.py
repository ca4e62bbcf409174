"""Square patches of an image grid as tokens and back: the one layout FlexTok, its heads and the SeqAE share."""
from __future__ import annotations

import torch
from einops import rearrange

__all__ = ["patchify", "unpatchify"]


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, (H/p)(W/p), p*p*C)``, patches in row-major order."""
    return rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)


def unpatchify(x: torch.Tensor, p: int, g: int) -> torch.Tensor:
    """Inverse of :func:`patchify` for a ``g x g`` patch grid: ``(B, g*g, p*p*C)`` -> ``(B, C, g*p, g*p)``."""
    return rearrange(x, "b (h w) (p q c) -> b c (h p) (w q)", h=g, w=g, p=p, q=p)
