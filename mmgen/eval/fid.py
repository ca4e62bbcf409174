"""FID and Inception Score with the standard Inception network (see :mod:`mmgen.eval.inception`).

Statistics (mean, covariance of the 2048-d pool features) are computed once and saved as
``.npz`` with the number of images, the protocol (network weights' sha256, resize) and where the
images came from, so a number can always be traced. ADM's reference batches are read too
(``mu``/``sigma``, or images ``arr_0`` uint8 NHWC). The Fréchet distance is computed in float64
from symmetric eigendecompositions, which stays real and stable for the rank-deficient
covariances of small sample sets (no ``sqrtm`` of a non-symmetric product, no eps fudge).
FID depends on the number of images (it is biased upwards for small ``n``): compare numbers
computed with the same ``n`` only.
"""
from __future__ import annotations

import functools
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mmgen.eval.inception import FEATURE_DIMS, InceptionFeatures, default_weights_path, file_sha256, to_uint8_nchw

__all__ = [
    "FIDStats", "frechet_distance", "psd_factor", "extract_features", "compute_stats", "compute_fid", "inception_score",
    "inception_score_from_logits", "default_extractor", "ImageFiles", "reference_stats", "default_cache_dir", "checkpoint_samples",
    "fid_against_world",
]

Images = Any  # uint8/float (N,3,H,W) tensor, uint8 NHWC array, sequence of (3,H,W) tensors or dataset items, iterable of batches


def default_extractor(device: str | torch.device = "cpu") -> InceptionFeatures:
    """The default Inception network (:func:`default_weights_path`), loaded once per weights file and device."""
    return _cached_extractor(str(default_weights_path().resolve()), str(torch.device(device)))


@functools.lru_cache(maxsize=2)
def _cached_extractor(weights: str, device: str) -> InceptionFeatures:
    return InceptionFeatures(weights, device=device)


