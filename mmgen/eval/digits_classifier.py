"""A digits classifier that scores class-conditional generations of the ``digits`` world.

Trained in a fraction of a second on the real scikit-learn digits, so no weights are shipped:
images of any size are area-downsampled back to 8x8 on the 0..16 scale and fed to an RBF SVM.
It is trained on the original 8x8 digits plus their upscale->downsample round trips, so the
resampling a generated image went through does not count against it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mmgen.data.digits import digits_split_indices, load_digits_arrays, upscale_digits

__all__ = ["DigitsClassifier", "digits_features"]

_ROUND_TRIP_SIZES = (16, 32)


def digits_features(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(B,3,H,W)`` (or ``(B,H,W)``) in [-1,1], H,W >= 8 -> ``(B,64)`` 8x8 area means on the 0..16 scale."""
    x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images).detach().float().cpu()
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images (B,3,H,W) or (B,H,W) in [-1,1], got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < 8:
        raise ValueError(f"images must be at least 8x8, got {tuple(x.shape[-2:])}")
    gray = (x.mean(dim=1, keepdim=True).clamp(-1, 1) + 1) / 2
    return (F.adaptive_avg_pool2d(gray, 8) * 16).flatten(1).numpy().astype(np.float64)


class DigitsClassifier:
    """RBF-SVM digit classifier (~98% on held-out real digits at 8 to 64 px).

    Example:
        >>> clf = DigitsClassifier.fit(seed=0)
        >>> acc = clf.accuracy(generated_pixels, requested_labels)
    """

    def __init__(self, model, seed: int, split: str):
        self.model, self.seed, self.split = model, seed, split

    @classmethod
    def fit(cls, seed: int = 0, split: str = "train") -> "DigitsClassifier":
        """Train on the ``split`` (``train`` by default, so the digits world's ``test`` stays held out).

        Args:
            seed: seed of the digits train/test split (and of the SVM).
            split: ``train`` or ``all``.
        """
        from sklearn.svm import SVC

        if split not in ("train", "all"):
            raise ValueError(f"fit on split 'train' or 'all', got {split!r}")
        images, labels = load_digits_arrays()
        idx = digits_split_indices(split, seed)
        feats = [images[idx].reshape(len(idx), -1)]
        feats += [digits_features(upscale_digits(images[idx], s)) for s in _ROUND_TRIP_SIZES]
        model = SVC(C=10.0, gamma="scale", random_state=seed)
        model.fit(np.concatenate(feats), np.tile(labels[idx], 1 + len(_ROUND_TRIP_SIZES)))
        return cls(model, seed, split)

    def predict(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Predicted digit ``(B,)`` int64 for images ``(B,3,H,W)`` in [-1,1] of any size >= 8."""
        return self.model.predict(digits_features(images)).astype(np.int64)

    def accuracy(self, images: torch.Tensor | np.ndarray, labels) -> float:
        """Fraction of ``images`` classified as their ``labels`` (the requested classes)."""
        labels = np.asarray(torch.as_tensor(labels).cpu()).reshape(-1)
        if len(labels) != len(images):
            raise ValueError(f"got {len(images)} images but {len(labels)} labels")
        return float((self.predict(images) == labels).mean())
