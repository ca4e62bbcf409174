"""Quality of the shipped checkpoints: shapes-judge accuracy on fresh prompts, digits accuracy.

    python bench/bench_quality.py --n 500 --json bench/results/quality.json

Each checkpoint is sampled with its recommended settings (``sampler.json`` beside it); the
settings are written with every number.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import mmgen
from mmgen.eval.generation import digits_accuracy, judge_pipeline
from mmgen.modeling import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent


def load(ckpt: str):
    """Pipeline + its recommended sampler, or None (with a message) when the folder is missing."""
    path = Path(ckpt) if Path(ckpt).is_absolute() else ROOT / ckpt
    if not path.is_dir():
        print(f"skip {ckpt}: not found")
        return None
    pipe = mmgen.load(path)
    return pipe, pipe.sampler  # the folder's sampler.json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500, help="prompts per setting")
    ap.add_argument("--shapes", nargs="*", default=["checkpoints/shapes-var", "checkpoints/shapes-raster"])
    ap.add_argument("--digits", nargs="*", default=["checkpoints/digits-raster"])
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for ckpt in args.shapes:
        if (loaded := load(ckpt)) is None:
            continue
        pipe, sampler = loaded
        for objects in (1, 2):
            r = judge_pipeline(pipe, n=args.n, objects=objects, sampler=sampler)
            r = {k: v for k, v in r.items() if k not in ("images", "prompts")}
            rows.append({"checkpoint": ckpt, "task": f"shapes {objects}-object", **r})
            scores = "  ".join(f"{k}={r[k]:.3f}" for k in ("whole", "color", "shape", "size", "position"))
            print(f"{ckpt:28s} shapes {objects}-object  {scores}  {r['images_per_second']:.1f} img/s")
    for ckpt in args.digits:
        if (loaded := load(ckpt)) is None:
            continue
        pipe, sampler = loaded
        r = digits_accuracy(pipe, per_class=args.per_class, sampler=sampler)
        r = {k: v for k, v in r.items() if k not in ("images", "labels")}
        rows.append({"checkpoint": ckpt, "task": "digits class-conditional", **r})
        print(f"{ckpt:28s} digits: {r['accuracy']:.3f} of {r['n']} generated digits classified as their label")
    if args.json:
        write_json_atomic(args.json, {"threads": torch.get_num_threads(), "rows": rows})


if __name__ == "__main__":
    main()
