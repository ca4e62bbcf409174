"""Subobject tokenizer round trip on the world's renders and on an independent renderer's.

    python bench/bench_subobject_variants.py checkpoints/shapes-subobject/tokenizer --n 300 --seeds 1 2 3
    python bench/bench_subobject_variants.py --judge checkpoints/shapes-subobject --n 300 --seeds 1 2 3 \
        --json bench/results/judge_shapes-subobject_{objects}obj.json

Round trip = encode -> decode -> shapes judge against the caption (whole-prompt agreement). World:
``shapes`` test-split images; variants: :mod:`mmgen.data.shapes_render_variants` (PIL at 4x,
box-downsampled, sub-pixel boxes, palette moved by up to 20 per channel), fresh scenes per seed.
Also the exact-fill path (true segments, mean colours: no SeqAE) and segments per image.

``--judge PIPELINE``: the text-to-image judge on prompts drawn with each prompt seed (seeds that
neither training nor sampler tuning use), the pipeline's own sampler; mean and spread over seeds.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch


@torch.no_grad()
def round_trip(tok, x: torch.Tensor, captions: list[str]) -> dict[str, float]:
    from mmgen.eval.judge import judge_batch

    segs = tok.segment(x)
    return {"seqae": judge_batch(tok.decode(tok.encode(x)), captions)["whole"],
            "exact_fill": judge_batch(tok.paint(segs, fill="mean"), captions)["whole"],
            "segments": float(segs.count().float().mean())}


def judge_seeds(folder: str, n: int, seeds: list[int], json_pattern: str | None) -> None:
    import mmgen
    from mmgen.eval.generation import judge_pipeline

    pipe = mmgen.load(folder)
    for objects in (1, 2):
        runs = [judge_pipeline(pipe, n, objects, pipe.sampler, seed=s, progress=False) for s in seeds]
        rec = {"objects": objects, "n": n * len(seeds), "prompt_seeds": seeds, "per_seed": [r["whole"] for r in runs],
               **{k: float(np.mean([r[k] for r in runs])) for k in ("color", "shape", "size", "position", "count", "whole")},
               "whole_std": float(np.std([r["whole"] for r in runs])), "images_per_second": float(np.mean([r["images_per_second"] for r in runs])),
               "sampler": runs[0]["sampler"], "checkpoint": folder,
               "command": f"python bench/bench_subobject_variants.py --judge {folder} --n {n} --seeds {' '.join(map(str, seeds))}"}
        print(json.dumps(rec))
        if json_pattern:
            from mmgen.modeling import write_json_atomic

            write_json_atomic(json_pattern.format(objects=objects), rec)


def main() -> None:
    from mmgen.data import build_dataset
    from mmgen.data.shapes_render_variants import variant_batch
    from mmgen.eval.recon import load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokenizer", nargs="?")
    ap.add_argument("--judge", default=None, help="a text-to-image pipeline folder: judge it instead (--json may hold {objects})")
    ap.add_argument("--n", type=int, default=500, help="images per object count and seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--segmenter", default=None, help="override the tokenizer's segmenter spec")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.judge:
        return judge_seeds(args.judge, args.n, args.seeds, args.json)
    if not args.tokenizer:
        ap.error("give a tokenizer folder or --judge PIPELINE")
    tok, _ = load_tokenizer(args.tokenizer)
    if args.segmenter:
        tok.config.segmenter = args.segmenter
    ds = build_dataset("shapes", size=tok.image_size, split="test")
    items = [ds[i] for i in range(args.n)]
    out = {"tokenizer": args.tokenizer, "segmenter": tok.config.segmenter, "n": args.n, "seeds": args.seeds,
           "world": round_trip(tok, torch.stack([it["pixels"] for it in items]), [it["caption"] for it in items])}
    for objects in (1, 2):
        runs = [round_trip(tok, *variant_batch(args.n, objects, seed=s, size=tok.image_size)) for s in args.seeds]
        out[f"variant_{objects}obj"] = {k: {"mean": float(np.mean([r[k] for r in runs])), "std": float(np.std([r[k] for r in runs]))} for k in runs[0]}
    print(json.dumps(out, indent=1))
    if args.json:
        from mmgen.modeling import write_json_atomic

        write_json_atomic(args.json, out)


if __name__ == "__main__":
    main()
