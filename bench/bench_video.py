"""Text-to-video on trained checkpoints: forward passes, frames/s at several batches, video-judge accuracy.

    python bench/bench_video.py --ckpt checkpoints/shapes-video-raster checkpoints/shapes-video-nbp \\
        checkpoints/shapes-unified --n 300 --json bench/results/video_speed_cpu.json

Each checkpoint samples with its own recommended settings (``sampler.json``), KV cache on, tokenizer
decoding included. Speed is the best of ``--repeats`` batches after a warm-up; accuracy is the
video judge (colour, shape, motion direction, one object) on ``--n`` fresh prompts.
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

import mmgen
from mmgen.bench.compare import time_pipeline
from mmgen.eval.video_judge import judge_video_pipeline, video_prompts
from mmgen.modeling import write_json_atomic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", nargs="+", required=True, help="text-to-video pipeline folders")
    ap.add_argument("--batch", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=300, help="judge prompts per checkpoint (0 = speed only)")
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
        row = {"ckpt": str(Path(ckpt)), "generator": type(gen).__name__, "tokens_per_clip": gen.layout.num_tokens,
               "forward_passes": gen.forward_passes(), "params_M": round(gen.num_params() / 1e6, 2),
               "cfg": sampler.cfg_scale, "temperature": sampler.temperature}
        frames = None
        for b in args.batch:
            sec = time_pipeline(pipe, sampler, args.repeats, prompt=video_prompts(b, seed=1))
            frames = frames or int(pipe(prompt=video_prompts(1, seed=1), sampler=sampler).shape[2])
            row[f"frames_per_s_b{b}"] = round(b * frames / sec, 1)
        if args.n:
            res = judge_video_pipeline(pipe, n=args.n, sampler=sampler)
            row.update({k: res[k] for k in ("color", "shape", "direction", "count", "whole")})
        rows.append(row)
        print(row, flush=True)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"\ntext-to-video ({machine})")
    cols = ["ckpt", "forward_passes", *[f"frames_per_s_b{b}" for b in args.batch], *(["whole"] if args.n else [])]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        write_json_atomic(args.json, {"machine": machine, "batch": args.batch, "n": args.n, "rows": rows})


if __name__ == "__main__":
    main()
