"""Reconstruction quality of the shipped tokenizers: PSNR, SSIM, rFID, codebook usage, perplexity.

    python bench/bench_tokenizers.py --n 512 --json bench/results/tokenizers.json

Evaluated on the held-out ``split="test"`` images of each tokenizer's world with
:func:`mmgen.eval.recon.evaluate_tokenizer` (the same code as ``mmgen eval recon``). rFID needs
two Inception passes per image (~0.2 s each on one CPU thread); ``--no-rfid`` skips it. rFID
depends on ``n``: compare rows measured with the same ``n``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mmgen.eval.recon import evaluate_tokenizer, load_tokenizer
from mmgen.modeling import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = {"checkpoints/shapes-var/tokenizer": "shapes", "checkpoints/shapes-raster/tokenizer": "shapes",
           "checkpoints/digits-raster/tokenizer": "digits", "checkpoints/digits-var/tokenizer": "digits"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--no-rfid", action="store_true", help="skip rFID (the slow part on CPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for rel, world in DEFAULT.items():
        path = ROOT / rel
        if not path.is_dir():
            continue
        tok, path = load_tokenizer(path, device=args.device)
        r = {"tokenizer": rel, "class": type(tok).__name__, "world": world,
             **evaluate_tokenizer(tok, world, n=args.n, rfid=not args.no_rfid, tokenizer_path=path)}
        rows.append(r)
        rfid = "n/a" if r["rfid"] is None else f"{r['rfid']:6.2f}"
        print(f"{rel:40s} {r['class']:22s} {world:7s} PSNR {r['psnr_db']:6.2f} dB  SSIM {r['ssim']:.4f}  rFID {rfid}  "
              f"usage {r['codebook_usage']:.3f}  perplexity {r['perplexity']:7.1f}")
    if args.json:
        write_json_atomic(args.json, rows)


if __name__ == "__main__":
    main()
