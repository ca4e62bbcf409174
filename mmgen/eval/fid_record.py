"""One FID evaluation as a self-describing record: samples (an image folder, saved statistics or a
checkpoint's generations) against reference statistics, with everything needed to reproduce it.

``mmgen eval fid`` is this function plus flag parsing; the record is what it writes as JSON.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from mmgen.eval import fid as F
from mmgen.eval.inception import InceptionFeatures, file_sha256

__all__ = ["fid_record"]


def fid_record(ref: str | Path, samples: str | Path | None = None, pipe=None, sampler=None, n: int = 1000, objects: str = "1-2",
               inception: str | None = None, device: str = "cpu", inception_score: bool = False, splits: int = 10,
               ref_size: int | None = None, n_ref: int = 5000, ref_split: str = "train", cache_dir: str | None = None,
               batch_size: int = 64, save_stats: str | None = None) -> tuple[dict, str]:
    """FID of ``samples`` (a folder of images or an ``.npz`` of statistics) or of ``n`` generations of
    ``pipe`` with ``sampler``, against ``ref`` (a world name, an image folder or statistics).

    Returns the record and a short name for its file.
    """
    if (samples is None) == (pipe is None):
        raise ValueError("give either sample images/statistics or a checkpoint pipeline")
    t0 = time.perf_counter()
    res: dict = {"metric": "fid"}
    images = stats = None
    src = Path(samples) if samples is not None else None
    if src is not None and not src.is_file():
        images = F.ImageFiles(src)  # a missing or empty folder fails before the network loads
    elif src is not None and inception_score:
        raise ValueError("--inception-score needs sample images, not statistics")
    extractor = F.default_extractor(device) if inception is None else InceptionFeatures(inception, device=device)
    if inception_score:
        extractor.logits(torch.zeros(1, extractor.dims))  # no classifier head: say so before any work
    if src is not None:
        if images is None:  # statistics or an ADM sample batch
            stats = F.FIDStats.load(src, extractor, batch_size)
            res["samples"], size = {**stats.meta, "images": stats.n}, None
        else:
            size = images[0].shape[-1]
            res["samples"] = {"folder": str(src.resolve()), "images": len(images)}
            sidecar = src.with_suffix(".json")  # written by `mmgen sample` beside its image folder
            if sidecar.is_file():
                meta = json.loads(sidecar.read_text())
                res["samples"].update({k: meta[k] for k in ("checkpoint", "model", "sampler") if k in meta}, settings_file=str(sidecar.resolve()))
        name = src.stem
    else:
        images, cond = F.checkpoint_samples(pipe, n, sampler, objects=objects, batch_size=batch_size)
        size = pipe.config.image_size
        res["samples"] = {"checkpoint": str(pipe.path.resolve()), "model": pipe.describe(), "model_sha256": file_sha256(pipe.path / "model.safetensors"),
                          "tokenizer_sha256": file_sha256(pipe.path / "tokenizer" / "model.safetensors"), "sampler": asdict(sampler), "images": len(images), **cond}
        name = pipe.path.name
    reference = F.reference_stats(ref, extractor, size=ref_size or size, n=n_ref, split=ref_split, cache_dir=cache_dir, batch_size=batch_size)
    if stats is None:
        feats = F.extract_features(images, extractor, batch_size)
        stats = F.FIDStats.from_features(feats, extractor.protocol, res["samples"])
        if inception_score:
            res["inception_score"], res["inception_score_std"] = F.inception_score_from_logits(extractor.logits(torch.from_numpy(feats)), splits=splits)
    if save_stats:
        stats.save(save_stats)
    res.update(fid=reference.fid(stats), n=stats.n, n_ref=reference.n, reference={"spec": str(ref), **reference.meta, "protocol": reference.protocol},
               inception=extractor.identity(), protocol=extractor.protocol, seconds=round(time.perf_counter() - t0, 1))
    return res, name
