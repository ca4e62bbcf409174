"""Image metrics that training logs and evaluation share (a leaf module: imports only torch)."""
from __future__ import annotations

import torch

__all__ = ["psnr"]


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB of ``(B, ...)`` tensors, in float64 (default range: pixels in [-1, 1])."""
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp(min=1e-20))
