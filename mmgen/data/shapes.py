"""The ``shapes`` world: a text-to-image world whose ground truth is known exactly.

One or two crisp, filled objects (colour, shape, size, 3x3 cell) on a black canvas, with a
caption in a tiny fixed grammar. Everything is a pure function of a seed, so a sample can be
regenerated at any index (training resume = "start at index k") and the compositional judge
(:mod:`mmgen.eval.judge`) can score generated images against the caption.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "COLORS", "SHAPES", "SIZES", "POSITIONS", "SIZE_FRACTION", "MIN_GAP_FRACTION", "ShapeObject",
    "caption", "parse_caption", "sample_scene", "place", "compatible", "render", "render_with_masks",
    "shape_mask", "class_label", "num_classes", "vocabulary", "ShapesWorld",
]

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "white": (255, 255, 255),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right",
)
SIZE_FRACTION: dict[str, float] = {"small": 0.25, "large": 0.40}  # box side / canvas side
JITTER_FRACTION = 0.02  # max jitter of a box, as a fraction of the canvas side
MIN_GAP_FRACTION = 0.08  # min distance between the un-jittered boxes of two objects
MIN_CANVAS = 16


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene; every field is validated against the world's vocabulary."""

    color: str
    shape: str
    size: str
    position: str

    def __post_init__(self) -> None:
        for field, allowed in (("color", tuple(COLORS)), ("shape", SHAPES), ("size", SIZES), ("position", POSITIONS)):
            value = getattr(self, field)
            if value not in allowed:
                raise ValueError(f"unknown {field} {value!r}; allowed: {list(allowed)}")

    @property
    def cell(self) -> tuple[int, int]:
        """(row, col) of the object's 3x3 cell."""
        return divmod(POSITIONS.index(self.position), 3)


def caption(objects: list[ShapeObject]) -> str:
    """``a large red circle at the top left and a small blue square at the center``."""
    if not objects:
        raise ValueError("a caption needs at least one object, got an empty list")
    return " and ".join(f"a {o.size} {o.color} {o.shape} at the {o.position}" for o in objects)


def _expect(words: list[str], i: int, allowed: list[str], slot: str) -> str:
    if i >= len(words):
        raise ValueError(f"caption ends where a {slot} was expected; allowed: {allowed}")
    if words[i] not in allowed:
        raise ValueError(f"unknown word {words[i]!r} at position {i} (expected a {slot}); allowed: {allowed}")
    return words[i]


def parse_caption(text: str) -> list[ShapeObject]:
    """Strict inverse of :func:`caption` (case and extra whitespace are tolerated).

    Raises:
        ValueError: naming the first word that does not fit the grammar and the allowed words.
    """
    words = text.lower().split()
    objects: list[ShapeObject] = []
    i = 0
    while True:
        _expect(words, i, ["a"], "article")
        size = _expect(words, i + 1, list(SIZES), "size")
        color = _expect(words, i + 2, list(COLORS), "colour")
        shape = _expect(words, i + 3, list(SHAPES), "shape")
        _expect(words, i + 4, ["at"], "'at'")
        _expect(words, i + 5, ["the"], "'the'")
        first = _expect(words, i + 6, ["top", "bottom", "left", "center", "right"], "position")
        i += 7
        position = first
        if first in ("top", "bottom") and i < len(words) and words[i] in ("left", "right"):
            position = f"{first} {words[i]}"
            i += 1
        objects.append(ShapeObject(color, shape, size, position))
        if i == len(words):
            return objects
        _expect(words, i, ["and"], "'and' or the end of the caption")
        i += 1


def vocabulary() -> list[str]:
    """Every word the grammar can produce, in a fixed order."""
    words = ["a", "and", "at", "the", *SIZES, *COLORS, *SHAPES]
    for p in POSITIONS:
        words += [w for w in p.split() if w not in words]
    return words


def num_classes() -> int:
    return len(COLORS) * len(SHAPES)


