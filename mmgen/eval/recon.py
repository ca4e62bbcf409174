"""Reconstruction quality of visual tokenizers: PSNR, SSIM, rFID and codebook usage.

PSNR and SSIM are computed on pixels in ``[-1, 1]`` (reconstructions clamped, as saved images
would be) with data range 2, i.e. the same numbers as on ``[0, 1]`` images. SSIM is Wang et
al.'s with an 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03, averaged over channels and
valid window positions (equal to scikit-image's ``gaussian_weights=True,
use_sample_covariance=False``). rFID is the FID between the 8-bit originals and the 8-bit
reconstructions of the same images (:mod:`mmgen.eval.fid`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mmgen.metrics import psnr

__all__ = ["psnr", "ssim", "codebook_usage", "evaluate_tokenizer", "load_tokenizer", "tokenizer_identity", "recon_dataset"]


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Per-image SSIM of ``(B, C, H, W)`` tensors (mean over channels and valid window positions)."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"need two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"SSIM's {window}x{window} window needs images of at least {window}px, got {tuple(x.shape[-2:])}")
    x, y = x.double(), y.double()
    c = x.shape[1]
    g = _gaussian_window(window, sigma, x.dtype, x.device)
    kh, kw = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid positions only
        return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def codebook_usage(ids: torch.Tensor, vocab_size: int) -> dict[str, float]:
    """Fraction of the codebook used by ``ids`` and the perplexity ``exp(H)`` of their histogram."""
    ids = ids.reshape(-1).long()
    if ids.numel() == 0:
        raise ValueError("no token ids to count")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"ids must lie in [0, {vocab_size}), got range [{int(ids.min())}, {int(ids.max())}]")
    counts = torch.bincount(ids.cpu(), minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    return {"codebook_usage": float((counts > 0).double().mean()), "perplexity": float(torch.exp(-(p * p.log()).sum()))}


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Path]:
    """``(tokenizer, its folder)`` from a tokenizer folder or a pipeline folder (its ``tokenizer/``)."""
    from mmgen.modeling import load_module, read_config

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer folder {str(path)!r} does not exist")
    kind = read_config(path).get("kind")
    if kind == "generator" and (path / "tokenizer").is_dir():
        path = path / "tokenizer"
    elif kind != "tokenizer":
        raise ValueError(f"{path} holds a {kind!r} checkpoint, not a tokenizer (nor a pipeline with tokenizer/)")
    return load_module(path).to(device).eval(), path


def tokenizer_identity(tok, path: str | Path | None = None) -> dict[str, Any]:
    """Class, config and (when loaded from disk) folder + weights sha256 of a tokenizer."""
    from dataclasses import asdict, is_dataclass

    from mmgen.eval.inception import file_sha256

    ident: dict[str, Any] = {"class": type(tok).__name__}
    cfg = getattr(tok, "config", None)
    if is_dataclass(cfg):
        ident["config"] = asdict(cfg)
    if path is not None:
        ident["path"] = str(Path(path).resolve())
        if (Path(path) / "model.safetensors").is_file():
            ident["sha256"] = file_sha256(Path(path) / "model.safetensors")
    return ident


def recon_dataset(data: str | Path, size: int, split: str = "test"):
    """A world/spec name, or an image folder (resized to ``size`` by the folder dataset)."""
    from mmgen.data import build_dataset

    spec = f"folder:{data}" if Path(data).is_dir() else str(data)
    return build_dataset(spec, size=size, split=split)


@torch.no_grad()
def evaluate_tokenizer(tok, data, n: int = 512, split: str = "test", batch_size: int = 64, rfid: bool = True, extractor=None, progress: bool = True,
                       tokenizer_path: str | Path | None = None) -> dict[str, Any]:
    """Reconstruct ``n`` images and measure PSNR, SSIM, codebook usage / perplexity and rFID.

    Args:
        tok: a tokenizer (``encode``/``decode``, ``image_size``, ``vocab_size``).
        data: a world/spec name or image folder (``split`` of it at the tokenizer's size), or a
            dataset whose items are ``{"pixels": (3, H, W) in [-1, 1]}``.
        n: images (fewer when the dataset is smaller).
        rfid: also compute rFID (two Inception passes per image: the slow part on CPU).
        extractor: Inception network for rFID (default: :func:`mmgen.eval.fid.default_extractor`).
        tokenizer_path: the folder ``tok`` came from, recorded with its weights' sha256.
    """
    from mmgen.eval.fid import FIDStats, default_extractor
    from mmgen.eval.inception import to_uint8_nchw

    ds = recon_dataset(data, tok.image_size, split) if isinstance(data, (str, Path)) else data
    if not getattr(ds, "infinite", False) and hasattr(ds, "__len__"):
        n = min(n, len(ds))
    if n < (2 if rfid else 1):
        raise ValueError(f"need at least {2 if rfid else 1} images, got n={n}")
    if rfid:
        extractor = extractor or default_extractor(str(next(tok.parameters()).device))
    device = next(tok.parameters()).device
    psnrs, ssims, ids, real_f, rec_f = [], [], [], [], []
    tokens_per_image = None
    for s in tqdm(range(0, n, batch_size), desc="reconstruct", disable=not progress, leave=False):
        x = torch.stack([ds[i]["pixels"] for i in range(s, min(n, s + batch_size))]).to(device)
        tokens = tok.encode(x)
        rec = tok.decode(tokens).float().clamp(-1, 1)
        psnrs.append(psnr(rec, x).cpu())
        ssims.append(ssim(rec, x).cpu())
        tokens_per_image = (tokens.ids if tokens.ids is not None else tokens.latents).shape[1]
        if tokens.ids is not None:
            ids.append(tokens.ids.cpu())
        if rfid:
            real_f.append(extractor(to_uint8_nchw(x)).cpu())
            rec_f.append(extractor(to_uint8_nchw(rec)).cpu())
    out: dict[str, Any] = {
        "data": str(data) if isinstance(data, (str, Path)) else type(data).__name__, "split": split, "n": n,
        "psnr_db": float(torch.cat(psnrs).mean()), "ssim": float(torch.cat(ssims).mean()),
        "vocab": getattr(tok, "vocab_size", None), "tokens_per_image": tokens_per_image,
    }
    if ids:
        out.update(codebook_usage(torch.cat(ids), tok.vocab_size))
    else:
        out.update(codebook_usage=None, perplexity=None)  # continuous latents: no codebook
    if rfid:
        real, rec = FIDStats.from_features(torch.cat(real_f), extractor.protocol), FIDStats.from_features(torch.cat(rec_f), extractor.protocol)
        out["rfid"] = real.fid(rec)
        out["inception"] = extractor.identity()
    else:
        out["rfid"] = None
    out["tokenizer"] = tokenizer_identity(tok, tokenizer_path)
    return out
