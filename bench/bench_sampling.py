"""Sampling speed on this machine: VAR vs raster (with and without KV cache), same backbone, 8x8 final grid.

Speed does not depend on trained weights, so freshly built tiny presets are used (plus the shipped
checkpoints when present, as a check). Prints a table and writes JSON.

    python bench/bench_sampling.py --batch 1 16 --repeats 3 --json bench/results/sampling_cpu.json
    python bench/bench_sampling.py --batch 16 --dims 64 128 192 256   # how the VAR/raster ratio moves with width
"""
from __future__ import annotations

import argparse
import platform

import torch

import mmgen
from mmgen.bench.compare import time_pipeline  # shared with `mmgen bench compare`
from mmgen.modeling import write_json_atomic
from mmgen.models.base import tokenizer_overrides
from mmgen.pipeline import Pipeline
from mmgen.sampler import SamplerConfig


def build(gen_name: str, tok_name: str, dim: int = 0) -> Pipeline:
    """A fresh preset; ``dim > 0`` resizes the backbone's width (64-wide heads), depth unchanged."""
    tok = mmgen.create_tokenizer(tok_name)
    kw = {} if not dim else {"transformer": {**mmgen.registry.preset_info(gen_name).defaults["transformer"], "dim": dim, "heads": max(1, dim // 32)}}
    gen = mmgen.create_generator(gen_name, **tokenizer_overrides(tok), **kw)
    return Pipeline(gen, tok)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--cfg", type=float, default=2.0)
    ap.add_argument("--dims", type=int, nargs="*", default=[0], help="backbone widths to sweep (0 = the preset's 192)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    setups = [
        ("var-tiny", "msvq-tiny", True),
        ("raster-tiny", "vq-tiny", True),
        ("raster-tiny", "vq-tiny", False),
    ]
    runs = [(d, b, st) for d in args.dims for b in args.batch for st in setups if st[2] or d == args.dims[0]]
    for dim, batch, (gen_name, tok_name, cache) in runs:  # the slow uncached reference only at the first width
        prompts = ["a large red circle at the top left and a small blue square at the center"] * batch
        pipe = build(gen_name, tok_name, dim)
        sampler = SamplerConfig(cfg_scale=args.cfg, use_cache=cache, seed=0)
        sec = time_pipeline(pipe, sampler, args.repeats, prompt=prompts)
        rows.append({
            "generator": gen_name, "tokenizer": tok_name, "kv_cache": cache, "dim": pipe.generator.config.transformer.dim,
            "params_M": round(pipe.generator.num_params() / 1e6, 3),
            "forward_passes": pipe.generator.forward_passes() if cache else None,
            "batch": batch, "seconds": round(sec, 4), "images_per_s": round(batch / sec, 2),
        })
    by = {(r["dim"], r["batch"], r["generator"], r["kv_cache"]): r["images_per_s"] for r in rows}
    summary = {}
    for (dim, b, gen, cache), v in by.items():
        if gen == "var-tiny":
            summary[f"dim{dim}_batch{b}_var_vs_raster_cached"] = round(v / by[(dim, b, "raster-tiny", True)], 2)
        elif not cache:
            summary[f"dim{dim}_batch{b}_raster_cache_speedup"] = round(by[(dim, b, gen, True)] / v, 2)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, cfg={args.cfg}"
    print(f"sampling speed ({machine})")
    print(f"{'dim':>4s} {'batch':>5s} {'generator':14s} {'tokenizer':10s} {'cache':6s} {'params':>7s} {'passes':>7s} {'img/s':>8s}")
    for r in rows:
        print(f"{r['dim']:4d} {r['batch']:5d} {r['generator']:14s} {r['tokenizer']:10s} {str(r['kv_cache']):6s} {r['params_M']:6.2f}M {str(r['forward_passes']):>7s} {r['images_per_s']:8.2f}")
    for k, v in summary.items():
        print(f"{k}: {v}x")
    if args.json:
        write_json_atomic(args.json, {"machine": machine, "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
