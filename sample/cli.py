"""``mmgen sample``: images from a checkpoint folder, saved with the exact sampler settings.

Writes ``OUT`` (a grid PNG), the individual images in ``OUT-stem/``, and ``OUT-stem.json`` with
the sampler config, prompts/labels, checkpoint and timing, so every picture can be reproduced.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from mmgen.sampling import CFG_SCHEDULES, FLOW_SOLVERS, SamplerConfig

__all__ = ["add_arguments", "run", "save_samples", "sampler_from_args", "recommended_sampler"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="pipeline folder (config.json + model.safetensors + tokenizer/)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prompt", action="append", help="text prompt (repeat for several prompts)")
    g.add_argument("--label", type=int, action="append", help="class label for class-conditional models (repeatable)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt used as the CFG unconditional branch")
    p.add_argument("--n", type=int, default=16, help="samples per prompt/label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples.png", help="grid PNG path")
    p.add_argument("--nrow", type=int, default=0, help="images per grid row (default: sqrt of the count)")
    p.add_argument("--temperature", type=float, default=None, help="default: the checkpoint's recommended (sampler.json), else 1")
    p.add_argument("--top-k", type=int, default=None, help="0 = off")
    p.add_argument("--top-p", type=float, default=None, help="1 = off")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (1 = off)")
    p.add_argument("--cfg-schedule", choices=CFG_SCHEDULES, default=None)
    p.add_argument("--flow-steps", type=int, default=None, help="ODE/SDE steps per AR step of flow-head models (xAR)")
    p.add_argument("--flow-solver", choices=FLOW_SOLVERS, default=None, help="euler (ODE) or euler-maruyama (SDE)")
    p.add_argument("--no-cache", action="store_true", help="recompute the full sequence every step (slow reference)")
    p.add_argument("--device", default="cpu")


def sampler_from_args(args: argparse.Namespace, defaults: dict | None = None) -> SamplerConfig:
    """Command-line values over the checkpoint's recommended sampler settings over the defaults."""
    d = dict(defaults or {})
    given = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "cfg_scale": args.cfg, "cfg_schedule": args.cfg_schedule,
             "flow_steps": args.flow_steps, "flow_solver": args.flow_solver}
    d.update({k: v for k, v in given.items() if v is not None})
    d.update(seed=args.seed, use_cache=not args.no_cache)
    return SamplerConfig(**d)


def save_samples(images: torch.Tensor, out: str | Path, meta: dict, nrow: int = 0) -> Path:
    """Save a grid, the single images and the JSON of settings; returns the JSON path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(round(len(images) ** 0.5)))
    save_image(make_grid(images.float() / 255, nrow=nrow, padding=2, pad_value=0.5), out)
    folder = out.with_suffix("")
    folder.mkdir(exist_ok=True)
    for i, img in enumerate(images):
        save_image(img.float() / 255, folder / f"{i:04d}.png")
    meta_path = out.with_suffix(".json")
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta_path


def run(args: argparse.Namespace) -> dict:
    import mmgen

    pipe = mmgen.load(args.ckpt, device=args.device)
    sampler = sampler_from_args(args, recommended_sampler(args.ckpt))
    if args.n < 1 or args.n > 4096:
        raise ValueError(f"--n must be in [1, 4096], got {args.n}")
    prompts = args.prompt
    labels = args.label
    if prompts:
        prompts = [p for p in prompts for _ in range(args.n)]
    if labels:
        labels = [lab for lab in labels for _ in range(args.n)]
    t0 = time.perf_counter()
    images = pipe(prompt=prompts, label=labels, n=args.n, sampler=sampler, negative_prompt=args.negative_prompt)
    seconds = time.perf_counter() - t0
    meta = {
        "checkpoint": str(Path(args.ckpt).resolve()),
        "model": pipe.describe(),
        "prompts": prompts,
        "labels": labels,
        "negative_prompt": args.negative_prompt,
        "sampler": asdict(sampler),
        "num_images": len(images),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(images) / seconds, 3),
    }
    meta_path = save_samples(images, args.out, meta, args.nrow)
    print(f"wrote {args.out} ({len(images)} images, {seconds:.2f}s) and {meta_path}")
    return meta


def recommended_sampler(ckpt: str | Path) -> dict:
    """Sampler settings the checkpoint's author recommends (``sampler.json`` beside the weights)."""
    f = Path(ckpt) / "sampler.json"
    return json.loads(f.read_text()) if f.is_file() else {}
