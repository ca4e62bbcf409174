"""The ``digits`` world: scikit-learn's 1,797 real handwritten 8x8 digits, upscaled.

Real data that ships inside scikit-learn (no download), small enough for CPU tests and rich
enough that a class-conditional generator has to learn something. White digit on black.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["DigitsWorld", "load_digits_arrays", "digits_split_indices", "upscale_digits"]

SPLITS = ("all", "train", "test")
TEST_FRACTION = 0.2


@lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(images float32 (1797, 8, 8) on the 0..16 scale, labels int64 (1797,))`` from sklearn."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def digits_split_indices(split: str, seed: int = 0) -> np.ndarray:
    """Indices of a deterministic, class-stratified 80/20 train/test split (or all of them)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)} for digits, got {split!r}")
    _, labels = load_digits_arrays()
    if split == "all":
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):  # stratified: 20% of every class goes to test
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[: round(TEST_FRACTION * len(idx))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def upscale_digits(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """8x8 digits on the 0..16 scale ``(N,8,8)`` -> ``(N,3,size,size)`` in [-1,1] (bilinear)."""
    x = torch.as_tensor(images, dtype=torch.float32)[:, None] / 16.0
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 2 - 1).expand(-1, 3, -1, -1).contiguous()


class DigitsWorld(Dataset):
    """Map-style dataset of upscaled real digits.

    Args:
        size: output side in pixels (>= 8).
        split: ``"all"``, ``"train"`` (80%) or ``"test"`` (20%), stratified by class.
        seed: seed of the split.

    Items are ``{"pixels": float32 (3,H,W) in [-1,1], "label": int, "caption": "a handwritten digit 3"}``.
    """

    infinite = False

    def __init__(self, size: int = 32, split: str = "all", seed: int = 0):
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an integer >= 8, got {size!r}")
        self.size, self.split, self.seed = size, split, seed
        self.indices = digits_split_indices(split, seed)
        images, labels = load_digits_arrays()
        self.images, self.labels = images[self.indices], labels[self.indices]  # upscaled lazily per item

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} digits ({self.split} split)")
        label = int(self.labels[i])
        pixels = upscale_digits(self.images[i][None], self.size)[0]
        return {"pixels": pixels, "label": label, "caption": f"a handwritten digit {label}"}
