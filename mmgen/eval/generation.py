"""Scoring generators: shapes-judge accuracy on fresh prompts, digits classifier accuracy, speed.

These are what the quickstart prints and what ``bench/`` writes to RESULTS.md.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmgen.sampler import SamplerConfig

__all__ = ["shapes_prompts", "judge_pipeline", "judge_streams", "wilson_interval", "digits_accuracy", "check_count", "EVAL_SEED", "EVAL_SEEDS"]

# Prompts are drawn from RNG streams the training data never uses (training worlds seed
# their own per-index streams), so "fresh" means freshly sampled, not held out by design.
# One stream of a few hundred prompts is a noisy, fixed draw: two-object scores of one model on
# independent 200-prompt streams spread over 0.76-0.885 (bench/RESULTS.md), so the reported
# numbers pool three streams and say their spread. Sampler tuning uses 4242 (bench/tune_sampler.py).
EVAL_SEEDS = (1, 2, 3)
EVAL_SEED = 10_007  # the single stream of the quickstart, FID and the quality floors (kept for comparability)


def check_count(name: str, value: int) -> None:
    """An evaluation of zero samples has no score: say so before any model runs."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive number of samples, got {value!r}")


def shapes_prompts(n: int, objects: int, seed: int = EVAL_SEED) -> list[str]:
    """``n`` random captions with ``objects`` (1 or 2) objects from the shapes grammar."""
    from mmgen.data import shapes

    check_count("n", n)
    if objects not in (1, 2):
        raise ValueError(f"objects must be 1 or 2, got {objects}")
    rng = np.random.default_rng([seed, objects])
    return [shapes.caption(shapes.sample_scene(rng, objects)) for _ in range(n)]


@torch.no_grad()
def judge_pipeline(pipe, n: int = 500, objects: int = 1, sampler: SamplerConfig | None = None, batch_size: int = 50, seed: int = EVAL_SEED, progress: bool = True,
                   prompts: list[str] | None = None) -> dict[str, Any]:
    """Generate one image per fresh prompt (or per given ``prompts``) and score it with the shapes judge."""
    from mmgen.eval.judge import judge_batch

    sampler = sampler or SamplerConfig()
    if prompts is None:
        prompts = shapes_prompts(n, objects, seed)
    n = len(prompts)
    check_count("prompts", n)
    images, seconds = [], 0.0
    for start in tqdm(range(0, n, batch_size), desc=f"judge {objects}-object", disable=not progress, leave=False):
        chunk = prompts[start : start + batch_size]
        t0 = time.perf_counter()
        images.append(pipe(prompt=chunk, sampler=replace(sampler, seed=sampler.seed + start)))
        seconds += time.perf_counter() - t0
    images = torch.cat(images)
    scores = judge_batch(images.permute(0, 2, 3, 1).numpy(), prompts)  # uint8 HWC
    return {"objects": objects, "n": n, **scores, "images_per_second": n / seconds, "sampler": asdict(sampler), "images": images, "prompts": prompts}


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sane at 0 and 1, unlike the normal one)."""
    check_count("n", n)
    p = successes / n
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)
    return max(0.0, min(lo, p)), min(1.0, max(hi, p))  # exact at p = 0 and 1 despite rounding


def judge_streams(pipe, n: int = 300, objects: int = 1, sampler: SamplerConfig | None = None, seeds: tuple[int, ...] = EVAL_SEEDS, **kw: Any) -> dict[str, Any]:
    """:func:`judge_pipeline` on ``n`` fresh prompts from each of several independent streams.

    Returns the pooled scores (every attribute, ``whole``), ``whole_per_stream``, the 95% Wilson
    interval of the pooled ``whole`` and the sampler; images and prompts are dropped.
    """
    if not seeds:
        raise ValueError("judge_streams needs at least one prompt seed")
    runs = [judge_pipeline(pipe, n=n, objects=objects, sampler=sampler, seed=s, **kw) for s in seeds]
    keys = [k for k, v in runs[0].items() if isinstance(v, float) and k != "images_per_second"]
    out: dict[str, Any] = {"objects": objects, "n": n * len(seeds), "seeds": list(seeds)}
    out.update({k: float(np.mean([r[k] for r in runs])) for k in keys})
    out["whole_per_stream"] = [r["whole"] for r in runs]
    out["whole_ci95"] = wilson_interval(out["whole"] * out["n"], out["n"])
    out["images_per_second"] = float(np.mean([r["images_per_second"] for r in runs]))
    out["sampler"] = runs[0]["sampler"]
    return out


@torch.no_grad()
def digits_accuracy(pipe, per_class: int = 50, sampler: SamplerConfig | None = None, batch_size: int = 100) -> dict[str, Any]:
    """Generate ``per_class`` digits per label; fraction a classifier of real digits labels correctly."""
    from mmgen.eval.digits_classifier import DigitsClassifier

    check_count("per_class", per_class)
    sampler = sampler or SamplerConfig()
    labels = [d for d in range(10) for _ in range(per_class)]
    images = []
    for start in range(0, len(labels), batch_size):
        images.append(pipe(label=labels[start : start + batch_size], sampler=replace(sampler, seed=sampler.seed + start)))
    images = torch.cat(images)
    clf = DigitsClassifier.fit(seed=0)
    pixels = images.float() / 127.5 - 1
    acc = clf.accuracy(pixels, torch.tensor(labels))
    return {"n": len(labels), "accuracy": float(acc), "sampler": asdict(sampler), "images": images, "labels": labels}
