"""Compositional judge for the ``shapes`` world: does a generated image match its caption?

GenEval's idea on a world whose truth we know exactly. Objects are found as connected bright
blobs; colour is the nearest palette colour (brightness-normalised, so dim or washed-out
generations still count), shape the best-fitting template in the blob's box, size the box side
relative to the canvas, position the box centre's 3x3 cell. Detections are matched to the
caption's objects by an optimal assignment, then every attribute is scored.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from mmgen.data.shapes import COLORS, POSITIONS, SHAPES, SIZE_FRACTION, ShapeObject, parse_caption, shape_mask
from mmgen.images import to_uint8

__all__ = ["ATTRIBUTES", "Detection", "JudgeResult", "detect", "judge", "judge_batch", "to_uint8_image"]

ATTRIBUTES = ("color", "shape", "size", "position")
_PALETTE = np.array(list(COLORS.values()), dtype=np.float64)
_SIZE_THRESHOLD = float(np.sqrt(SIZE_FRACTION["small"] * SIZE_FRACTION["large"]))  # ~0.316 of the side
_NOISY = 12.0  # background std (0..255) above which the image is denoised first
_MIN_AREA = 0.3  # specks below this fraction of a small triangle's area are noise


@dataclass
class Detection:
    """One detected object: its attributes plus the evidence they came from."""

    color: str
    shape: str
    size: str
    position: str
    box: tuple[int, int, int, int]  # y0, x0, y1, x1 (exclusive)
    area: int
    rgb: tuple[float, float, float]
    shape_scores: dict[str, float] = field(default_factory=dict)  # template IoU per shape

    def as_object(self) -> ShapeObject:
        return ShapeObject(self.color, self.shape, self.size, self.position)


@dataclass
class JudgeResult:
    """Per-prompt verdict. ``objects[k][attr]`` is whether caption object k got ``attr`` right."""

    caption: str
    detections: list[Detection]
    objects: list[dict[str, bool]]
    count: bool

    @property
    def whole(self) -> bool:
        """Right number of objects and every attribute of every object right."""
        return self.count and all(all(o.values()) for o in self.objects)

    def attribute(self, name: str) -> bool:
        """Whether every caption object got attribute ``name`` right."""
        if name not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {name!r}; allowed: {list(ATTRIBUTES)}")
        return all(o[name] for o in self.objects)


def to_uint8_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 ``(H,W,3)`` from a uint8 HWC array or a float ``(3,H,W)`` tensor/array in [-1,1]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected one image (H,W,3) uint8 or (3,H,W) float, got shape {image.shape}")
    if image.dtype == np.uint8:
        if image.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (H,W,3), got shape {image.shape}")
        return image
    if image.shape[0] != 3:
        raise ValueError(f"float images must be (3,H,W) in [-1,1], got shape {image.shape}")
    return to_uint8(torch.from_numpy(np.ascontiguousarray(np.transpose(image, (1, 2, 0))))).numpy()


def _classify_shape(mask: np.ndarray) -> tuple[str, dict[str, float]]:
    """Best template IoU in the blob's own box (fill ratio alone confuses small circles and triangles)."""
    h, w = mask.shape
    scores = {}
    for s in SHAPES:
        t = shape_mask(s, h, w)
        scores[s] = float((t & mask).sum() / max((t | mask).sum(), 1))
    return max(scores, key=scores.get), scores


