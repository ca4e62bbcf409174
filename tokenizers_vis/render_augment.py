"""Re-rendering augmentation for tokenizers trained on crisp synthetic renders.

The ``shapes`` world draws every object with crisp pixel-centre masks at whole-pixel boxes in exact
palette colours, so a tokenizer trained only on it sees six masks per shape and a handful of
colours, and fails on any other renderer of the same spec. :func:`rerender` redraws a batch the way
another renderer might: the image is warped at 4x resolution by a small random scale and sub-pixel
shift, box-downsampled (anti-aliased edges, sub-pixel geometry), and each image's colours are
moved per channel (scaled by the pixel's brightness, so an edge pixel's coverage mix is kept).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["rerender"]


def rerender(x: torch.Tensor, p: float, scale: float = 0.06, shift_px: float = 1.0, colour: float = 20.0,
             supersample: int = 4) -> torch.Tensor:
    """Re-render a fraction ``p`` of the images ``(B, 3, H, W)`` in [-1, 1]; the others are returned as they are.

    ``scale``: the largest relative zoom about the centre; ``shift_px``: the largest shift in pixels;
    ``colour``: the largest per-channel colour move in 0..255 units. Uses torch's global RNG.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p is a probability in [0, 1], got {p}")
    pick = torch.rand(x.shape[0], device=x.device) < p
    if not pick.any():
        return x
    sub = x[pick].float()
    n, _, h, w = sub.shape
    big = F.interpolate(sub + 1.0, scale_factor=supersample, mode="nearest")  # black = 0, so padding is black
    zoom = 1.0 + (torch.rand(n, device=x.device) * 2 - 1) * scale
    move = (torch.rand(n, 2, device=x.device) * 2 - 1) * shift_px * 2 / torch.tensor([w, h], device=x.device)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
    theta[:, :, 2] = move
    grid = F.affine_grid(theta, list(big.shape), align_corners=False)
    warped = F.avg_pool2d(F.grid_sample(big, grid, mode="nearest", padding_mode="zeros", align_corners=False), supersample)
    bright = warped.amax(1, keepdim=True) / 2.0  # 0..1: an edge pixel's coverage of its (full-brightness) colour
    move_rgb = (torch.rand(n, 3, 1, 1, device=x.device) * 2 - 1) * colour / 127.5
    out = x.clone()
    out[pick] = (warped - 1.0 + move_rgb * bright).clamp(-1, 1).to(x.dtype)
    return out
