"""Reconstruction quality of the shipped tokenizers: PSNR, codebook usage, perplexity.

    python bench/bench_tokenizers.py --n 512 --json bench/results/tokenizers.json

Evaluated on the held-out ``split="test"`` images of each tokenizer's world.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mmgen.data import build_dataset
from mmgen.modeling import load_module, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = {"checkpoints/shapes-var/tokenizer": "shapes", "checkpoints/shapes-raster/tokenizer": "shapes",
           "checkpoints/digits-raster/tokenizer": "digits", "checkpoints/digits-var/tokenizer": "digits"}


@torch.no_grad()
def evaluate(tok, world: str, n: int) -> dict:
    ds = build_dataset(world, size=tok.image_size, split="test")
    n = min(n, len(ds)) if hasattr(ds, "__len__") and not getattr(ds, "infinite", False) else n
    x = torch.stack([ds[i]["pixels"] for i in range(n)])
    tokens = tok.encode(x)
    rec = tok.decode(tokens)
    mse = ((rec - x) ** 2).flatten(1).mean(1)
    psnr = (10 * torch.log10(4.0 / mse.clamp(min=1e-10))).mean().item()  # peak-to-peak 2 in [-1, 1]
    counts = torch.bincount(tokens.ids.flatten(), minlength=tok.vocab_size).float()
    p = counts / counts.sum()
    perplexity = torch.exp(-(p[p > 0] * p[p > 0].log()).sum()).item()
    return {"world": world, "n": n, "psnr_db": round(psnr, 2), "codebook_usage": round((counts > 0).float().mean().item(), 4),
            "perplexity": round(perplexity, 1), "vocab": tok.vocab_size, "tokens_per_image": tokens.ids.shape[1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for rel, world in DEFAULT.items():
        path = ROOT / rel
        if not path.is_dir():
            continue
        tok = load_module(path)
        r = {"tokenizer": rel, "class": type(tok).__name__, **evaluate(tok, world, args.n)}
        rows.append(r)
        print(f"{rel:40s} {r['class']:22s} {world:7s} PSNR {r['psnr_db']:6.2f} dB  usage {r['codebook_usage']:.3f}  perplexity {r['perplexity']:7.1f}")
    if args.json:
        write_json_atomic(args.json, rows)


if __name__ == "__main__":
    main()
