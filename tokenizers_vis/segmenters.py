"""Pluggable segmenters for the subobject tokenizer: uint8 image ``(H, W, 3)`` -> int label map ``(H, W)``.

A segmenter is named by a spec string, ``"name"`` or ``"name:key=value,..."`` (values are
YAML scalars), so a tokenizer config can carry it:

- ``felzenszwalb`` (default; scikit-image's graph-based segmentation): with ``scale=1, sigma=0,
  min_size=1`` every flat-colour blob is one segment, which is exact on the ``shapes`` world; use
  e.g. ``felzenszwalb:scale=50,sigma=0.5,min_size=4`` on photos.
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

__all__ = ["register_segmenter", "get_segmenter", "list_segmenters", "parse_segmenter_spec"]

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


def _felzenszwalb(scale: float = 1.0, sigma: float = 0.0, min_size: int = 1) -> Segmenter:
    from skimage.segmentation import felzenszwalb

    return lambda image: felzenszwalb(_check(image), scale=scale, sigma=sigma, min_size=min_size)


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
