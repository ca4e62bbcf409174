"""Pluggable segmenters for the subobject tokenizer: uint8 image ``(H, W, 3)`` -> int label map ``(H, W)``.

A segmenter is named by a spec string, ``"name"`` or ``"name:key=value,..."`` (values are
YAML scalars), so a tokenizer config can carry it:

- ``felzenszwalb`` (default; scikit-image's graph-based segmentation): with ``scale=1, sigma=0,
  min_size=1`` every flat-colour blob is one segment, which is exact on the ``shapes`` world; use
  e.g. ``felzenszwalb:scale=50,sigma=0.5,min_size=4`` on photos. ``merge_tol=T`` then folds
  anti-aliasing fragments into their neighbours (:func:`merge_fragments`), so an anti-aliased render
  gives the same few segments as a crisp one (and a crisp render is left exactly as it was).
- ``slic:n_segments=16,compactness=10``: k-means superpixels.
- ``watershed:markers=16,compactness=0.001``: watershed of the Sobel edge map.
- ``sam:/path/to/sam_vit_b.pth`` (optionally ``sam:/path,model_type=vit_b``): segment-anything's
  automatic mask generator, when the ``segment_anything`` package and its weights are on disk.

None of the defaults needs downloaded weights. :func:`register_segmenter` adds more.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

__all__ = ["register_segmenter", "get_segmenter", "list_segmenters", "parse_segmenter_spec", "merge_fragments"]

Segmenter = Callable[[np.ndarray], np.ndarray]
_FACTORIES: dict[str, Callable[..., Segmenter]] = {}


def register_segmenter(name: str, factory: Callable[..., Segmenter]) -> None:
    """Add a segmenter kind: ``factory(**options) -> fn(image uint8 HWC) -> labels int (H, W)``."""
    if name in _FACTORIES:
        raise KeyError(f"segmenter {name!r} is already registered")
    _FACTORIES[name] = factory


def list_segmenters() -> list[str]:
    return sorted(_FACTORIES)


def parse_segmenter_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """``"slic:n_segments=16"`` -> ``("slic", None, {"n_segments": 16})``; a bare value after the colon is a path."""
    name, _, rest = spec.partition(":")
    path, options = None, {}
    for item in filter(None, (t.strip() for t in rest.split(","))):
        key, eq, value = item.partition("=")
        if eq:
            options[key.strip()] = yaml.safe_load(value.strip())
        elif path is None:
            path = item
        else:
            raise ValueError(f"segmenter spec {spec!r}: {item!r} must look like key=value")
    return name.strip(), path, options


@lru_cache(maxsize=16)
def get_segmenter(spec: str) -> Segmenter:
    """The segmenter a spec names (built once per spec).

    Raises:
        ValueError: unknown kind (the known ones are listed) or bad options.
    """
    name, path, options = parse_segmenter_spec(spec)
    if name not in _FACTORIES:
        raise ValueError(f"unknown segmenter {name!r} in {spec!r}; available: {list_segmenters()}")
    if path is not None:
        options["path"] = path
    try:
        return _FACTORIES[name](**options)
    except TypeError as e:
        raise ValueError(f"bad options for segmenter {name!r} in {spec!r}: {e}") from None


def _check(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"segmenters take one uint8 (H, W, 3) image, got {getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
    return image


def _felzenszwalb(scale: float = 1.0, sigma: float = 0.0, min_size: int = 1, merge_tol: float | None = None,
                  small: int = 4) -> Segmenter:
    from skimage.segmentation import felzenszwalb

    def segment(image: np.ndarray) -> np.ndarray:
        labels = felzenszwalb(_check(image), scale=scale, sigma=sigma, min_size=min_size)
        return labels if merge_tol is None else merge_fragments(image, labels, merge_tol, small)

    return segment


def _neighbour_pairs(labels: np.ndarray) -> np.ndarray:
    """Distinct ``(a, b)`` label pairs that touch (8-connectivity), both directions."""
    pairs = [np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1), np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1),
             np.stack([labels[:-1, :-1].ravel(), labels[1:, 1:].ravel()], 1), np.stack([labels[:-1, 1:].ravel(), labels[1:, :-1].ravel()], 1)]
    p = np.concatenate(pairs)
    p = p[p[:, 0] != p[:, 1]]
    return np.unique(np.concatenate([p, p[:, ::-1]]), axis=0)


def merge_fragments(image: np.ndarray, labels: np.ndarray, tol: float = 30.0, small: int = 4, passes: int = 8) -> np.ndarray:
    """Fold anti-aliasing fragments into a larger neighbour; labels ``(H, W)`` -> relabelled ``0..K-1``.

    A fragment is a segment with at most ``small`` pixels or no interior pixel (nowhere two pixels
    thick: the strips an edge leaves when it crosses pixels at a constant coverage). It joins a larger
    touching segment when its mean colour lies within ``tol`` (0..255, Euclidean) of that segment's
    colour or of the line between two larger neighbours' colours (a coverage mix of the two): it goes
    to the nearer end of the mix. A crisp render has no mixed colours, so nothing merges there.
    """
    _, labels = np.unique(labels, return_inverse=True)
    labels = labels.reshape(image.shape[:2])
    rgb = image.reshape(-1, 3).astype(np.float64)
    for _ in range(passes):
        k = int(labels.max()) + 1
        if k == 1:
            break
        area = np.bincount(labels.ravel(), minlength=k)
        colour = np.stack([np.bincount(labels.ravel(), rgb[:, c], k) for c in range(3)], 1) / area[:, None]
        pad = np.pad(labels, 1, mode="edge")
        inner = (pad[:-2, 1:-1] == labels) & (pad[2:, 1:-1] == labels) & (pad[1:-1, :-2] == labels) & (pad[1:-1, 2:] == labels)
        thick = np.bincount(labels[inner], minlength=k) > 0
        fragment = (area <= small) | ~thick
        pairs = _neighbour_pairs(labels)
        target = np.arange(k)
        for a in np.nonzero(fragment)[0]:
            nb = pairs[pairs[:, 0] == a, 1]
            nb = nb[(area[nb] > area[a]) | ((area[nb] == area[a]) & (nb > a))]  # larger ones only: no cycles
            if len(nb) == 0:
                continue
            best, where = tol, -1
            for i, n in enumerate(nb):
                d = float(np.linalg.norm(colour[a] - colour[n]))
                if d <= best:
                    best, where = d, n
                for m in nb[i + 1:]:  # a mix t * colour[m] + (1 - t) * colour[n]
                    span = colour[m] - colour[n]
                    t = float(np.clip(np.dot(colour[a] - colour[n], span) / max(np.dot(span, span), 1e-9), 0, 1))
                    d = float(np.linalg.norm(colour[n] + t * span - colour[a]))
                    if d < best:
                        best, where = d, (m if t > 0.5 else n)
            if where >= 0:
                target[a] = where
        if (target == np.arange(k)).all():
            break
        for _ in range(k):  # follow chains a -> b -> c to their end (targets are always larger: it ends)
            nxt = target[target]
            if (nxt == target).all():
                break
            target = nxt
        _, labels = np.unique(target[labels], return_inverse=True)
        labels = labels.reshape(image.shape[:2])
    return labels


def _slic(n_segments: int = 16, compactness: float = 10.0, sigma: float = 0.0) -> Segmenter:
    from skimage.segmentation import slic

    return lambda image: slic(_check(image), n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0)


def _watershed(markers: int = 16, compactness: float = 0.001) -> Segmenter:
    from skimage.color import rgb2gray
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    return lambda image: watershed(sobel(rgb2gray(_check(image))), markers=markers, compactness=compactness) - 1


def _sam(path: str | None = None, model_type: str = "vit_b", points_per_side: int = 16) -> Segmenter:
    """Segment-anything masks painted largest first; pixels no mask covers form one more segment."""
    if path is None or not Path(path).is_file():
        raise ValueError(f"the 'sam' segmenter needs its weights on disk: 'sam:/path/to/sam_{model_type}.pth' (got {path!r}); nothing is downloaded")
    try:
        from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
    except ImportError:
        raise ValueError("the 'sam' segmenter needs the segment_anything package (pip install segment-anything)") from None
    generator = SamAutomaticMaskGenerator(sam_model_registry[model_type](checkpoint=path), points_per_side=points_per_side)

    def segment(image: np.ndarray) -> np.ndarray:
        masks = sorted(generator.generate(_check(image)), key=lambda m: -m["area"])
        labels = np.full(image.shape[:2], len(masks), dtype=np.int64)
        for k, m in enumerate(masks):  # largest first: smaller masks are written last and stay on top
            labels[m["segmentation"]] = k
        return labels

    return segment


register_segmenter("felzenszwalb", _felzenszwalb)
register_segmenter("slic", _slic)
register_segmenter("watershed", _watershed)
register_segmenter("sam", _sam)
