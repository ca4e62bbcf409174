"""Data-loader throughput from WebDataset shards, to hold against training throughput.

    python bench/bench_loader.py --sizes 32 256 --workers 0 1 2 --json bench/results/loader_cpu.json

Packs ``--num-samples`` ``shapes`` renders per image size into temporary shards (PNG in tar, as
``mmgen data pack`` writes them), then reads them back as a training run would, batches of
``--batch`` collated tensors: through a plain ``DataLoader`` over ``ShardDataset`` with ``N``
workers (each worker decodes its own blocks of samples), and through the trainer's
``batch_loader`` (exact-resume order; a stream is read by one worker there). Compare the
samples/s with ``bench/bench_train.py``'s training samples/s (tokens/s ÷ tokens per sample).
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mmgen.data import ShardDataset, build_dataset, collate, pack
from mmgen.modeling import write_json_atomic
from mmgen.train.distributed import DistInfo, batch_loader


def rate(batches, n_batches: int, batch: int, warmup: int = 2) -> float:
    """Samples per second over ``n_batches`` batches after ``warmup`` (worker start-up excluded)."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[32, 256])
    ap.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--num-samples", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            shards = Path(tmp) / f"shapes-{size}"
            pack(build_dataset("shapes", size=size), shards, num_samples=args.num_samples, samples_per_shard=256, progress=False)
            for w in args.workers:
                ds = ShardDataset(shards, size=size, batch_size=args.batch, repeat=True)
                loader = DataLoader(ds, batch_size=args.batch, num_workers=w, collate_fn=collate)
                rows.append({"size": size, "path": "DataLoader(ShardDataset)", "workers": w,
                             "samples_per_s": round(rate(loader, args.batches, args.batch), 1)})
            ds = ShardDataset(shards, size=size, repeat=True)
            stream = batch_loader(ds, collate, info=DistInfo(), global_batch=args.batch, grad_accum=1, start_step=0,
                                  seed=0, num_workers=1)
            rows.append({"size": size, "path": "trainer batch_loader", "workers": 1,
                         "samples_per_s": round(rate(stream, args.batches, args.batch), 1)})
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"# data-loader throughput ({machine}; batch {args.batch})\n| size | path | workers | samples/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['path']} | {r['workers']} | {r['samples_per_s']} |")
    if args.json:
        write_json_atomic(args.json, {"machine": machine, "batch": args.batch, "rows": rows})


if __name__ == "__main__":
    main()
