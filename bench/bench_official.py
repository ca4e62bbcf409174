"""Speed of mmgen against the official VAR, LlamaGen and RAR code on the same weights (CPU, one process, side by side).

    python bench/bench_official.py --official-repo ~/VAR                                 # VAR depth 2 (batch 8) and d16 (batch 1)
    python bench/bench_official.py --family llamagen --official-repo ~/LlamaGen          # LlamaGen depth 2 (batch 8) and GPT-B (batch 1)
    python bench/bench_official.py --family rar --official-repo ~/1d-tokenizer --cases B:1 --rounds 7

Each ``size:batch`` case builds the official model (``bench/official_pairs.py``: an integer size is a
small model of depth d, width 64·d, d heads; a name is the official architecture), perturbs its weights
as the parity fixtures were (``parity_official.perturb``) and converts its ``state_dict()`` with
``mmgen.convert``, so both sides run the same weights (the teacher-forced logits are compared first).
**train**: one step of the official training script (train mode, its dropouts, loss, clip, AdamW) and
the same step through mmgen's ``forward`` and the trainer's AdamW (``--adamw plain``: the unfused
``torch.optim.AdamW`` on both sides, to separate the optimizer from the rest); **sample**: class labels -> tokens with the paper's sampler
(mmgen's ``paper`` preset and the same settings passed to the official sampler), KV cache, eval mode,
no tokenizer decode on either side.

Each round times both sides once, the order alternating between rounds (the machine may be shared);
the table reports the median wall time per side and the median per-round speed-up official / mmgen
(> 1: mmgen is faster), from wall time and from the process's CPU time (less sensitive to other
processes on a shared machine). Nothing of the official code is copied: it is imported from
``--official-repo``.

``--precision`` picks the arithmetic: ``fp32`` (default; both sides), ``bf16`` (both sides under
``torch.autocast("cpu", bfloat16)``, which the bench adds around the official calls: their own AMP
contexts are CUDA-only) or ``mmgen-bf16`` (mmgen under CPU autocast against the official code as it
runs on a CPU, fp32). Weights, optimizer state and the loss stay fp32 on both sides. ``--compile``
runs mmgen's transformer blocks through ``torch.compile`` (the official code has no compiled path).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or as a module
from official_pairs import FAMILIES, PRECISIONS  # noqa: E402
from parity_official import official_code  # noqa: E402

from mmgen.nn.transformer import compile_blocks  # noqa: E402

DEFAULT_CASES = {"var": ["2:8", "16:1"], "llamagen": ["2:8", "B:1"], "rar": ["2:8", "B:1"]}


def time_pair(official, mmgen, rounds: int, warmup: int = 1) -> dict:
    """Median wall and CPU (process) time per side, and the median per-round speed-up official / mmgen of each."""
    for _ in range(warmup):
        official(), mmgen()
    wall, cpu = {"official": [], "mmgen": []}, {"official": [], "mmgen": []}
    for r in range(rounds):
        order = (("official", official), ("mmgen", mmgen)) if r % 2 == 0 else (("mmgen", mmgen), ("official", official))
        for name, fn in order:
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    med = statistics.median
    return {"official_ms": 1000 * med(wall["official"]), "mmgen_ms": 1000 * med(wall["mmgen"]),
            "speedup": med([o / m for o, m in zip(wall["official"], wall["mmgen"])]),
            "speedup_cpu_time": med([o / m for o, m in zip(cpu["official"], cpu["mmgen"])]), "wall_s": wall, "cpu_s": cpu}


def run_case(family: str, size: str, batch: int, rounds: int, what: tuple[str, ...], precision: str = "fp32", adamw: str = "own",
             compile: bool = False) -> dict:
    pair = FAMILIES[family](size)
    gt, labels = pair.inputs(batch)
    out = {"family": family, "size": size, "batch": batch, "precision": precision, "adamw": adamw, "compile": compile, **pair.params(),
           "logits_max_abs": pair.logits_max_abs(gt[:1], labels[:1])}
    if compile:  # mmgen's blocks only; the warm-up round of time_pair pays the compilation (one graph per scale / cache length)
        compile_blocks(pair.gen)
    with torch._dynamo.config.patch(recompile_limit=64) if compile else contextlib.nullcontext():
        if "train" in what:
            out["train"] = time_pair(*pair.train_steps(gt, labels, precision, adamw), rounds)
        if "sample" in what:
            out["sample"] = time_pair(*pair.sample_calls(labels, precision), rounds)
    return out


def table(cases: list[dict]) -> str:
    rows = ["| family | size | batch | precision | AdamW | measurement | official | mmgen | speed-up official / mmgen (wall) | (CPU time) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        for what in ("train", "sample"):
            if what in c:
                r = c[what]
                rows.append(f"| {c['family']} | {c['size']} | {c['batch']} | {c['precision']} | {c['adamw'] if what == 'train' else ''} | {what} | {r['official_ms']:.0f} ms | {r['mmgen_ms']:.0f} ms "
                            f"| **{r['speedup']:.2f}×** | {r['speedup_cpu_time']:.2f}× |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="var", choices=list(FAMILIES))
    p.add_argument("--official-repo", required=True, help="your clone of FoundationVision/VAR, FoundationVision/LlamaGen or bytedance/1d-tokenizer")
    p.add_argument("--cases", nargs="+", help="size:batch pairs; size: a depth or an official size name (default: " +
                   "; ".join(f"{k} {' '.join(v)}" for k, v in DEFAULT_CASES.items()) + ")")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", choices=["train", "sample"], help="time one measurement only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="bf16 autocast on both sides, on mmgen's only, or neither")
    p.add_argument("--adamw", default="own", choices=["own", "plain"],
                   help="own: each side's AdamW as its training script builds it (fused or not); plain: unfused on both")
    p.add_argument("--compile", action="store_true", help="torch.compile mmgen's transformer blocks (a C++ compiler on the CPU); the official code stays eager")
    p.add_argument("--json", help="default: bench/results/official_speed_FAMILY.json")
    args = p.parse_args(argv)
    cases = [c.split(":") for c in args.cases or DEFAULT_CASES[args.family]]
    if any(len(c) != 2 or not c[1].isdigit() for c in cases):
        p.error(f"--cases take size:batch, e.g. 2:8 B:1; got {args.cases}")
    torch.set_num_threads(args.threads)
    what = (args.only,) if args.only else ("train", "sample")
    results = []
    with official_code(args.official_repo):
        for size, batch in cases:
            results.append(run_case(args.family, size, int(batch), args.rounds, what, args.precision, args.adamw, args.compile))
            print(json.dumps({k: v for k, v in results[-1].items() if k not in ("train", "sample")}), flush=True)
    print(table(results))
    out = Path(args.json or f"bench/results/official_speed_{args.family}.json")
    result = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "threads": args.threads, "torch": torch.__version__,
              "rounds": args.rounds, "command": " ".join(sys.argv), "cases": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
