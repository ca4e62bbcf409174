"""What happens when the page asks for samples: validate, generate while streaming, record settings.

Independent of gradio, so it is unit-tested directly; ``demo.py`` only maps these updates onto
components. Every bad value becomes an ``InputError`` whose message names the value and the
allowed range (design.md §6), which the page shows; nothing a user types can crash the server.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from mmgen.app import grammar
from mmgen.app.models import InputError, ModelInfo, ModelRegistry, without_paths
from mmgen.app.streaming import Done, Partial, stream_pipeline
from mmgen.images import tile, write_video
from mmgen.pipeline import SAMPLER_FIELDS
from mmgen.sample.cli import reproduce_command
from mmgen.sampler import CFG_SCHEDULES, SamplerConfig

__all__ = ["Request", "Update", "Limits", "validate", "generate", "settings_record", "grid", "write_gif", "write_mp4", "settings_file", "save_png",
           "display_scale", "prune", "page_defaults", "user_message", "checkpoint_name"]
_WORDING = {"cfg_scale": "CFG scale", "cfg_schedule": "CFG schedule", "cfg_power": "CFG power", "top_k": "top-k", "top_p": "top-p",
            "flow_steps": "flow steps", "flow_solver": "flow solver", "flow_context_t": "context noise", "token_budget": "token budget", "static_cache": "static cache"}


def user_message(error: BaseException | str) -> str:
    """An error as the page shows it: settings by their labels, never a field name or a file path."""
    text = str(error)
    for field_name, label in _WORDING.items():
        text = text.replace(field_name, label)
    return without_paths(text)


@dataclass
class Limits:
    """Bounds a public page enforces beyond SamplerConfig's own checks (cost and sanity)."""

    max_samples: int = 64
    max_video_samples: int = 16
    max_frames: int = 64
    max_prompt_chars: int = 500
    max_temperature: float = 10.0
    max_cfg: float = 50.0
    max_flow_steps: int = 1000


@dataclass
class Request:
    """One click of "Generate": exactly the page's controls."""

    model: str | None
    prompt: str | None = ""
    negative_prompt: str | None = ""
    label: Any = None
    seed: Any = 0
    n: Any = 4
    cfg_scale: Any = 1.0
    cfg_schedule: Any = "constant"
    temperature: Any = 1.0
    top_k: Any = 0
    top_p: Any = 1.0
    flow_steps: Any = 25
    token_budget: Any = 0
    frames: Any = None  # video only


@dataclass
class Update:
    """One message to the page: a partial/final image, progress, and at the end the settings."""

    step: int
    total: int
    images: np.ndarray | None  # (B,H,W,3) or (B,T,H,W,3) uint8; None = progress only
    final: bool = False
    settings: dict | None = None

    @property
    def status(self) -> str:
        if self.final:
            s = self.settings or {}
            return f"done: {s.get('num_images', '?')} sample(s) in {s.get('seconds', 0):.2f}s"
        return f"generating: step {self.step}/{self.total} ({100 * self.step // max(self.total, 1)}%)"