def psd_factor(sigma: np.ndarray) -> np.ndarray:
    """``B`` (d x r) with ``sigma = B Bᵀ``, from the eigenpairs above round-off (r = numerical rank)."""
    w, v = np.linalg.eigh(np.asarray(sigma, np.float64))
    keep = w > max(w.max(), 0.0) * len(w) * np.finfo(np.float64).eps
    return v[:, keep] * np.sqrt(w[keep])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, factor1: np.ndarray | None = None) -> float:
    """Fréchet distance between Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``, in float64.

    With ``sigma1 = B Bᵀ``, the non-zero eigenvalues of ``sigma1 sigma2`` are those of the
    symmetric PSD ``Bᵀ sigma2 B``, so ``tr sqrt(sigma1 sigma2)`` is the sum of the square roots
    of real eigenvalues (clipped at 0 against round-off): no ``sqrtm`` of a non-symmetric
    matrix, no complex parts, and only ``r x r`` work when ``sigma1`` has rank ``r < d``.
    ``factor1`` (such a ``B``) may be passed to reuse it for a fixed reference.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"statistics disagree in dimension: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    b = psd_factor(sigma1) if factor1 is None else np.asarray(factor1, np.float64)
    m = b.T @ sigma2 @ b
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


@dataclass(eq=False)  # numpy fields: compare explicitly
class FIDStats:
    """Mean and covariance of Inception features, with what they were computed from.

    ``protocol`` says how (network weights, resize); ``meta`` says from what (world, folder,
    checkpoint, file + sha256). Stats with different ``protocol`` weights are not comparable.
    ``cov_factor`` is an optional ``B`` with ``sigma = B Bᵀ`` (the centred features when there
    are fewer images than dimensions; else computed once on demand), reused by :meth:`fid`.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    protocol: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    cov_factor: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, np.float64).reshape(-1)
        self.sigma = np.asarray(self.sigma, np.float64)
        if self.sigma.shape != (len(self.mu), len(self.mu)):
            raise ValueError(f"sigma must be ({len(self.mu)}, {len(self.mu)}) to match mu, got {self.sigma.shape}")

    @classmethod
    def from_features(cls, features: np.ndarray | torch.Tensor, protocol: dict | None = None, meta: dict | None = None) -> "FIDStats":
        f = np.asarray(features.cpu() if isinstance(features, torch.Tensor) else features, np.float64)
        if f.ndim != 2 or len(f) < 2:
            raise ValueError(f"need at least 2 feature vectors (N, D) for a covariance, got shape {f.shape}")
        mu = f.mean(0)
        factor = (f - mu).T / np.sqrt(len(f) - 1) if len(f) <= f.shape[1] else None
        return cls(mu, np.cov(f, rowvar=False), len(f), dict(protocol or {}), dict(meta or {}), factor)

    def fid(self, other: "FIDStats") -> float:
        """FID against ``other`` (warns when the two were computed with different network weights)."""
        wa, wb = self.protocol.get("weights_sha256"), other.protocol.get("weights_sha256")
        if wa and wb and wa != wb:
            warnings.warn(f"FID between statistics of different Inception weights ({wa[:12]} vs {wb[:12]}): the number is not comparable", stacklevel=2)
        a, b = (other, self) if self.cov_factor is None and other.cov_factor is not None else (self, other)  # symmetric: reuse a known factor
        if a.cov_factor is None:
            a.cov_factor = psd_factor(a.sigma)
        return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, factor1=a.cov_factor)

    def save(self, path: str | Path) -> Path:
        """Write ``.npz`` (mu, sigma, n, protocol and meta as JSON text) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
        np.savez(tmp, mu=self.mu, sigma=self.sigma, n=np.int64(self.n), protocol=np.str_(json.dumps(self.protocol)), meta=np.str_(json.dumps(self.meta)))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, extractor: InceptionFeatures | None = None, batch_size: int = 64, progress: bool = True) -> "FIDStats":
        """Read mmgen or ADM ``.npz``: statistics ``mu``/``sigma``, else images ``arr_0`` (uint8 NHWC)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reference statistics {str(path)!r} not found")
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable .npz file: {e}") from e
        with z:
            keys = set(z.files)
            meta = {"file": str(path.resolve()), "sha256": file_sha256(path)}
            if {"mu", "sigma"} <= keys:
                n = int(z["n"]) if "n" in keys else (len(z["arr_0"]) if "arr_0" in keys else 0)  # ADM files: images beside the stats
                protocol = json.loads(str(z["protocol"])) if "protocol" in keys else {"format": "ADM reference batch (TF Inception pool_3)"}
                saved = json.loads(str(z["meta"])) if "meta" in keys else {}
                return cls(z["mu"], z["sigma"], n, protocol, {**saved, **meta})
            if "arr_0" in keys:
                images = z["arr_0"]
                if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                    raise ValueError(f"{path}: arr_0 must be uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
                return compute_stats(images, extractor, batch_size=batch_size, progress=progress, meta=meta)
        raise KeyError(f"{path} has keys {sorted(keys)}; expected 'mu' and 'sigma' (statistics) or 'arr_0' (uint8 NHWC images)")


class ImageFiles(Sequence):
    """Image files of a folder (recursive, sorted) read lazily as uint8 ``(3, H, W)`` tensors."""

    def __init__(self, root: str | Path) -> None:
        from mmgen.data.folders import IMAGE_EXTENSIONS, find_images

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist")
        self.files = find_images(self.root)
        if not self.files:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {self.root}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):  # type: ignore[override]
        from PIL import Image

        with Image.open(self.files[i]) as im:
            return torch.from_numpy(np.array(im.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)


def _count(images: Images) -> int | None:
    if isinstance(images, (torch.Tensor, np.ndarray)):
        return len(images)
    if isinstance(images, Sequence) and len(images) and not (isinstance(images[0], torch.Tensor) and images[0].ndim == 4):
        return len(images)
    return None


def _batches(images: Images, batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 NCHW batches of at most ``batch_size`` same-sized images, in order."""
    if isinstance(images, np.ndarray):  # ADM layout: uint8 NHWC
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"image arrays must be (N, H, W, 3), got {images.shape}")
        for s in range(0, len(images), batch_size):
            yield torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).permute(0, 3, 1, 2)
        return
    if isinstance(images, torch.Tensor):
        for s in range(0, len(images), batch_size):
            yield to_uint8_nchw(images[s : s + batch_size])
        return
    pending: list[torch.Tensor] = []
    for item in images:
        x = item["pixels"] if isinstance(item, dict) else item
        x = to_uint8_nchw(x if x.ndim == 4 else x[None])
        if pending and (x.shape[1:] != pending[0].shape[1:] or sum(map(len, pending)) + len(x) > batch_size):
            yield torch.cat(pending)
            pending = []
        pending.append(x)
    if pending:
        yield torch.cat(pending)


def extract_features(images: Images, extractor: InceptionFeatures | None = None, batch_size: int = 64, progress: bool = True, desc: str = "inception features") -> np.ndarray:
    """float32 ``(N, 2048)`` pool features; float images are taken as ``[-1, 1]`` and quantized to 8 bits."""
    extractor = extractor or default_extractor()
    out = []
    with tqdm(total=_count(images), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in _batches(images, batch_size):
            out.append(extractor(batch).cpu().numpy())
            bar.update(len(batch))
    if not out:
        raise ValueError("no images to compute Inception features of")
    return np.concatenate(out)


def compute_stats(images: Images, extractor: InceptionFeatures | None = None, batch_size: int = 64, progress: bool = True, meta: dict | None = None) -> FIDStats:
    """Feature statistics of ``images`` (see :func:`extract_features` for what ``images`` may be)."""
    extractor = extractor or default_extractor()
    feats = extract_features(images, extractor, batch_size, progress)
    return FIDStats.from_features(feats, extractor.protocol, meta)


def compute_fid(images: Images, ref: FIDStats | Images, extractor: InceptionFeatures | None = None, batch_size: int = 64, progress: bool = True) -> float:
    """FID of ``images`` against reference statistics or reference images."""
    extractor = extractor or default_extractor()
    if not isinstance(ref, FIDStats):
        ref = compute_stats(ref, extractor, batch_size, progress)
    return ref.fid(compute_stats(images, extractor, batch_size, progress))


def inception_score_from_logits(logits: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """``exp(E_x KL(p(y|x) || p(y)))`` averaged over ``splits`` equal parts: (mean, std)."""
    logits = torch.as_tensor(logits, dtype=torch.float64)
    if logits.ndim != 2 or len(logits) < splits:
        raise ValueError(f"need (N, K) logits with N >= splits={splits}, got shape {tuple(logits.shape)}")
    logp = torch.log_softmax(logits, dim=1)
    scores = []
    for part in torch.tensor_split(logp, splits):
        log_py = torch.logsumexp(part, dim=0) - math.log(len(part))
        kl = (part.exp() * (part - log_py)).sum(1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def inception_score(images: Images, extractor: InceptionFeatures | None = None, splits: int = 10, batch_size: int = 64, progress: bool = True) -> tuple[float, float]:
    """Inception Score of ``images``; a clear ValueError when the weights have no classifier head."""
    extractor = extractor or default_extractor()
    extractor.logits(torch.zeros(1, FEATURE_DIMS))  # fail before the expensive part when there is no head
    feats = torch.from_numpy(extract_features(images, extractor, batch_size, progress))
    return inception_score_from_logits(extractor.logits(feats).cpu(), splits)


def default_cache_dir() -> Path:
    """``$MMGEN_CACHE/fid``, else ``$XDG_CACHE_HOME/mmgen/fid``, else ``~/.cache/mmgen/fid``."""
    if os.environ.get("MMGEN_CACHE"):
        return Path(os.environ["MMGEN_CACHE"]) / "fid"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmgen" / "fid"


class _DatasetImages(Sequence):
    """The first ``n`` images of a dataset; a video dataset's clips count frame by frame (frame FID)."""

    def __init__(self, ds, n: int) -> None:
        first = ds[0]["pixels"]
        self.ds, self.frames = ds, (first.shape[1] if first.ndim == 4 else 0)  # (C, T, H, W) clips
        self._clip: tuple[int, torch.Tensor] | None = None  # frames are read in order: decode each clip once
        self.n = n if getattr(ds, "infinite", False) else min(n, len(ds) * max(1, self.frames))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        if not 0 <= i < self.n:
            raise IndexError(i)
        if not self.frames:
            return self.ds[i]["pixels"]
        c = i // self.frames
        if self._clip is None or self._clip[0] != c:
            self._clip = (c, self.ds[c]["pixels"])
        return self._clip[1][:, i % self.frames]


def reference_stats(ref: str | Path, extractor: InceptionFeatures | None = None, size: int | None = None, n: int = 5000, split: str = "train",
                    cache_dir: str | Path | None = None, batch_size: int = 64, progress: bool = True) -> FIDStats:
    """Reference statistics from a ``.npz`` file, an image folder, or a built-in world.

    Worlds (``shapes``, ``digits``, any ``build_dataset`` spec) use the first ``n`` images of
    ``split`` at ``size`` (all of them when the split is smaller; a video world's clips give their
    frames, for frame FID) and are cached in ``cache_dir``
    under a name keyed by world, size, split, n and the network weights.
    """
    extractor = extractor or default_extractor()
    path = Path(ref)
    if path.suffix == ".npz" or path.is_file():
        return FIDStats.load(path, extractor, batch_size, progress)
    if path.is_dir():
        files = ImageFiles(path)
        return compute_stats(files, extractor, batch_size, progress, meta={"folder": str(path.resolve()), "images": len(files)})
    from mmgen.data import build_dataset

    if size is None:
        raise ValueError(f"reference world {str(ref)!r} needs an image size")
    try:
        ds = build_dataset(str(ref), size=size, split=split)
    except ValueError as e:
        raise ValueError(f"--ref {str(ref)!r} is not a .npz file, an image folder or a world ({e})") from e
    images = _DatasetImages(ds, n)
    n = len(images)
    sha = extractor.protocol["weights_sha256"][:12]
    safe = "".join(c if c.isalnum() or c in "-_=" else "_" for c in str(ref))
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    file = cache / f"{safe}-{size}px-{split}-n{n}-inception{sha}.npz"
    if file.is_file():
        stats = FIDStats.load(file)
        if stats.protocol == extractor.protocol and stats.n == n:
            return stats
    stats = compute_stats(images, extractor, batch_size, progress, meta={"world": str(ref), "size": size, "split": split, "seed": 0, "images": n})
    stats.save(file)
    stats.meta["cache_file"] = str(file)
    return stats


def fid_against_world(images: torch.Tensor, world: str, n_ref: int = 5000, split: str = "train", extractor: InceptionFeatures | None = None,
                      cache_dir: str | Path | None = None, batch_size: int = 64, progress: bool = True) -> float:
    """FID of ``(N, 3, H, W)`` samples against ``n_ref`` images of a world at the samples' size (stats cached)."""
    extractor = extractor or default_extractor()
    ref = reference_stats(world, extractor, size=images.shape[-1], n=n_ref, split=split, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
    return ref.fid(compute_stats(images, extractor, batch_size, progress))


@torch.no_grad()
def checkpoint_samples(pipe, n: int, sampler, objects: str = "1-2", batch_size: int = 64, progress: bool = True) -> tuple[torch.Tensor, dict]:
    """``n`` uint8 samples of a pipeline with conditions drawn like its world's data.

    Text models get fresh ``shapes`` prompts (``objects`` "1", "2" or "1-2": half and half, as
    the world's default mix); class models cycle through all labels; unconditional ones get none.
    Returns the images and a description of the conditions for the JSON record.
    """
    from dataclasses import replace

    from mmgen.eval.generation import EVAL_SEED, shapes_prompts

    if n < 2:
        raise ValueError(f"FID needs at least 2 samples, got n={n}")
    cond, prompts, labels = pipe.config.cond, None, None
    if cond == "text":
        if objects not in ("1", "2", "1-2"):
            raise ValueError(f"objects must be '1', '2' or '1-2', got {objects!r}")
        counts = {"1": (n, 0), "2": (0, n), "1-2": (n - n // 2, n // 2)}[objects]
        prompts = shapes_prompts(counts[0], 1) + shapes_prompts(counts[1], 2)
        info = {"prompts": f"shapes_prompts: {counts[0]} one-object + {counts[1]} two-object (seed {EVAL_SEED})"}
    elif cond == "class":
        labels = [i % pipe.config.num_classes for i in range(n)]
        info = {"labels": f"0..{pipe.config.num_classes - 1} cycled"}
    else:
        info = {"condition": "unconditional"}
    out = []
    for s in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress, leave=False):
        m = min(batch_size, n - s)
        out.append(pipe(prompt=prompts[s : s + m] if prompts else None, label=labels[s : s + m] if labels else None, n=m,
                        sampler=replace(sampler, seed=sampler.seed + s), batch_size=batch_size))
    return torch.cat(out), info
