"""Seeded samples of every shipped checkpoint, to check that a refactor of the decode loop changes nothing.

For each folder under ``checkpoints/`` this samples a few fixed prompts (or labels) with a fixed
seed at the folder's recommended sampler settings (``sampler.json``), once with the KV cache, once
without (``use_cache=False``) and once with the static cache, and records a hash of the sampled
token ids (latents for xAR) and of the decoded uint8 pixels. A unified model also records its
greedy captions of its own images, a FlexTok model a token-budget run.

    python bench/check_seeded_samples.py --out bench/results/seeded_samples_before.json
    python bench/check_seeded_samples.py --compare bench/results/seeded_samples_before.json

``--compare`` exits non-zero and lists every record that differs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a large red circle at the top left", "a small blue square at the bottom right and a large green triangle at the top"]
VIDEO_PROMPTS = ["a red circle moving right", "a small cyan triangle moving up"]
LABELS = [3, 7]
SEED = 1234


def _hash(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _sampler_kw(folder: Path) -> dict:
    f = folder / "sampler.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _runs(folder: Path, kw: dict) -> dict[str, dict]:
    """Name -> sampler settings to record for one checkpoint."""
    runs = {"recommended": dict(kw), "no_cache": {**kw, "use_cache": False}, "static_cache": {**kw, "static_cache": True}}
    if "flextok" in folder.name:
        runs["budget8"] = {**kw, "token_budget": 8}
    return runs


def record(folder: Path) -> dict:
    from mmgen.pipeline import Pipeline, to_uint8
    from mmgen.sampler import SamplerConfig

    pipe = Pipeline.from_pretrained(folder)
    gen, tok = pipe.generator, pipe.tokenizer
    if gen.config.cond == "class":
        cond = gen.make_condition(labels=LABELS)
    else:
        cond = gen.make_condition(prompts=VIDEO_PROMPTS if pipe.is_video else PROMPTS)
    video_kw = {"latent_frames": tok.latent_frames(pipe.max_frames)} if pipe.is_video else {}
    out = {}
    for name, kw in _runs(folder, _sampler_kw(folder)).items():
        torch.manual_seed(0)  # models must not use the global RNG; this makes a leak reproducible at least
        tokens = gen.generate(cond, SamplerConfig(**{**kw, "seed": SEED}), **video_kw)
        values = tokens.ids if tokens.ids is not None else tokens.latents
        pixels = tok.decode(tokens, frames=pipe.max_frames) if pipe.is_video else tok.decode(tokens)
        rec = {"tokens": _hash(values), "pixels": _hash(to_uint8(pixels)), "shape": list(values.shape)}
        if tokens.ids is not None:
            rec["first_ids"] = tokens.ids[:, :8].tolist()
        else:
            rec["first_latents"] = [round(v, 5) for v in tokens.latents.flatten()[:4].tolist()]
        out[name] = rec
    if hasattr(gen, "caption") and pipe.is_video:
        image = gen.generate(cond, SamplerConfig(**{**_sampler_kw(folder), "seed": SEED}), latent_frames=1)
        out["caption"] = {"captions": gen.caption(image)}
    return out


def _dumps(records: dict) -> str:
    """JSON with one line per (checkpoint, run): diffs stay readable."""
    blocks = [f"  {json.dumps(name)}: {{\n" + ",\n".join(f"    {json.dumps(run)}: {json.dumps(rec)}" for run, rec in runs.items()) + "\n  }"
              for name, runs in records.items()]
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpts", default=str(ROOT / "checkpoints"))
    p.add_argument("--out", default=None, help="write the records as JSON here")
    p.add_argument("--compare", default=None, help="a JSON written before: report every difference")
    p.add_argument("--only", action="append", help="checkpoint folder names (repeatable; default: all)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    records = {}
    for folder in sorted(Path(args.ckpts).iterdir()):
        if not (folder / "config.json").is_file() or (args.only and folder.name not in args.only):
            continue
        t0 = time.perf_counter()
        records[folder.name] = record(folder)
        print(f"{folder.name:22s} {time.perf_counter() - t0:6.1f}s", flush=True)
    if args.out:
        Path(args.out).write_text(_dumps(records))
    if not args.compare:
        return 0
    before = json.loads(Path(args.compare).read_text())
    bad = 0
    for name, runs in records.items():
        for run, rec in runs.items():
            ref = before.get(name, {}).get(run)
            same = ref == rec
            bad += not same
            print(f"{name:22s} {run:13s} {'identical' if same else 'DIFFERENT'}" + ("" if same else f"\n  before {ref}\n  after  {rec}"))
    print(f"{bad} difference(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