def _number(name: str, value: Any, integer: bool = False, lo: float | None = None, hi: float | None = None) -> Any:
    """A finite number (an integer if asked) within [lo, hi], or an InputError naming it and the allowed range."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"the {name} is required")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"the {name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise InputError(f"the {name} must be a finite number, got {value!r}")
    if integer:
        if x != int(x):
            raise InputError(f"the {name} must be a whole number, got {value!r}")
        x = int(x)
    if lo is not None and hi is not None and not lo <= x <= hi:
        raise InputError(f"the {name} must be between {_fmt(lo)} and {_fmt(hi)}, got {_fmt(x)}")
    if lo is not None and x < lo:
        raise InputError(f"the {name} must be at least {_fmt(lo)}, got {_fmt(x)}")
    if hi is not None and x > hi:
        raise InputError(f"the {name} must be at most {_fmt(hi)}, got {_fmt(x)}")
    return x


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _check_text(pipe: Any, text: str, what: str, limits: Limits, info: ModelInfo) -> None:
    if len(text) > limits.max_prompt_chars:
        raise InputError(f"the {what} is {len(text)} characters long; at most {limits.max_prompt_chars}")
    if info.grammar:  # first: it names the first word that does not fit and the allowed words
        _check_grammar(text, what, info)
    make = getattr(getattr(pipe, "generator", None), "make_condition", None)
    if make is None:  # not a standard pipeline: it reports bad text itself while generating
        return
    try:  # the model's own tokenizer: unknown words and prompts longer than its context
        make(prompts=[text], batch_size=1)
    except ValueError as e:  # the model's message names a long text by its start and length (mmgen.text.short_text)
        raise InputError(str(e) if str(e).startswith(what) else f"the {what}: {e}") from None


def _check_grammar(text: str, what: str, info: ModelInfo) -> None:
    try:
        grammar.check_prompt(text, video=info.video)
    except InputError as e:
        raise InputError(str(e) if what == "prompt" else f"the {what}: {e}") from None


def validate(req: Request, info: ModelInfo, pipe: Any = None, limits: Limits | None = None) -> tuple[SamplerConfig, dict]:
    """Check every control; return the sampler and the pipeline keyword arguments."""
    lim = limits or Limits()
    max_n = lim.max_video_samples if info.video else lim.max_samples
    n = _number("number of samples", req.n, integer=True, lo=1, hi=max_n)
    seed = _number("seed", req.seed, integer=True, lo=0, hi=2**32 - 1)
    if req.cfg_schedule not in CFG_SCHEDULES:
        raise InputError(f"the CFG schedule must be one of {', '.join(CFG_SCHEDULES)}, got {req.cfg_schedule!r}")
    top_p = _number("top-p", req.top_p)
    if not 0 < top_p <= 1:
        raise InputError(f"top-p must be above 0 and at most 1 (1 = off), got {req.top_p!r}")
    rec = info.recommended  # the page's controls over the checkpoint's sampler.json: fields the page lacks keep it
    try:
        sampler = replace(
            rec,
            temperature=_number("temperature", req.temperature, lo=0, hi=lim.max_temperature),
            top_k=_number("top-k", req.top_k, integer=True, lo=0, hi=10**6),
            top_p=top_p,
            cfg_scale=_number("CFG scale", req.cfg_scale, lo=0, hi=lim.max_cfg),
            cfg_schedule=req.cfg_schedule,
            flow_steps=_number("flow steps", req.flow_steps, integer=True, lo=1, hi=lim.max_flow_steps) if info.flow else rec.flow_steps,
            token_budget=_number("token budget", req.token_budget, integer=True, lo=0, hi=10**6) if info.flextok else rec.token_budget,
            seed=seed,
        )
        # a control this model does not use keeps the recommended value (the model would refuse a changed one)
        sampler = replace(sampler, **{f: getattr(rec, f) for f in SAMPLER_FIELDS if f not in (info.sampler_fields or SAMPLER_FIELDS)})
    except ValueError as e:  # SamplerConfig's own message names the value and the allowed range
        raise InputError(user_message(e)) from None
    kwargs: dict[str, Any] = {"n": n}
    if info.cond == "text":
        prompt = (req.prompt or "").strip()
        if not prompt:
            raise InputError("the prompt is empty: describe the picture, e.g. 'a large red circle at the top left'")
        negative = (req.negative_prompt or "").strip()
        if pipe is not None:
            _check_text(pipe, prompt, "prompt", lim, info)
            if negative:
                _check_text(pipe, negative, "negative prompt", lim, info)
        kwargs.update(prompt=prompt, negative_prompt=negative or None)
    elif info.cond == "class":
        kwargs["label"] = _number("class label", req.label, integer=True, lo=0, hi=info.num_classes - 1)
    if info.video:
        kwargs["frames"] = _number("frames", req.frames if req.frames is not None else info.frames or 8, integer=True, lo=1, hi=lim.max_frames)
    return sampler, kwargs


def page_defaults(info: ModelInfo) -> dict[str, Any]:
    """What the page's sampler controls show for a model: its recommended settings (sampler.json)."""
    return asdict(info.recommended)


def settings_record(info: ModelInfo, sampler: SamplerConfig, kwargs: dict, images: torch.Tensor, seconds: float) -> dict:
    """The exact settings of a result, with the ``mmgen sample`` command that reproduces it (image and video)."""
    ckpt = checkpoint_name(info)
    cmd = reproduce_command(ckpt, sampler, info.sampler_fields or tuple(asdict(sampler)), prompt=kwargs.get("prompt"), label=kwargs.get("label"),
                            negative_prompt=kwargs.get("negative_prompt"), n=kwargs["n"], frames=kwargs.get("frames"))
    return {
        "model": info.name,
        "checkpoint": ckpt,
        "paradigm": info.paradigm,
        "generator": info.generator,
        "tokenizer": info.tokenizer,
        "params": info.params,
        "task": "text-to-video" if info.video else ("class-to-image" if info.cond == "class" else "text-to-image"),
        **{k: kwargs.get(k) for k in ("prompt", "negative_prompt", "label", "frames") if k in kwargs},
        "n": kwargs["n"],
        "sampler": asdict(sampler),
        "output_shape": list(images.shape),
        "num_images": int(images.shape[0]),
        "seconds": round(seconds, 3),
        "command": cmd,
    }


