"""Training throughput, MFU and peak memory, plus sampling images/s, per paradigm and size.

    python bench/bench_train.py --json bench/results/train_cpu.json                 # tiny presets on CPU
    python bench/bench_train.py --size reference --precision bf16 --compile \\
        --json bench/results/train_h100.json                                        # paper sizes on a GPU

Each row builds a fresh generator + tokenizer preset (throughput does not depend on trained
weights), encodes one batch of world images once, then times ``--steps`` optimizer steps
(forward, backward, clipping, AdamW) after ``--warmup`` steps: CUDA events on GPU, wall clock
on CPU. MFU is model FLOPs (PaLM/nanoGPT estimate, 6N + 12·L·d·T per token, transformer only)
per second over the device's dense peak for the precision; it is left empty on CPU, where the
achieved TFLOP/s is reported instead. Sampling: the same freshly built model, cfg 2, KV cache.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import mmgen
from mmgen.bench.compare import time_pipeline
from mmgen.data import build_dataset, collate
from mmgen.modeling import write_json_atomic
from mmgen.models.base import takes_progress, tokenizer_overrides
from mmgen.nn.attention import BACKENDS, current_backend
from mmgen.nn.transformer import Transformer, compile_blocks
from mmgen.pipeline import Pipeline
from mmgen.sampler import SamplerConfig

# (paradigm, generator, tokenizer, world spec); reference sizes as in the papers (256 px ImageNet-class models).
SETUPS = {
    "tiny": [("raster", "raster-tiny", "vq-tiny", "shapes"), ("var", "var-tiny", "msvq-tiny", "shapes"),
             ("rar", "rar-tiny", "vq-tiny", "shapes"), ("xar", "xar-tiny", "kl-tiny", "shapes"),
             ("nbp", "nbp-tiny", "video-vq-tiny", "shapes-video"),
             ("video-raster", "video-raster-tiny", "video-vq-tiny", "shapes-video")],
    "reference": [("raster", "llamagen-mmgen-b", "vq-f16-llamagen", "shapes"), ("var", "var-mmgen-d16", "msvq-var", "shapes"),
                  ("rar", "rar-mmgen-b", "vq-f16-llamagen", "shapes"), ("xar", "xar-b", "kl-f16-mar", "shapes")],
}
# Dense peak TFLOP/s by precision (vendor datasheets, SXM parts).
PEAK_TFLOPS = {"H100": {"bf16": 989.0, "fp32": 67.0}, "H200": {"bf16": 989.0, "fp32": 67.0},
               "A100": {"bf16": 312.0, "fp32": 19.5}}


def peak_tflops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((p[precision] for k, p in PEAK_TFLOPS.items() if k in name), None)


def build(gen_name: str, tok_name: str, spec: str, batch: int, device: torch.device):
    """Generator bound to its tokenizer, and one prepared (tokens, cond) training batch."""
    tok = mmgen.create_tokenizer(tok_name).to(device).eval().requires_grad_(False)
    gen = mmgen.create_generator(gen_name, **tokenizer_overrides(tok)).to(device)
    gen.bind_tokenizer(tok)
    data = build_dataset(spec, size=tok.image_size, seed=0)
    items = collate([data[i] for i in range(batch)])
    items.setdefault("label", torch.arange(batch) % max(1, getattr(gen.config, "num_classes", 1) or 1))
    return gen, tok, gen.prepare_batch(items)


def transformer_flops(gen: torch.nn.Module, step) -> tuple[float, int]:
    """Training FLOPs of one step's transformer passes (captured with a hook), and tokens processed."""
    seen: list[tuple[Transformer, int, int]] = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append((mod, out.shape[0], out.shape[1])))
             for m in gen.modules() if isinstance(m, Transformer)]
    try:
        step()
    finally:
        for h in hooks:
            h.remove()
    flops = sum(mod.flops_per_token(n) * b * n for mod, b, n in seen)
    return flops, sum(b * n for _, b, n in seen)


