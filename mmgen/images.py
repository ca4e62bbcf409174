"""Pixels in and out of the project's one convention: float ``[-1, 1]`` inside models, uint8 outside.

One place for the conversion, the upscaled sample grid and the video writer, so the CLI, the demo
and the benchmarks write identical pictures.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid

__all__ = ["to_uint8", "from_uint8", "tile", "write_video", "VIDEO_FORMATS"]

VIDEO_FORMATS = (".mp4", ".gif")


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` floats -> uint8 in ``[0, 255]`` (any shape; values outside the range are clipped)."""
    return ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` -> float ``[-1, 1]``; float input is taken as already in ``[-1, 1]``."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()


def tile(images: torch.Tensor, nrow: int = 0, scale: int = 1, pad: int = 2, pad_value: int = 128, even: bool = False) -> torch.Tensor:
    """uint8 ``(B,3,H,W)`` -> one ``(Hg, Wg, 3)`` uint8 grid, nearest-upscaled by ``scale``.

    ``nrow`` images per row (default: about the square root of B); ``even`` pads to even sides
    (H.264 needs them).
    """
    x = images.repeat_interleave(scale, -2).repeat_interleave(scale, -1) if scale > 1 else images
    nrow = nrow or max(1, round(len(x) ** 0.5))
    grid = make_grid(x, nrow=nrow, padding=pad, pad_value=pad_value) if len(x) > 1 else x[0]
    if even:
        grid = torch.nn.functional.pad(grid, (0, grid.shape[-1] % 2, 0, grid.shape[-2] % 2))
    return grid.permute(1, 2, 0).contiguous()


def write_video(frames: torch.Tensor, path: str | Path, fps: float = 4.0) -> Path:
    """uint8 ``(T, H, W, 3)`` -> ``.mp4`` (H.264 via imageio's PyAV plugin) or looping ``.gif`` (Pillow)."""
    import imageio.v3 as iio

    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".mp4":
        iio.imwrite(path, frames.numpy(), plugin="pyav", fps=fps, codec="libx264")
    elif ext == ".gif":
        iio.imwrite(path, frames.numpy(), extension=".gif", duration=int(round(1000 / fps)), loop=0)
    else:
        raise ValueError(f"unknown video extension {path.suffix!r}; allowed: {', '.join(VIDEO_FORMATS)}")
    return path
