"""How much a shapes-judge score depends on the prompt draw and on the sampler settings.

    python bench/bench_prompt_streams.py checkpoints/shapes-raster --n 200 --objects 2 --json bench/results/prompt_streams_raster.json

Judges one checkpoint on ``--n`` prompts from each of several independent streams: the world's own
prompt sampler (``shapes_prompts``: seed 10007 is the old single eval stream, 4242 the tuning stream,
others fresh) and prompts drawn the way a new user would write them (each attribute chosen uniformly
with Python's ``random``, incompatible pairs redrawn), each with the checkpoint's recommended sampler
(``sampler.json``, what ``mmgen sample`` uses) and with ``SamplerConfig()`` defaults. Prints one line
per (stream, sampler) and the spread: the answer to "is a gap between two numbers more than the draw?".
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict
from pathlib import Path

import mmgen
from mmgen.data import shapes
from mmgen.eval.generation import check_count, judge_pipeline, shapes_prompts, wilson_interval
from mmgen.sampler import SamplerConfig


def user_prompts(n: int, objects: int, seed: int) -> list[str]:
    """Captions with every attribute drawn uniformly by Python's ``random`` (not the world's numpy stream); pairs the world cannot render are redrawn."""
    r, out = random.Random(seed), []
    while len(out) < n:
        objs = [shapes.ShapeObject(r.choice(list(shapes.COLORS)), r.choice(shapes.SHAPES), r.choice(shapes.SIZES), r.choice(shapes.POSITIONS)) for _ in range(objects)]
        if all(shapes.compatible(a, b) for k, a in enumerate(objs) for b in objs[k + 1:]):
            out.append(shapes.caption(objs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt")
    ap.add_argument("--n", type=int, default=200, help="prompts per stream")
    ap.add_argument("--objects", type=int, default=2, choices=[1, 2])
    ap.add_argument("--world-seeds", type=int, nargs="*", default=[10_007, 4242, 1, 2, 3])
    ap.add_argument("--user-seeds", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    check_count("--n", args.n)
    pipe = mmgen.load(args.ckpt)
    samplers = {"recommended": pipe.sampler, "defaults": SamplerConfig()}
    streams = {f"world seed {s}": shapes_prompts(args.n, args.objects, seed=s) for s in args.world_seeds}
    streams |= {f"user seed {s}": user_prompts(args.n, args.objects, s) for s in args.user_seeds}
    rows = []
    for sname, sampler in samplers.items():
        for name, prompts in streams.items():
            r = judge_pipeline(pipe, objects=args.objects, sampler=sampler, prompts=prompts, progress=False)
            r = {k: v for k, v in r.items() if k not in ("images", "prompts", "sampler", "images_per_second")}
            lo, hi = wilson_interval(r["whole"] * r["n"], r["n"])
            rows.append({"stream": name, "sampler": sname, "settings": asdict(sampler), **r, "whole_ci95": [lo, hi]})
            print(f"{sname:12s} {name:18s} whole={r['whole']:.3f} [{lo:.3f}, {hi:.3f}]  colour={r['color']:.3f} shape={r['shape']:.3f}", flush=True)
        w = [r["whole"] for r in rows if r["sampler"] == sname]
        print(f"{sname:12s} spread over {len(w)} streams: {min(w):.3f}-{max(w):.3f}, mean {sum(w) / len(w):.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"checkpoint": args.ckpt, "n": args.n, "objects": args.objects, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
