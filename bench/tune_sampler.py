"""Pick a checkpoint's recommended sampler settings on *validation* prompts, then ship it.

The sweep uses a prompt seed different from the evaluation prompts (``EVAL_SEED``), so the
numbers in RESULTS.md are not tuned on their own test set. Writes ``DST/sampler.json``.

    python bench/tune_sampler.py runs/shapes-var/model checkpoints/shapes-var --n 100
    python bench/tune_sampler.py runs/digits-raster/model checkpoints/digits-raster --digits
    python bench/tune_sampler.py runs/shapes-video-nbp/model checkpoints/shapes-video-nbp   # video: the video judge
    python bench/tune_sampler.py runs/shapes-unified/model checkpoints/shapes-unified --images  # + its text-to-image
    python bench/tune_sampler.py runs/gen/model checkpoints/x --tokenizer runs/tok-decoder-ft/model  # another decoder, same ids
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

import mmgen
from mmgen.eval.generation import digits_accuracy, judge_pipeline
from mmgen.eval.video_judge import image_pipeline, judge_video_pipeline
from mmgen.pipeline import export_pipeline
from mmgen.sampler import SamplerConfig

VALIDATION_SEED = 4242


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--digits", action="store_true")
    ap.add_argument("--cfg", type=float, nargs="*", default=[1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--temperature", type=float, nargs="*", default=[1.0, 0.8, 0.6])
    ap.add_argument("--top-k", type=int, nargs="*", default=[0])
    ap.add_argument("--cfg-schedule", nargs="*", default=["constant"], help="e.g. constant linear power-cosine")
    ap.add_argument("--flow-steps", type=int, nargs="*", default=[25], help="flow-head models (xAR): ODE steps per entity")
    ap.add_argument("--images", action="store_true",
                    help="a unified text-to-image+video model: the score averages the clip judge with its one- and two-object images")
    ap.add_argument("--tokenizer", default=None,
                    help="tune and ship with this tokenizer folder instead of SRC's own (same ids, e.g. a fine-tuned decoder)")
    args = ap.parse_args()
    pipe = mmgen.load(args.src)
    if args.tokenizer:
        pipe = pipe.with_tokenizer(args.tokenizer)
    if args.images and not pipe.is_video:
        ap.error("--images is for a unified video model; an image model is always scored on its images")
    images = image_pipeline(pipe) if args.images else None  # the same model drawing one-frame images
    results = []
    grid = itertools.product(args.cfg, args.temperature, args.top_k, args.cfg_schedule, args.flow_steps)
    for cfg, temperature, top_k, schedule, flow_steps in grid:
        knobs = {"cfg_scale": cfg, "temperature": temperature, "top_k": top_k, "cfg_schedule": schedule, "flow_steps": flow_steps}
        if any(k not in pipe.generator.sampler_fields for k, v in knobs.items() if v != getattr(SamplerConfig(), k)):
            continue  # a knob this model does not read (e.g. temperature for xAR): its grid point is a duplicate
        s = SamplerConfig(**knobs, seed=VALIDATION_SEED)
        if pipe.is_video:  # whole-clip accuracy: colour, shape and motion direction
            score = judge_video_pipeline(pipe, n=args.n, sampler=s, seed=VALIDATION_SEED, progress=False)["whole"]
            if images is not None:  # the same sampler draws its images: one, two objects and the clip count alike
                score = (score + sum(judge_pipeline(images, n=args.n, objects=k, sampler=s, seed=VALIDATION_SEED, progress=False)["whole"]
                                     for k in (1, 2))) / 3
        elif args.digits:
            score = digits_accuracy(pipe, per_class=max(args.n // 10, 5), sampler=s)["accuracy"]
        else:
            one = judge_pipeline(pipe, n=args.n, objects=1, sampler=s, seed=VALIDATION_SEED, progress=False)["whole"]
            two = judge_pipeline(pipe, n=args.n, objects=2, sampler=s, seed=VALIDATION_SEED, progress=False)["whole"]
            score = (one + two) / 2
        results.append({"score": score, **knobs})
        print(" ".join(f"{k}={v}" for k, v in knobs.items()), f"validation score {score:.3f}", flush=True)
    chosen = max(results, key=lambda r: r["score"])
    score, best = chosen["score"], {k: v for k, v in chosen.items() if k != "score"}
    export_pipeline(args.src, args.dst, dtype=torch.float16, sampler=best, tokenizer=args.tokenizer)
    tuning = Path(args.dst) / "tuning.json"
    tuning.write_text(
        json.dumps({"validation_seed": VALIDATION_SEED, "n": args.n, "sweep": results, "chosen": best}, indent=2))
    print(f"chose {best} (validation {score:.3f}); shipped to {args.dst} ({tuning.name} has the sweep)")


if __name__ == "__main__":
    main()
