"""An independent renderer of the ``shapes`` spec, to test models off the world's own renderer.

Same scenes and captions as :mod:`mmgen.data.shapes` (the grammar, sizes, 3x3 cells and the <= 2%
box jitter), drawn by a different code path so that small rendering differences show up:

- PIL ``ImageDraw`` polygons / ellipses at ``supersample`` x the canvas, box-downsampled
  (anti-aliased edges instead of crisp pixel-centre masks);
- sub-pixel box jitter (boxes are not rounded to whole pixels);
- palette values moved per object by up to ``palette_shift`` per channel (clipped to 0..255).

A tokenizer or judge that only works on the world's exact pixels fails here; the caption still
describes the image exactly as the spec means it.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from .shapes import COLORS, JITTER_FRACTION, POSITIONS, SIZE_FRACTION, ShapeObject, caption, sample_scene

__all__ = ["render_variant", "variant_batch"]


def _box(obj: ShapeObject, size: int, jitter: np.ndarray) -> tuple[float, float, float]:
    """Float ``(x0, y0, side)``: the spec's box centred on its cell, jittered, clamped, never rounded."""
    side = SIZE_FRACTION[obj.size] * size
    row, col = divmod(POSITIONS.index(obj.position), 3)
    x0 = (col + 0.5) * size / 3 - side / 2 + jitter[0]
    y0 = (row + 0.5) * size / 3 - side / 2 + jitter[1]
    return min(max(x0, 0.0), size - side), min(max(y0, 0.0), size - side), side


def render_variant(objects: list[ShapeObject], size: int = 32, rng: np.random.Generator | None = None,
                   supersample: int = 4, palette_shift: int = 20) -> np.ndarray:
    """Render a scene the independent way; uint8 ``(size, size, 3)``. ``rng=None``: no jitter, exact palette."""
    if supersample < 1 or not 0 <= palette_shift <= 64:
        raise ValueError(f"need supersample >= 1 and 0 <= palette_shift <= 64, got {supersample}, {palette_shift}")
    big = Image.new("RGB", (size * supersample, size * supersample), (0, 0, 0))
    draw = ImageDraw.Draw(big)
    s = supersample
    for obj in objects:
        jitter = np.zeros(2) if rng is None else rng.uniform(-1, 1, 2) * JITTER_FRACTION * size
        shift = np.zeros(3) if rng is None else rng.integers(-palette_shift, palette_shift + 1, 3)
        colour = tuple(int(c) for c in np.clip(np.array(COLORS[obj.color]) + shift, 0, 255))
        x0, y0, side = (v * s for v in _box(obj, size, jitter))
        x1, y1 = x0 + side, y0 + side
        if obj.shape == "square":
            draw.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill=colour)
        elif obj.shape == "circle":
            draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=colour)  # PIL's box is inclusive
        else:  # apex at the top edge's midpoint, base on the bottom edge
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    arr = np.asarray(big, dtype=np.float64).reshape(size, s, size, s, 3).mean((1, 3))  # box downsample
    return arr.round().clip(0, 255).astype(np.uint8)


def variant_batch(n: int, objects: int, seed: int = 0, size: int = 32, **kw) -> tuple[torch.Tensor, list[str]]:
    """``n`` fresh scenes with ``objects`` (1 or 2) objects: pixels ``(n, 3, size, size)`` in [-1, 1] and captions."""
    rng = np.random.default_rng([seed, objects, 7])
    scenes = [sample_scene(rng, objects) for _ in range(n)]
    images = np.stack([render_variant(sc, size, rng, **kw) for sc in scenes])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return pixels.contiguous(), [caption(sc) for sc in scenes]