def detect(image: np.ndarray | torch.Tensor, min_area: float = _MIN_AREA) -> list[Detection]:
    """Find the objects of a shapes-world image (largest first).

    Args:
        image: uint8 ``(H,W,3)`` or float ``(3,H,W)`` in [-1,1].
        min_area: blobs smaller than this fraction of a small triangle's area are ignored.
    """
    img = to_uint8_image(image).astype(np.float64)
    side = img.shape[0]
    value = img.max(axis=2)
    dark = img[value < 64]
    if dark.size and dark.std() > _NOISY:  # noisy generation: a 3x3 median keeps edges, drops grain
        img = ndimage.median_filter(img, size=(3, 3, 1))
        value = img.max(axis=2)
    # Half of the image's own bright level: the edge of a blurred object, and far above noise.
    threshold = float(np.clip(0.5 * np.percentile(value, 99.5), 64, 128))
    labels, n = ndimage.label(value > threshold)
    small = SIZE_FRACTION["small"] * side
    out: list[Detection] = []
    for k, sl in enumerate(ndimage.find_objects(labels), 1):
        if sl is None:
            continue
        comp = ndimage.binary_fill_holes(labels[sl] == k)
        area = int(comp.sum())
        if area < min_area * small * small / 2:
            continue
        ys, xs = np.nonzero(comp)
        y0, y1 = sl[0].start + ys.min(), sl[0].start + ys.max() + 1
        x0, x1 = sl[1].start + xs.min(), sl[1].start + xs.max() + 1
        crop = comp[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        shape, scores = _classify_shape(crop)
        pix = img[y0:y1, x0:x1][crop & (value[y0:y1, x0:x1] > threshold)]
        rgb = np.median(pix, axis=0)
        normed = rgb / max(rgb.max(), 1.0) * 255.0  # brightness does not change the hue
        color = list(COLORS)[int(np.argmin(((_PALETTE - normed) ** 2).sum(axis=1)))]
        size = "large" if max(y1 - y0, x1 - x0) / side > _SIZE_THRESHOLD else "small"
        row = min(int((y0 + y1) / 2 / side * 3), 2)
        col = min(int((x0 + x1) / 2 / side * 3), 2)
        out.append(Detection(color, shape, size, POSITIONS[row * 3 + col], (int(y0), int(x0), int(y1), int(x1)),
                             area, tuple(float(c) for c in rgb), scores))
    return sorted(out, key=lambda d: -d.area)


def _cell_distance(a: str, b: str) -> float:
    ra, ca = divmod(POSITIONS.index(a), 3)
    rb, cb = divmod(POSITIONS.index(b), 3)
    return abs(ra - rb) + abs(ca - cb)


def judge(image: np.ndarray | torch.Tensor, caption: str) -> JudgeResult:
    """Score one image against its caption.

    Detections are assigned to caption objects minimising the number of wrong attributes (cell
    distance breaks ties); an unmatched caption object gets every attribute wrong.
    """
    wanted = parse_caption(caption)
    found = detect(image)
    objects = [dict.fromkeys(ATTRIBUTES, False) for _ in wanted]
    if found:
        cost = np.array([[sum(getattr(w, a) != getattr(d, a) for a in ATTRIBUTES) + 0.01 * _cell_distance(w.position, d.position)
                          for d in found] for w in wanted])
        for i, j in zip(*linear_sum_assignment(cost)):
            objects[i] = {a: getattr(wanted[i], a) == getattr(found[j], a) for a in ATTRIBUTES}
    return JudgeResult(caption, found, objects, count=len(found) == len(wanted))


def judge_batch(images: list | np.ndarray | torch.Tensor, captions: list[str]) -> dict[str, float]:
    """Accuracies over a batch.

    Args:
        images: a ``(B,3,H,W)`` float tensor in [-1,1], a ``(B,H,W,3)`` uint8 array, or a list of images.
        captions: one caption per image.

    Returns:
        ``{"color", "shape", "size", "position"}``: fraction of caption objects with that attribute
        right; ``"count"``: fraction of images with the right number of objects; ``"whole"``:
        fraction of images fully right; ``"whole_1obj"`` / ``"whole_2obj"`` by prompt object count
        (present when such prompts occur); ``"n"``: number of images.
    """
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions")
    if len(captions) == 0:
        raise ValueError("judge_batch needs at least one image")
    results = [judge(img, cap) for img, cap in zip(images, captions)]
    objs = [o for r in results for o in r.objects]
    out: dict[str, float] = {a: float(np.mean([o[a] for o in objs])) for a in ATTRIBUTES}
    out["count"] = float(np.mean([r.count for r in results]))
    out["whole"] = float(np.mean([r.whole for r in results]))
    for k in sorted({len(r.objects) for r in results}):
        out[f"whole_{k}obj"] = float(np.mean([r.whole for r in results if len(r.objects) == k]))
    out["n"] = len(results)
    return out
