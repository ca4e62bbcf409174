"""Quality of the shipped checkpoints: shapes-judge accuracy on fresh prompts, digits accuracy.

    python bench/bench_quality.py --n 300 --json bench/results/quality.json

Each shapes checkpoint is judged on ``--n`` fresh prompts from each of three independent prompt
streams (``--prompt-seeds``, not the tuning stream) with its recommended settings (``sampler.json``,
what ``mmgen sample`` uses); the pooled score, its 95% interval and the per-stream scores are
printed and written with the settings.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import mmgen
from mmgen.eval.generation import EVAL_SEEDS, digits_accuracy, judge_streams
from mmgen.modeling import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent


def load(ckpt: str):
    """Pipeline + its recommended sampler, or None (with a message) when the folder is missing."""
    path = Path(ckpt) if Path(ckpt).is_absolute() else ROOT / ckpt
    if not path.is_dir():
        print(f"skip {ckpt}: not found")
        return None
    pipe = mmgen.load(path)
    if pipe.is_video:  # a unified text-to-image+video model: its one-frame images
        from mmgen.eval.video_judge import image_pipeline

        return image_pipeline(pipe), pipe.sampler
    return pipe, pipe.sampler  # the folder's sampler.json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="prompts per stream and object count")
    ap.add_argument("--prompt-seeds", type=int, nargs="+", default=list(EVAL_SEEDS), help="independent prompt streams")
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    ap.add_argument("--shapes", nargs="*", default=[f"checkpoints/shapes-{m}" for m in ("var", "rar", "raster", "subobject", "xar", "unified", "flextok")])
    ap.add_argument("--digits", nargs="*", default=["checkpoints/digits-raster"])
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for ckpt in args.shapes:
        if (loaded := load(ckpt)) is None:
            continue
        pipe, sampler = loaded
        for objects in args.objects:
            r = judge_streams(pipe, n=args.n, objects=objects, sampler=sampler, seeds=tuple(args.prompt_seeds))
            rows.append({"checkpoint": ckpt, "task": f"shapes {objects}-object", **r})
            lo, hi = r["whole_ci95"]
            scores = "  ".join(f"{k}={r[k]:.3f}" for k in ("color", "shape", "size", "position"))
            streams = " ".join(f"{w:.3f}" for w in r["whole_per_stream"])
            print(f"{ckpt:28s} {objects}-object  whole={r['whole']:.3f} [{lo:.3f}, {hi:.3f}] (streams {streams})  {scores}  {r['images_per_second']:.1f} img/s", flush=True)
            if args.json:  # written after every row: a long run keeps what it measured
                write_json_atomic(args.json, {"threads": torch.get_num_threads(), "rows": rows})
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