def bench_training(gen, batch, device, precision: str, steps: int, warmup: int) -> dict:
    tokens, cond = batch
    opt = torch.optim.AdamW(gen.parameters(), lr=1e-4, fused=device.type == "cuda")
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    wants_progress = takes_progress(gen)

    def step():
        with amp:
            loss, _ = gen(tokens, cond, progress=0.5) if wants_progress else gen(tokens, cond)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    gen.train()
    flops, n_tokens = transformer_flops(gen, step)
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        torch.cuda.synchronize(device)
        sec = start.elapsed_time(end) / 1e3 / steps
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sec = (time.perf_counter() - t0) / steps
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # peak RSS of this process (one row), GiB
    return {"step_s": sec, "tokens_per_s": n_tokens / sec, "tflops": flops / sec / 1e12, "peak_mem_gib": peak,
            "seq_tokens": n_tokens}


def _drop_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name`` and its values (up to the next option)."""
    out, skipping = [], False
    for a in argv:
        if a.startswith("--"):
            skipping = a == name
        if not skipping:
            out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SETUPS), default=None, help="default: reference on CUDA, tiny on CPU")
    ap.add_argument("--paradigms", nargs="*", default=None)
    ap.add_argument("--batch", type=int, default=None, help="training batch (default 32 tiny, 64 reference)")
    ap.add_argument("--sample-batch", type=int, nargs="*", default=None, help="default: 1 and 16 (CPU) / 64 (GPU)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile every transformer block")
    ap.add_argument("--attn", default=None, choices=BACKENDS, help="attention backend (default: MMGEN_ATTN_BACKEND or auto)")
    ap.add_argument("--no-sampling", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.attn:
        os.environ["MMGEN_ATTN_BACKEND"] = args.attn  # this process and the per-row children
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size or ("reference" if device.type == "cuda" else "tiny")
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    batch = args.batch or (64 if size == "reference" else 32)
    sample_batches = args.sample_batch or ([1, 64] if device.type == "cuda" else [1, 16])
    peak = peak_tflops(device, precision)
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads") + f", torch {torch.__version__}"
    rows = []
    chosen = [s for s in SETUPS[size] if not args.paradigms or s[0] in args.paradigms]
    if device.type == "cpu" and len(chosen) > 1:  # peak RSS is per process: one fresh process per row
        with tempfile.TemporaryDirectory() as tmp:
            for paradigm, *_ in chosen:
                out = Path(tmp) / f"{paradigm}.json"
                argv = _drop_option(_drop_option(_drop_option(sys.argv[1:], "--paradigms"), "--json"), "--size")
                argv += ["--size", size, "--paradigms", paradigm, "--json", str(out)]
                subprocess.run([sys.executable, __file__, *argv], check=True, stdout=subprocess.DEVNULL)
                rows += json.loads(out.read_text())["rows"]
        chosen = []
    for paradigm, gen_name, tok_name, spec in chosen:
        torch.manual_seed(0)
        gen, tok, prepared = build(gen_name, tok_name, spec, batch, device)
        if args.compile:
            compile_blocks(gen)
        row = {"paradigm": paradigm, "generator": gen_name, "tokenizer": tok_name, "params_M": round(gen.num_params() / 1e6, 1),
               "batch": batch, "precision": precision, "compile": args.compile, "attention": current_backend(),
               **bench_training(gen, prepared, device, precision, args.steps, args.warmup)}
        row["mfu"] = round(row["tflops"] / peak, 4) if peak else None
        if not args.no_sampling:
            gen.eval()
            pipe = Pipeline(gen, tok)
            prompt = "a large red circle moving right" if "video" in spec else "a large red circle at the top left"
            for b in sample_batches:
                kw = {"prompt": [prompt] * b} if gen.config.cond == "text" else {"label": [0] * b}
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    sec = time_pipeline(pipe, SamplerConfig(cfg_scale=2.0, seed=0), 2, **kw)
                row[f"sample_b{b}_images_per_s"], row[f"sample_b{b}_latency_s"] = round(b / sec, 3), round(sec, 4)
        rows.append(row)
        del gen, tok, prepared
        if device.type == "cuda":
            torch.cuda.empty_cache()
    cols = ["paradigm", "generator", "params_M", "tokens_per_s", "tflops", "mfu", "peak_mem_gib"] + \
           [k for k in (rows[0] if rows else {}) if k.startswith("sample_") and k.endswith("images_per_s")]
    print(f"# training and sampling throughput ({machine}; {precision}, batch {batch}, compile={args.compile})")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    if args.json:
        write_json_atomic(args.json, {"machine": machine, "device": device.type, "rows": rows})


if __name__ == "__main__":
    main()
