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

__all__ = ["shapes_prompts", "judge_pipeline", "digits_accuracy", "check_count"]

# Prompts are drawn from an RNG stream the training data never uses (training worlds seed
# their own per-index streams), so "fresh" means freshly sampled, not held out by design.
EVAL_SEED = 10_007


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
def judge_pipeline(pipe, n: int = 500, objects: int = 1, sampler: SamplerConfig | None = None, batch_size: int = 50, seed: int = EVAL_SEED, progress: bool = True) -> dict[str, Any]:
    """Generate one image per fresh prompt and score it with the shapes judge."""
    from mmgen.eval.judge import judge_batch

    sampler = sampler or SamplerConfig()
    prompts = shapes_prompts(n, objects, seed)
    images, seconds = [], 0.0
    for start in tqdm(range(0, n, batch_size), desc=f"judge {objects}-object", disable=not progress, leave=False):
        chunk = prompts[start : start + batch_size]
        t0 = time.perf_counter()
        images.append(pipe(prompt=chunk, sampler=replace(sampler, seed=sampler.seed + start)))
        seconds += time.perf_counter() - t0
    images = torch.cat(images)
    scores = judge_batch(images.permute(0, 2, 3, 1).numpy(), prompts)  # uint8 HWC
    return {"objects": objects, "n": n, **scores, "images_per_second": n / seconds, "sampler": asdict(sampler), "images": images, "prompts": prompts}


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
