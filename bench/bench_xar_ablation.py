"""xAR ablations on ``shapes``: trainings and sampler knobs, judge accuracy and sampling time side by side.

    X="mmgen train generator --recipe train/recipes/shapes_xar.yaml"                  # token entities, AdaLN noise level
    $X --out runs/shapes-xar model_args.entities=cell:2 model_args.time_cond=input      # the first shipped xAR
    $X --out runs/shapes-xar-token model_args.time_cond=input
    $X --out runs/shapes-xar-tf model_args.entities=cell:2 model_args.time_cond=input model_args.noisy_context=false
    $X --out runs/shapes-xar-one model_args.entities=cell:2 model_args.time_cond=input model_args.single_target=true
    python bench/bench_xar_ablation.py cell=runs/shapes-xar/model token=runs/shapes-xar-token/model \\
        teacher-forced=runs/shapes-xar-tf/model single-target=runs/shapes-xar-one/model --json bench/results/xar_ablation.json

A row is ``name=folder`` or ``name=folder:key=value,...``: the keys are sampler fields
(``flow_steps=50,flow_solver=euler-maruyama,cfg_scale=3,cfg_schedule=linear,flow_context_t=0.1``),
on top of one common sampler (the
shipped xAR's: cfg 1.5 constant on the velocity, 25 Euler steps per entity). ``--seeds`` are prompt
seeds: every row is judged on the same fresh prompts of each seed, and reports the mean and the
spread over seeds. Sampling time: best of ``--repeats`` batches of ``--speed-batch`` one-object
prompts after a warm-up, tokenizer decoding included (``--repeats 0``: not measured). Rows can be
measured in separate processes and merged: ``--json`` files are merged by name.
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

import mmgen
from mmgen.bench.compare import time_pipeline
from mmgen.eval.generation import judge_pipeline
from mmgen.modeling import write_json_atomic
from mmgen.sampler import SamplerConfig

SAMPLER = SamplerConfig(cfg_scale=1.5, cfg_schedule="constant", temperature=1.0, flow_steps=25, seed=0)
FIELDS = ("whole", "color", "shape", "size", "position", "count")


def parse_row(spec: str) -> tuple[str, str, dict]:
    """``name=folder[:k=v,...]`` -> (name, folder, overrides with numbers parsed)."""
    name, _, rest = spec.partition("=")
    folder, _, knobs = rest.partition(":")
    over = {}
    for kv in filter(None, knobs.split(",")):
        k, _, v = kv.partition("=")
        allowed = {f.name for f in fields(SamplerConfig)}
        if k not in allowed:
            raise ValueError(f"row {name!r}: unknown knob {k!r}; allowed: {', '.join(sorted(allowed))}")
        try:
            over[k] = int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            over[k] = v
    return name, folder, over


def measure(name: str, path: str, over: dict, args) -> dict:
    pipe = mmgen.load(path)
    gen = pipe.generator
    sampler = replace(SAMPLER, **over)
    row = {"name": name, "model": path, "knobs": over, "entities": gen.config.entities, "noisy_context": gen.config.noisy_context,
           "time_cond": getattr(gen.config, "time_cond", "input"), "ar_steps": gen.forward_passes(), "sampler": asdict(sampler)}
    for objects, n in ((1, args.n1), (2, args.n2)):
        if not n:
            continue
        per_seed = [judge_pipeline(pipe, n=n, objects=objects, sampler=sampler, seed=s, progress=False) for s in args.seeds]
        cell = {k: statistics.mean(r[k] for r in per_seed) for k in FIELDS}
        whole = [r["whole"] for r in per_seed]
        cell |= {"n": n, "seeds": args.seeds, "whole_per_seed": whole, "whole_std": statistics.pstdev(whole)}
        row[f"judge_{objects}obj"] = cell
    if args.repeats:
        sec = time_pipeline(pipe, sampler, args.repeats, prompt=["a large red circle at the top left"] * args.speed_batch)
        row["seconds_per_batch"], row["images_per_s"] = round(sec, 3), round(args.speed_batch / sec, 3)
    print(table([row]).splitlines()[-1], flush=True)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| row | knobs | entities | time cond | AR steps | judge 1-obj (± over seeds) | judge 2-obj (± over seeds) | shape 2-obj | img/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for r in rows:
        j1, j2 = r.get("judge_1obj", {}), r.get("judge_2obj", {})
        knobs = ", ".join(f"{k}={v}" for k, v in r.get("knobs", {}).items()) or "—"
        lines.append(f"| {r['name']} | {knobs} | {r['entities']} | {r.get('time_cond', 'input')} | {r['ar_steps']} | "
                     f"{j1.get('whole', nan):.3f} ± {j1.get('whole_std', nan):.3f} | {j2.get('whole', nan):.3f} ± {j2.get('whole_std', nan):.3f} | "
                     f"{j2.get('shape', nan):.3f} | {r.get('images_per_s', nan):.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="name=model_folder[:knob=value,...]")
    ap.add_argument("--n1", type=int, default=300, help="one-object prompts per seed (0 = skip)")
    ap.add_argument("--n2", type=int, default=300, help="two-object prompts per seed (0 = skip)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="prompt seeds (not 10007, the old eval stream, nor 4242, the tuning stream)")
    ap.add_argument("--speed-batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None, help="merge rows into this file (by name)")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for spec in args.runs:
        rows.append(measure(*parse_row(spec), args))
        if args.json:  # after every row: a long sweep keeps what it measured
            path = Path(args.json)
            old = json.loads(path.read_text())["rows"] if path.is_file() else []
            merged = list(({r["name"]: r for r in old} | {r["name"]: r for r in rows}).values())
            write_json_atomic(path, {"sampler": asdict(SAMPLER), "speed_batch": args.speed_batch, "rows": merged})
    print(table(rows))


if __name__ == "__main__":
    main()