def class_label(obj: ShapeObject) -> int:
    """Class for class-conditional models: colour index x 3 + shape index (21 classes)."""
    return list(COLORS).index(obj.color) * len(SHAPES) + SHAPES.index(obj.shape)


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < MIN_CANVAS:
        raise ValueError(f"canvas size must be an integer >= {MIN_CANVAS}, got {size!r}")


def _side(size_name: str, canvas: int) -> int:
    return max(1, round(SIZE_FRACTION[size_name] * canvas))


def _box(obj: ShapeObject, canvas: int, jitter: tuple[float, float] = (0.0, 0.0)) -> tuple[int, int, int]:
    """(x0, y0, side) of the object's box: centred on its cell, jittered, clamped in the canvas."""
    side = _side(obj.size, canvas)
    row, col = obj.cell
    cx, cy = (col + 0.5) * canvas / 3, (row + 0.5) * canvas / 3
    x0 = min(max(round(cx - side / 2 + jitter[0]), 0), canvas - side)
    y0 = min(max(round(cy - side / 2 + jitter[1]), 0), canvas - side)
    return x0, y0, side


def _gap(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """Euclidean distance between two axis-aligned boxes (0 when they touch or overlap)."""
    gx = max(a[0], b[0]) - min(a[0] + a[2], b[0] + b[2])
    gy = max(a[1], b[1]) - min(a[1] + a[2], b[1] + b[2])
    return math.hypot(max(gx, 0), max(gy, 0))


def compatible(a: ShapeObject, b: ShapeObject, canvas: int = 300) -> bool:
    """Whether two objects may share a scene: distinct cells, un-jittered boxes >= 8% apart.

    Checked on a fine reference canvas (the rule is about fractions, not pixels).
    """
    return a.position != b.position and _gap(_box(a, canvas), _box(b, canvas)) >= MIN_GAP_FRACTION * canvas - 1e-9


def sample_scene(rng: np.random.Generator, num_objects: int = 1) -> list[ShapeObject]:
    """Draw a random scene of ``num_objects`` (1 or 2) mutually compatible objects."""
    if num_objects not in (1, 2):
        raise ValueError(f"num_objects must be 1 or 2, got {num_objects!r}")

    def draw() -> ShapeObject:
        return ShapeObject(
            color=list(COLORS)[rng.integers(len(COLORS))],
            shape=SHAPES[rng.integers(len(SHAPES))],
            size=SIZES[rng.integers(len(SIZES))],
            position=POSITIONS[rng.integers(len(POSITIONS))],
        )

    while True:  # rejection sampling of the whole scene: uniform over valid scenes (about half of all pairs)
        objects = [draw() for _ in range(num_objects)]
        if all(compatible(a, b) for k, a in enumerate(objects) for b in objects[k + 1:]):
            return objects


def place(objects: list[ShapeObject], size: int = 32, rng: np.random.Generator | None = None) -> list[tuple[int, int, int]]:
    """Pixel boxes ``(x0, y0, side)`` of the objects; ``rng`` adds the <= 2% jitter (None: none)."""
    _check_size(size)
    boxes = []
    for obj in objects:
        jitter = (0.0, 0.0) if rng is None else tuple(rng.uniform(-1, 1, size=2) * JITTER_FRACTION * size)
        boxes.append(_box(obj, size, jitter))
    return boxes


def shape_mask(shape: str, height: int, width: int | None = None) -> np.ndarray:
    """Crisp boolean mask of ``shape`` filling an ``height x width`` box (pixel-centre sampling).

    The triangle points up with its apex at the top edge's midpoint and its base on the bottom edge.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; allowed: {list(SHAPES)}")
    width = height if width is None else width
    v = (np.arange(height) + 0.5)[:, None] / height  # 0..1 from top to bottom
    u = (np.arange(width) + 0.5)[None, :] / width
    if shape == "square":
        return np.ones((height, width), dtype=bool)
    if shape == "circle":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    # Triangle: the half-width grows linearly from 0 at the top to 1/2 at the bottom. Each row takes
    # the width at its lower edge, so the apex row is not empty and the shape spans the whole box.
    v_low = (np.arange(height) + 1.0)[:, None] / height
    return np.abs(u - 0.5) <= 0.5 * v_low + 1e-9


def render_with_masks(
    objects: list[ShapeObject], size: int = 32, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene and return ``(image uint8 (H,W,3), masks bool (K,H,W))``, one mask per object.

    Every pixel is exactly black or exactly one object's colour (no anti-aliasing).
    """
    image = np.zeros((size, size, 3), dtype=np.uint8)
    masks = np.zeros((len(objects), size, size), dtype=bool)
    for k, (obj, (x0, y0, side)) in enumerate(zip(objects, place(objects, size, rng))):
        masks[k, y0:y0 + side, x0:x0 + side] = shape_mask(obj.shape, side)
        image[masks[k]] = COLORS[obj.color]
    return image, masks


def render(objects: list[ShapeObject], size: int = 32, rng: np.random.Generator | None = None) -> np.ndarray:
    """Render a scene to a uint8 ``(H, W, 3)`` array; see :func:`render_with_masks`."""
    return render_with_masks(objects, size, rng)[0]


_OBJECT_COUNTS = {"1": (1,), "2": (2,), "1-2": (1, 2)}
_SPLITS = {"train": None, "test": 1, "val": 2}


class ShapesWorld(Dataset):
    """Map-style ``shapes`` dataset with a huge virtual length; item ``i`` is a pure function of (seed, i).

    Args:
        size: canvas side in pixels (>= 16; 32, 64 and 128 are the tested ones).
        seed: world seed.
        objects: ``"1"``, ``"2"`` or ``"1-2"`` (one or two objects, equally likely unless ``two_fraction``).
        two_fraction: with ``"1-2"``, the probability of two objects (a recipe may favour the
            harder two-object scenes; None keeps the equal draw and its exact sample stream).
        length: virtual length (resume = start at index k).
        split: ``"train"`` uses ``default_rng([seed, i])``; ``"test"``/``"val"`` draw disjoint streams.

    Items are ``{"pixels": float32 (3,H,W) in [-1,1], "caption": str, "label": int}``; the label is
    the class of the first object.
    """

    infinite = True  # packing needs an explicit sample count

    def __init__(self, size: int = 32, seed: int = 0, objects: str = "1-2", length: int = 10**9, split: str = "train",
                 two_fraction: float | None = None):
        _check_size(size)
        if objects not in _OBJECT_COUNTS:
            raise ValueError(f"objects must be one of {list(_OBJECT_COUNTS)}, got {objects!r}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)} for shapes, got {split!r}")
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        if two_fraction is not None and (objects != "1-2" or not 0.0 <= two_fraction <= 1.0):
            raise ValueError(f"two_fraction needs objects='1-2' and a value in [0, 1]; got objects={objects!r}, two_fraction={two_fraction}")
        self.two_fraction = two_fraction
        self.size, self.seed, self.objects, self.length, self.split = size, seed, objects, length, split

    def __len__(self) -> int:
        return self.length

    def scene(self, i: int) -> tuple[list[ShapeObject], np.ndarray, np.ndarray]:
        """``(objects, image uint8 HWC, masks)`` of item ``i`` (ground truth for evaluation)."""
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a ShapesWorld of length {self.length}")
        code = _SPLITS[self.split]
        rng = np.random.default_rng([self.seed, i] if code is None else [self.seed, i, code])
        counts = _OBJECT_COUNTS[self.objects]
        if self.two_fraction is not None:
            n = 2 if rng.random() < self.two_fraction else 1
        else:
            n = counts[rng.integers(len(counts))] if len(counts) > 1 else counts[0]
        objects = sample_scene(rng, n)
        image, masks = render_with_masks(objects, self.size, rng)
        return objects, image, masks

    def __getitem__(self, i: int) -> dict:
        objects, image, _ = self.scene(int(i))
        pixels = torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)
        return {"pixels": pixels.contiguous(), "caption": caption(objects), "label": class_label(objects[0])}
