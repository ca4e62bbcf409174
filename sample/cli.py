"""``mmgen sample``: images or videos from a checkpoint folder, saved with the exact sampler settings.

Image models write ``OUT`` (a grid PNG), the individual images in ``OUT-stem/``, and
``OUT-stem.json`` with the sampler config, prompts/labels, checkpoint and timing, so every picture
can be reproduced. Video models (``--frames``) write by the extension of ``OUT``: ``.mp4`` (H.264
through PyAV) or ``.gif`` (an animation of the sample grid, plus one file per sample in
``OUT-stem/``), or ``.png`` (a frame grid: one row per sample, one column per frame). A unified
model also captions images (``--image PATH``).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from einops import rearrange
from torchvision.utils import make_grid, save_image

from mmgen.sampling import CFG_SCHEDULES, FLOW_SOLVERS, SamplerConfig

__all__ = ["add_arguments", "run", "save_samples", "save_videos", "write_video", "sampler_from_args", "recommended_sampler",
           "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
VIDEO_EXTENSIONS = (".mp4", ".gif", ".png")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="pipeline folder (config.json + model.safetensors + tokenizer/)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prompt", action="append", help="text prompt (repeat for several prompts)")
    g.add_argument("--label", type=int, action="append", help="class label for class-conditional models (repeatable)")
    g.add_argument("--image", action="append", help="caption this image file with a unified model (repeatable); prints the captions")
    p.add_argument("--negative-prompt", default=None, help="negative prompt used as the CFG unconditional branch")
    p.add_argument("--n", type=int, default=16, help="samples per prompt/label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples.png", help="grid PNG path; video models: .mp4, .gif or .png (frame grid)")
    p.add_argument("--frames", type=int, default=None, help="video models: frames per clip (default: the model's clip length)")
    p.add_argument("--fps", type=float, default=4.0, help="video models: frames per second of .mp4/.gif")
    p.add_argument("--scale", type=int, default=4, help="video models: nearest-neighbour upscaling of .mp4/.gif frames")
    p.add_argument("--nrow", type=int, default=0, help="images per grid row (default: sqrt of the count)")
    p.add_argument("--temperature", type=float, default=None, help="default: the checkpoint's recommended (sampler.json), else 1")
    p.add_argument("--top-k", type=int, default=None, help="0 = off")
    p.add_argument("--top-p", type=float, default=None, help="1 = off")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (1 = off)")
    p.add_argument("--cfg-schedule", choices=CFG_SCHEDULES, default=None)
    p.add_argument("--flow-steps", type=int, default=None, help="ODE/SDE steps per AR step of flow-head models (xAR)")
    p.add_argument("--flow-solver", choices=FLOW_SOLVERS, default=None, help="euler (ODE) or euler-maruyama (SDE)")
    p.add_argument("--token-budget", type=int, default=None,
                   help="flexible-length (FlexTok) models: sample only the first k tokens and decode that prefix (0 = all)")
    p.add_argument("--no-cache", action="store_true", help="recompute the full sequence every step (slow reference)")
    p.add_argument("--device", default="cpu")


def sampler_from_args(args: argparse.Namespace, defaults: dict | None = None) -> SamplerConfig:
    """Command-line values over the checkpoint's recommended sampler settings over the defaults.

    Commands that expose only some sampling flags (``mmgen eval``: ``--cfg`` and ``--seed``) pass
    their namespace too; a flag a command does not have keeps the recommended value.
    """
    d = dict(defaults or {})
    flags = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "cfg_scale": "cfg", "cfg_schedule": "cfg_schedule",
             "flow_steps": "flow_steps", "flow_solver": "flow_solver", "token_budget": "token_budget", "seed": "seed"}
    d.update({k: v for k, flag in flags.items() if (v := getattr(args, flag, None)) is not None})
    if getattr(args, "no_cache", False):
        d["use_cache"] = False
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


def _tile(frames: torch.Tensor, nrow: int, scale: int) -> torch.Tensor:
    """uint8 ``(B,3,H,W)`` -> one ``(Hg, Wg, 3)`` uint8 grid, upscaled, even-sized (H.264 needs that)."""
    x = frames.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=128) if len(x) > 1 else x[0]
    grid = torch.nn.functional.pad(grid, (0, grid.shape[-1] % 2, 0, grid.shape[-2] % 2))
    return grid.permute(1, 2, 0).contiguous()


def write_video(frames: torch.Tensor, path: str | Path, fps: float = 4.0) -> Path:
    """uint8 ``(T, H, W, 3)`` -> ``.mp4`` (H.264 via imageio's PyAV plugin) or looping ``.gif`` (Pillow)."""
    import imageio.v3 as iio

    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".mp4":
        iio.imwrite(path, frames.numpy(), plugin="pyav", fps=fps, codec="libx264")
    elif ext == ".gif":
        iio.imwrite(path, frames.numpy(), extension=".gif", duration=int(round(1000 / fps)), loop=0)
    else:
        raise ValueError(f"unknown video extension {path.suffix!r}; allowed: .mp4, .gif")
    return path


def save_videos(videos: torch.Tensor, out: str | Path, meta: dict, nrow: int = 0, fps: float = 4.0, scale: int = 4) -> Path:
    """uint8 clips ``(B,3,T,H,W)`` -> ``out`` (.mp4/.gif of the grid, or a .png frame grid) + per-sample files + JSON."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    b, _, t = videos.shape[:3]
    if out.suffix.lower() == ".png":  # one row per sample, one column per frame
        frames = rearrange(videos, "b c t h w -> (b t) c h w")
        save_image(make_grid(frames.float() / 255, nrow=t, padding=2, pad_value=0.5), out)
        singles = []
    else:
        nrow = nrow or max(1, int(round(b**0.5)))
        write_video(torch.stack([_tile(videos[:, :, i], nrow, scale) for i in range(t)]), out, meta.get("fps", fps))
        folder = out.with_suffix("")
        folder.mkdir(exist_ok=True)
        singles = [str(write_video(torch.stack([_tile(v[None, :, i], 1, scale) for i in range(t)]), folder / f"{k:04d}{out.suffix}", fps))
                   for k, v in enumerate(videos)]
    meta_path = out.with_suffix(".json")
    meta_path.write_text(json.dumps({**meta, "files": singles}, indent=2))
    return meta_path


def _check_out(path: str, video: bool) -> None:
    ext = Path(path).suffix.lower()
    allowed = VIDEO_EXTENSIONS if video else IMAGE_EXTENSIONS
    if ext not in allowed:
        kind = "a video model" if video else "an image model"
        raise ValueError(f"unknown output extension {Path(path).suffix or '(none)'!r} for {kind}; allowed: {', '.join(allowed)}")


def _caption(pipe, args: argparse.Namespace) -> dict:
    import numpy as np
    from PIL import Image

    arrays = []
    for f in args.image:
        if not Path(f).is_file():
            raise FileNotFoundError(f"image {f!r} does not exist")
        try:
            img = Image.open(f).convert("RGB")
        except OSError as e:  # PIL's UnidentifiedImageError is an OSError
            raise ValueError(f"{f!r} is not an image file PIL can read: {e}") from None
        size = pipe.config.image_size
        if img.size != (size, size):
            img = img.resize((size, size), Image.NEAREST)
        arrays.append(np.asarray(img))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    captions = pipe.caption(images)
    for f, c in zip(args.image, captions):
        print(f"{f}: {c}")
    meta = {"checkpoint": str(Path(args.ckpt).resolve()), "model": pipe.describe(), "images": args.image, "captions": captions}
    if args.out != "samples.png":
        Path(args.out).with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return meta


def run(args: argparse.Namespace) -> dict:
    import mmgen

    if args.n < 1 or args.n > 4096:
        raise ValueError(f"--n must be in [1, 4096], got {args.n}")
    if args.fps <= 0 or args.scale < 1:
        raise ValueError(f"--fps must be > 0 and --scale >= 1, got {args.fps}, {args.scale}")
    pipe = mmgen.load(args.ckpt, device=args.device)
    if getattr(args, "image", None):
        return _caption(pipe, args)
    frames = pipe.check_frames(args.frames)
    _check_out(args.out, frames is not None)
    sampler = sampler_from_args(args, recommended_sampler(args.ckpt))
    prompts = args.prompt
    labels = args.label
    if prompts:
        prompts = [p for p in prompts for _ in range(args.n)]
    if labels:
        labels = [lab for lab in labels for _ in range(args.n)]
    t0 = time.perf_counter()
    images = pipe(prompt=prompts, label=labels, n=args.n, sampler=sampler, negative_prompt=args.negative_prompt, **({} if frames is None else {"frames": frames}))
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
    if frames is not None:
        meta.update(frames=frames, fps=args.fps, frames_per_second=round(len(images) * frames / seconds, 3))
        meta_path = save_videos(images, args.out, meta, args.nrow, args.fps, args.scale)
        print(f"wrote {args.out} ({len(images)} clips of {frames} frames, {seconds:.2f}s) and {meta_path}")
        return meta
    meta_path = save_samples(images, args.out, meta, args.nrow)
    print(f"wrote {args.out} ({len(images)} images, {seconds:.2f}s) and {meta_path}")
    return meta


def recommended_sampler(ckpt: str | Path) -> dict:
    """Sampler settings the checkpoint's author recommends (``sampler.json`` beside the weights)."""
    f = Path(ckpt) / "sampler.json"
    return json.loads(f.read_text()) if f.is_file() else {}