def checkpoint_name(info: ModelInfo) -> str:
    """The checkpoint as the reproduce command names it: relative to the working folder, else models-folder/name (never absolute)."""
    rel = os.path.relpath(info.path)
    return rel if not rel.startswith("..") else f"{info.path.parent.name}/{info.path.name}" if info.name == info.path.name else info.name


def grid(images: torch.Tensor | np.ndarray, scale: int = 1) -> np.ndarray:
    """uint8 ``(B,3,H,W)`` -> one HWC picture of the samples, nearest-upscaled (``mmgen.images.tile``)."""
    x = torch.as_tensor(images)
    return tile(x, nrow=math.ceil(math.sqrt(len(x))), scale=scale, pad_value=40).numpy()


def display_scale(image_size: int, target: int = 128) -> int:
    """Integer upscaling so tiny samples (32 px) are visible on the page."""
    return max(1, target // max(image_size, 1))


def write_gif(video: torch.Tensor, folder: str | Path, scale: int = 1, fps: int = 4) -> Path:
    """uint8 ``(B,3,T,H,W)`` -> one animated GIF of the sample grid under a fresh name (``mmgen.images.write_video``)."""
    frames = torch.stack([torch.from_numpy(grid(video[:, :, t], scale)) for t in range(video.shape[2])])
    fd, name = tempfile.mkstemp(suffix=".gif", prefix="mmgen-", dir=folder)
    os.close(fd)
    return write_video(frames, name, fps=fps)


def write_mp4(video: torch.Tensor, folder: str | Path, scale: int = 1, fps: int = 4) -> Path:
    """uint8 ``(B,3,T,H,W)`` -> an H.264 MP4 of the sample grid (even sides), playable in any browser."""
    nrow = math.ceil(math.sqrt(len(video)))
    frames = torch.stack([tile(video[:, :, t], nrow=nrow, scale=scale, pad_value=40, even=True) for t in range(video.shape[2])])
    fd, name = tempfile.mkstemp(suffix=".mp4", prefix="mmgen-", dir=folder)
    os.close(fd)
    return write_video(frames, name, fps=fps)


def _to_numpy(images: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) -> (B,H,W,3); (B,3,T,H,W) -> (B,T,H,W,3)."""
    return images.movedim(1, -1).contiguous().numpy()


def generate(registry: ModelRegistry, req: Request, video: bool = False, limits: Limits | None = None, min_interval: float = 0.1,
             image_interval: float = 0.0) -> Iterator[Update]:
    """Validate, then yield partial updates in step order and one final update with the settings.

    Raises:
        InputError: anything wrong with the request or the checkpoint (the message is for the user).
    """
    info = registry.info(req.model)
    if info.video != video:
        want = "video" if video else "image"
        raise InputError(f"the model {info.name!r} does not make {want}s; pick one from this tab's list")
    validate(req, info, None, limits)  # cheap checks before any weights are loaded
    pipe = registry.get(info.name)
    sampler, kwargs = validate(req, info, pipe, limits)
    try:
        for item in stream_pipeline(pipe, sampler=sampler, min_interval=min_interval, image_interval=image_interval, **kwargs):
            if isinstance(item, Partial):
                yield Update(item.step, item.total, None if item.images is None else _to_numpy(item.images))
            elif isinstance(item, Done):
                settings = settings_record(info, sampler, kwargs, item.images, item.seconds)
                yield Update(1, 1, _to_numpy(item.images), final=True, settings=settings)
    except ValueError as e:  # the pipeline's own checks (design.md §6: they name the bad value)
        raise InputError(user_message(e)) from None


def save_png(image: np.ndarray, folder: str | Path) -> str:
    """An HWC uint8 image as a PNG under a fresh name.

    The page gets files, not arrays: gradio writes arrays to a cache path named by their content
    and rewrites it in place, so two concurrent requests with identical pictures (common on a
    low-diversity model) could serve a half-written file. Copying a file into its cache is atomic.
    """
    from PIL import Image

    fd, name = tempfile.mkstemp(suffix=".png", prefix="mmgen-", dir=folder)
    with os.fdopen(fd, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")
    return name


def settings_file(settings: dict, folder: str | Path) -> Path:
    """The settings as a downloadable JSON file (a fresh name per result)."""
    fd, name = tempfile.mkstemp(suffix=".json", prefix="mmgen-settings-", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(settings, f, indent=2)
    return Path(name)


def prune(folder: str | Path, max_age_s: float = 600) -> None:
    """Delete result files older than ``max_age_s`` (gradio keeps its own copy), so disk stays bounded."""
    now = time.time()
    for p in Path(folder).glob("mmgen-*"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                p.unlink()
        except OSError:
            pass
