"""Text-to-video on trained checkpoints: forward passes, frames/s at several batches, video-judge accuracy.

    python bench/bench_video.py --ckpt checkpoints/shapes-video-raster checkpoints/shapes-video-nbp \\
        checkpoints/shapes-unified --n 300 --json bench/results/video_speed_cpu.json

Each checkpoint samples with its own recommended settings (``sampler.json``), KV cache on, tokenizer
decoding included. Speed is the best of ``--repeats`` batches after a warm-up; accuracy is the
video judge (colour, shape, motion direction, one object) on ``--n`` fresh prompts for each prompt
seed of ``--seeds`` (mean, and the spread over seeds as ``*_sd``), next to per-frame consistency: the fraction of frames whose object has the prompt's colour and
shape (``frames_right``), over all clips and over the clips judged whole, with the same number
for ``--n`` of the world's own clips and for the checkpoint's tokenizer round trip of them (the
ceiling the generator can reach on that tokenizer).
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch

import mmgen
from mmgen.bench.compare import time_pipeline
from mmgen.eval.video_judge import frame_consistency_sources, judge_video_pipeline, video_prompts
from mmgen.modeling import write_json_atomic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", nargs="+", required=True, help="text-to-video pipeline folders")
    ap.add_argument("--batch", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=300, help="judge prompts per checkpoint (0 = speed only)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="prompt seeds of the judge (ones tuning never saw)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for ckpt in args.ckpt:
        pipe = mmgen.load(ckpt)
        if not pipe.is_video:
            raise SystemExit(f"{ckpt} is not a text-to-video pipeline")
        sampler = pipe.sampler_for(seed=0)  # the folder's sampler.json
        gen = pipe.generator
        row = {"ckpt": str(Path(ckpt)), "checkpoint": str(Path(ckpt)), "generator": type(gen).__name__, "tokens_per_clip": gen.layout.num_tokens,
               "forward_passes": gen.forward_passes(), "params_M": round(gen.num_params() / 1e6, 2),
               "cfg": sampler.cfg_scale, "temperature": sampler.temperature}
        frames = None
        for b in args.batch:
            sec = time_pipeline(pipe, sampler, args.repeats, prompt=video_prompts(b, seed=1))
            frames = frames or int(pipe(prompt=video_prompts(1, seed=1), sampler=sampler).shape[2])
            row[f"frames_per_s_b{b}"] = round(b * frames / sec, 1)
        if args.n:
            row["n"] = args.n * len(args.seeds)  # prompts judged in all (model cards read the row)
            runs = [judge_video_pipeline(pipe, n=args.n, sampler=sampler, seed=seed, progress=False) for seed in args.seeds]
            for k in ("color", "shape", "direction", "count", "whole", "frame_consistency", "frame_consistency_whole"):
                row[k], row[f"{k}_sd"] = float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))
            src = frame_consistency_sources(pipe.tokenizer, n=args.n)
            row.update({"frame_consistency_world": src["world"], "frame_consistency_round_trip": src["round_trip"]})
        rows.append(row)
        print(row, flush=True)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"\ntext-to-video ({machine})")
    judged = ["whole", "frame_consistency", "frame_consistency_whole", "frame_consistency_round_trip", "frame_consistency_world"]
    cols = ["ckpt", "forward_passes", *[f"frames_per_s_b{b}" for b in args.batch], *(judged if args.n else [])]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(_cell(r, c) if c in judged else str(r[c]) for c in cols) + " |")
    if args.json:
        write_json_atomic(args.json, {"machine": machine, "batch": args.batch, "n": args.n, "seeds": args.seeds, "rows": rows})


def _cell(row: dict, col: str) -> str:
    """``mean ± spread over prompt seeds`` where there is a spread."""
    sd = row.get(f"{col}_sd")
    return f"{row[col]:.3f}" if sd is None else f"{row[col]:.3f} ± {sd:.3f}"


if __name__ == "__main__":
    main()
