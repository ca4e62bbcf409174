"""The ``photos`` world: real photographs for reconstruction, with no download.

The sample photos that scikit-image and scikit-learn ship inside their wheels (astronaut, coffee,
chelsea the cat, rocket, a motorcycle, the Hubble deep field, a retina, a stained tissue slide;
sklearn's china and flower). Item ``i`` is a random square crop (side 25-100% of the photo's
short side, possibly mirrored) resized to ``size``: a pure function of ``(seed, i)``, so runs
are reproducible and resumable. The test split holds out whole photos (china, flower, chelsea),
so test reconstructions are of photos a tokenizer never saw.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["PHOTOS", "TEST_PHOTOS", "load_photo", "PhotosWorld"]

_SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")
PHOTOS: tuple[str, ...] = _SKIMAGE + ("motorcycle", "china", "flower")
TEST_PHOTOS: tuple[str, ...] = ("china", "flower", "chelsea")
_SPLITS = {"train": None, "test": 1}
MIN_CROP = 0.25  # smallest crop side, as a fraction of the photo's short side


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """One shipped photo as uint8 ``(H, W, 3)``."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; available: {list(PHOTOS)}")
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return np.ascontiguousarray(load_sample_image(f"{name}.jpg"))
    import skimage.data

    if name == "motorcycle":  # shipped as a file, without a loader function of its own
        from pathlib import Path

        import skimage.io

        return np.ascontiguousarray(skimage.io.imread(Path(skimage.data.__file__).parent / "motorcycle_left.png")[..., :3])
    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


class PhotosWorld(Dataset):
    """Random crops of the shipped photos, ``{"pixels": float32 (3, size, size) in [-1, 1], "label": photo index}``.

    Args:
        size: output side in pixels (>= 8).
        seed: world seed.
        split: ``"train"`` (every photo but the test ones) or ``"test"`` (china, flower, chelsea).
        length: virtual length (crops are drawn on the fly).
    """

    infinite = True  # packing needs an explicit sample count

    def __init__(self, size: int = 32, seed: int = 0, split: str = "train", length: int = 10**9) -> None:
        if not isinstance(size, (int, np.integer)) or size < 8:
            raise ValueError(f"size must be an integer >= 8, got {size!r}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)} for photos, got {split!r}")
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        self.size, self.seed, self.split, self.length = int(size), seed, split, length
        self.names = TEST_PHOTOS if split == "test" else tuple(n for n in PHOTOS if n not in TEST_PHOTOS)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a PhotosWorld of length {self.length}")
        code = _SPLITS[self.split]
        rng = np.random.default_rng([self.seed, i] if code is None else [self.seed, i, code])
        k = int(rng.integers(len(self.names)))
        photo = load_photo(self.names[k])
        h, w = photo.shape[:2]
        side = int(round(min(h, w) * rng.uniform(MIN_CROP, 1.0)))
        y0, x0 = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = torch.tensor(photo[y0 : y0 + side, x0 : x0 + side]).permute(2, 0, 1).float()[None]
        pixels = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)[0]
        if rng.random() < 0.5:
            pixels = pixels.flip(-1)
        pixels = (pixels / 127.5 - 1.0).clamp(-1, 1)
        return {"pixels": pixels.contiguous(), "label": PHOTOS.index(self.names[k])}
