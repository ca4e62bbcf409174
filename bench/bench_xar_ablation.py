"""xAR ablations on ``shapes``: entity kind and noisy context, judge accuracy and sampling time side by side.

    mmgen train generator --recipe train/recipes/shapes_xar.yaml                       # cell:2, noisy context
    mmgen train generator --recipe train/recipes/shapes_xar.yaml --out runs/shapes-xar-token model_args.entities=token
    mmgen train generator --recipe train/recipes/shapes_xar.yaml --out runs/shapes-xar-tf model_args.noisy_context=false
    mmgen train generator --recipe train/recipes/shapes_xar.yaml --out runs/shapes-xar-one model_args.single_target=true
    python bench/bench_xar_ablation.py cell=runs/shapes-xar/model token=runs/shapes-xar-token/model \\
        teacher-forced=runs/shapes-xar-tf/model single-target=runs/shapes-xar-one/model --json bench/results/xar_ablation.json

Every model gets the same sampler (the shipped xAR's: cfg 1.5 constant on the velocity, 25 Euler
steps per entity) and the same fresh prompts. Sampling time: best of ``--repeats`` batches of
``--speed-batch`` one-object prompts after a warm-up, tokenizer decoding included. Rows can be
measured in separate processes (one per core) and merged: ``--json`` files are merged by name.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

import mmgen
from mmgen.bench.compare import time_pipeline
from mmgen.eval.generation import judge_pipeline
from mmgen.modeling import write_json_atomic
from mmgen.sampler import SamplerConfig

SAMPLER = SamplerConfig(cfg_scale=1.5, cfg_schedule="constant", temperature=1.0, flow_steps=25, seed=0)


def measure(name: str, path: str, args) -> dict:
    pipe = mmgen.load(path)
    gen = pipe.generator
    row = {"name": name, "model": path, "entities": gen.config.entities, "noisy_context": gen.config.noisy_context,
           "ar_steps": gen.forward_passes()}
    for objects, n in ((1, args.n1), (2, args.n2)):
        if n:
            res = judge_pipeline(pipe, n=n, objects=objects, sampler=SAMPLER)
            row[f"judge_{objects}obj"] = {k: res[k] for k in ("whole", "color", "shape", "size", "position", "count")} | {"n": n}
    prompts = ["a large red circle at the top left"] * args.speed_batch
    sec = time_pipeline(pipe, SAMPLER, args.repeats, prompt=prompts)
    row["seconds_per_batch"], row["images_per_s"] = round(sec, 3), round(args.speed_batch / sec, 3)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | entities | noisy context | AR steps | judge 1-obj (n) | judge 2-obj (n) | shape 2-obj | img/s | s per batch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        j1, j2 = r.get("judge_1obj", {}), r.get("judge_2obj", {})
        lines.append(f"| {r['name']} | {r['entities']} | {r['noisy_context']} | {r['ar_steps']} | "
                     f"{j1.get('whole', float('nan')):.3f} ({j1.get('n', 0)}) | {j2.get('whole', float('nan')):.3f} ({j2.get('n', 0)}) | "
                     f"{j2.get('shape', float('nan')):.3f} | {r['images_per_s']:.2f} | {r['seconds_per_batch']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="name=model_folder")
    ap.add_argument("--n1", type=int, default=500, help="one-object prompts (0 = skip)")
    ap.add_argument("--n2", type=int, default=200, help="two-object prompts (0 = skip)")
    ap.add_argument("--speed-batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None, help="merge rows into this file (by name)")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = [measure(*spec.split("=", 1), args) for spec in args.runs]
    if args.json:
        path = Path(args.json)
        old = json.loads(path.read_text())["rows"] if path.is_file() else []
        merged = {r["name"]: r for r in old} | {r["name"]: r for r in rows}
        rows = list(merged.values())
        write_json_atomic(path, {"sampler": asdict(SAMPLER), "speed_batch": args.speed_batch, "rows": rows})
    print(table(rows))


if __name__ == "__main__":
    main()
