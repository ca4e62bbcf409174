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
import math
import shlex
import sys
import time
import typing
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch
from einops import rearrange
from torchvision.utils import make_grid, save_image

from mmgen.images import tile, write_video
from mmgen.precision import warn_if_slow_bf16
from mmgen.sampler import SamplerConfig

__all__ = ["add_arguments", "add_sampler_arguments", "run", "save_samples", "save_videos", "sampler_from_args", "reproduce_command",
           "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
VIDEO_EXTENSIONS = (".mp4", ".gif", ".png")
FLAGS = {"cfg_scale": "--cfg", "use_cache": "--cache"}  # the short names users type; every other field is --field-name
HELP = {
    "temperature": "softmax temperature (> 0)",
    "top_k": "keep the k most likely tokens (0 = off)",
    "top_p": "nucleus sampling mass in (0, 1] (1 = off)",
    "cfg_scale": "classifier-free guidance scale (1 = off; also --cfg-scale)",
    "cfg_schedule": "how guidance grows over generation",
    "cfg_power": "exponent of the power-cosine guidance schedule",
    "flow_steps": "ODE/SDE steps per AR step of flow-head models (xAR)",
    "flow_solver": "euler (ODE) or euler-maruyama (SDE) for flow heads",
    "flow_context_t": "noisy-context flow models (xAR): noise level in [0, 1) at which finished entities re-enter the context (0 = clean)",
    "token_budget": "flexible-length (FlexTok) models: sample only the first k tokens and decode that prefix (0 = all)",
    "use_cache": "KV cache (--no-cache recomputes the full sequence every step: slow reference)",
    "static_cache": "fixed-shape KV buffers (torch.compile / CUDA graphs)",
    "seed": "random seed: the same seed gives the same samples",
}


def sampler_flag(name: str) -> str:
    """The command-line flag of a SamplerConfig field."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def add_sampler_arguments(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per SamplerConfig field (a new field gets a flag by itself); a flag not given keeps the checkpoint's value."""
    from mmgen.cli_args import finite_float

    hints = typing.get_type_hints(SamplerConfig)
    g = p.add_argument_group("sampler (default: the checkpoint's sampler.json, else SamplerConfig's defaults)")
    g.add_argument("--preset", default=None, metavar="NAME",
                   help="start from the checkpoint's sampler_presets.json[NAME] instead of sampler.json (converted checkpoints: paper, demo); flags override it")
    for f in (f for f in fields(SamplerConfig) if f.name not in skip):
        kind, flag = hints[f.name], sampler_flag(f.name)
        names = [flag] + ([f"--{f.name.replace('_', '-')}"] if flag != f"--{f.name.replace('_', '-')}" and kind is not bool else [])
        help_ = f"{HELP.get(f.name, f'SamplerConfig.{f.name}')} (default {f.default!r})"
        if kind is bool:
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif typing.get_origin(kind) is typing.Literal:
            g.add_argument(*names, dest=f.name, choices=typing.get_args(kind), default=None, help=help_)
        else:
            g.add_argument(*names, dest=f.name, type=finite_float if kind is float else kind, default=None, metavar=f.name.upper(), help=help_)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mmgen.cli_args import finite_float

    p.add_argument("--ckpt", required=True, help="pipeline folder (config.json + model.safetensors + tokenizer/) or a Hub repo id")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prompt", action="append", help="text prompt (repeat for several prompts)")
    g.add_argument("--label", type=int, action="append", help="class label for class-conditional models (repeatable)")
    g.add_argument("--image", action="append", help="caption this image file with a unified model (repeatable); prints the captions")
    p.add_argument("--negative-prompt", default=None, help="negative prompt used as the CFG unconditional branch")
    p.add_argument("--n", type=int, default=16, help="samples per prompt/label")
    p.add_argument("--out", default="samples.png", help="grid PNG path; video models: .mp4, .gif or .png (frame grid)")
    p.add_argument("--frames", type=int, default=None, help="video models: frames per clip (default: the model's clip length)")
    p.add_argument("--fps", type=finite_float, default=4.0, help="video models: frames per second of .mp4/.gif")
    p.add_argument("--scale", type=int, default=4, help="video models: nearest-neighbour upscaling of .mp4/.gif frames")
    p.add_argument("--nrow", type=int, default=0, help="images per grid row (default: sqrt of the count)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: on a terminal)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="bf16: sample under bf16 autocast (on a CPU only with AMX/AVX-512 BF16: ~2x faster at VAR-d16 size; "
                        "without them slower than fp32, with a warning; bench/RESULTS.md; tokens can differ from fp32); "
                        "auto/fp32: the weights' own precision")
    add_sampler_arguments(p)


def sampler_from_args(args: argparse.Namespace, base: SamplerConfig | None = None, folder: str | Path | None = None) -> SamplerConfig:
    """The flags a user gave over ``base`` (the checkpoint's recommended settings).

    ``--preset NAME`` replaces ``base`` by the preset of the checkpoint ``folder``
    (``recommended_sampler(folder, NAME)``). Commands that expose only some flags pass their
    namespace too: a flag a command does not have keeps the recommended value.
    """
    preset = getattr(args, "preset", None)
    if preset is not None:
        if folder is None:
            raise ValueError(f"--preset {preset!r} needs a checkpoint folder with sampler_presets.json")
        from mmgen.pipeline import recommended_sampler

        base = recommended_sampler(folder, preset)
    given = {f.name: v for f in fields(SamplerConfig) if (v := getattr(args, f.name, None)) is not None}
    for name, v in given.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{sampler_flag(name)} must be a finite number, got {v}")
    return replace(base or SamplerConfig(), **given)


def reproduce_command(ckpt: str, sampler: SamplerConfig, used: tuple[str, ...], *, prompt: str | None = None, label: int | None = None,
                      negative_prompt: str | None = None, n: int = 1, frames: int | None = None) -> str:
    """The ``mmgen sample`` command that makes exactly these samples: every sampler field the model uses, spelled out."""
    cmd = ["mmgen", "sample", "--ckpt", ckpt]
    if prompt is not None:
        cmd += ["--prompt", prompt] + (["--negative-prompt", negative_prompt] if negative_prompt else [])
    if label is not None:
        cmd += ["--label", str(label)]
    cmd += ["--n", str(n)] + (["--frames", str(frames), "--out", "samples.mp4"] if frames is not None else [])
    for name, v in asdict(sampler).items():
        if name in used:
            flag = sampler_flag(name)
            cmd += [flag if v else "--no-" + flag[2:]] if isinstance(v, bool) else [flag, str(v)]
    return shlex.join(cmd)


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
        write_video(torch.stack([tile(videos[:, :, i], nrow, scale, even=True) for i in range(t)]), out, meta.get("fps", fps))
        folder = out.with_suffix("")
        folder.mkdir(exist_ok=True)
        singles = [str(write_video(torch.stack([tile(v[None, :, i], 1, scale, even=True) for i in range(t)]), folder / f"{k:04d}{out.suffix}", fps))
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
    meta = {"checkpoint": str(pipe.path.resolve()), "model": pipe.describe(), "images": args.image, "captions": captions}
    if args.out != "samples.png":
        Path(args.out).with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return meta


class Progress:
    """A tqdm bar fed by the generator's ``callback(step, total, tokens)``; by default on a terminal, after 1 s (short runs stay quiet)."""

    def __init__(self, enabled: bool | None = None, file=None) -> None:
        self.enabled, self.file, self.bar = enabled, file or sys.stderr, None

    def __call__(self, step: int, total: int, tokens=None) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="step", desc="sampling", delay=1.0 if self.enabled is None else 0, file=self.file,
                            disable=None if self.enabled is None else not self.enabled, dynamic_ncols=True)
        if self.bar.total != total:
            self.bar.reset(total=total)  # a new batch chunk starts
        self.bar.n = step
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _prompts(args: argparse.Namespace) -> list[str] | None:
    if not args.prompt:
        return None
    for p in args.prompt:
        if not p.strip():
            raise ValueError("the prompt is empty: describe the picture, e.g. --prompt 'a large red circle at the top left'")
    return [p for p in args.prompt for _ in range(args.n)]


def run(args: argparse.Namespace) -> dict:
    import mmgen

    if args.n < 1 or args.n > 4096:
        raise ValueError(f"--n must be in [1, 4096], got {args.n}")
    if args.fps <= 0 or args.scale < 1:
        raise ValueError(f"--fps must be > 0 and --scale >= 1, got {args.fps}, {args.scale}")
    prompts = _prompts(args)
    pipe = mmgen.load(args.ckpt, device=args.device)
    if getattr(args, "image", None):
        return _caption(pipe, args)
    frames = pipe.check_frames(args.frames)
    _check_out(args.out, frames is not None)
    sampler = sampler_from_args(args, pipe.sampler, pipe.path)
    labels = [lab for lab in args.label for _ in range(args.n)] if args.label else None
    if args.precision == "bf16":
        warn_if_slow_bf16(pipe.generator.device, "--precision bf16")
    progress = Progress(args.progress)
    t0 = time.perf_counter()
    try:
        with torch.autocast(pipe.generator.device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            images = pipe(prompt=prompts, label=labels, n=args.n, sampler=sampler, negative_prompt=args.negative_prompt, callback=progress,
                          **({} if frames is None else {"frames": frames}))
    finally:
        progress.close()
    seconds = time.perf_counter() - t0
    meta = {
        "checkpoint": str(pipe.path.resolve()),
        "model": pipe.describe(),
        "prompts": prompts,
        "labels": labels,
        "negative_prompt": args.negative_prompt,
        "sampler": asdict(sampler),
        "precision": args.precision,
        "num_images": len(images),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(images) / seconds, 3),
    }
    if frames is not None:
        meta.update(frames=frames, fps=args.fps, frames_per_second=round(len(images) * frames / seconds, 3))
        meta_path = _write(save_videos, images, args.out, meta, args.nrow, args.fps, args.scale)
        print(f"wrote {args.out} ({len(images)} clips of {frames} frames, {seconds:.2f}s) and {meta_path}")
        return meta
    meta_path = _write(save_samples, images, args.out, meta, args.nrow)
    print(f"wrote {args.out} ({len(images)} images, {seconds:.2f}s) and {meta_path}")
    return meta


def _write(save, images: torch.Tensor, out: str, *args) -> Path:
    """Save the results; a read-only folder or a full disk is one message naming the output, not a traceback."""
    try:
        return save(images, out, *args)
    except OSError as e:
        raise OSError(f"cannot write the samples to {out!r}: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")) from None
