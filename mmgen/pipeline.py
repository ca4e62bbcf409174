"""A generation pipeline: tokenizer + generator loaded from one folder.

Layout of a pipeline folder::

    runs/x/model/
        config.json, model.safetensors          # the generator
        tokenizer/config.json, model.safetensors  # the (frozen) visual tokenizer

``mmgen.load("runs/x/model")(prompt="a red circle at the top left", n=4)`` returns images; a video
model (frames layout) returns clips ``(n, 3, T, H, W)`` and takes ``frames=``; a unified model also
captions images (``pipe.caption(images)``).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from mmgen.modeling import atomic_dir, load_module, read_config
from mmgen.sampling import SamplerConfig
from mmgen.tokens import FramesLayout

__all__ = ["Pipeline", "save_pipeline", "export_pipeline", "to_uint8"]

TOKENIZER_DIR = "tokenizer"


def save_pipeline(path: str | Path, generator, tokenizer, extra: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write generator + tokenizer into one folder, atomically."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        generator.write_files(tmp, dtype=dtype, extra=extra)
        tokenizer.write_files(tmp / TOKENIZER_DIR, dtype=dtype)
    return path


def export_pipeline(src: str | Path, dst: str | Path, dtype: torch.dtype | None = torch.float16, sampler: dict[str, Any] | None = None) -> Path:
    """Copy a trained pipeline into a small shippable folder (e.g. fp16 weights + recommended sampler)."""
    pipe = Pipeline.from_pretrained(src)
    dst = Path(dst)
    save_pipeline(dst, pipe.generator, pipe.tokenizer, dtype=dtype)
    if sampler:
        (dst / "sampler.json").write_text(json.dumps(sampler, indent=2))
    return dst


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` floats -> uint8 in ``[0, 255]``."""
    return ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class Pipeline:
    def __init__(self, generator, tokenizer, path: str | Path | None = None) -> None:
        self.generator = generator.eval()
        self.tokenizer = tokenizer.eval()
        self.generator.bind_tokenizer(tokenizer)
        self.path = None if path is None else Path(path)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "Pipeline":
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint folder {str(path)!r} does not exist")
        if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
            path = path / "model"  # a training run folder: use its exported model
        meta = read_config(path)
        if meta.get("kind") != "generator":
            raise ValueError(f"{path} holds a {meta.get('kind', 'unknown')} ({meta.get('class')}), not a generator pipeline")
        if not (path / TOKENIZER_DIR).is_dir():
            raise FileNotFoundError(f"{path} has no {TOKENIZER_DIR}/ folder: a pipeline needs its tokenizer")
        gen = load_module(path).to(device)
        tok = load_module(path / TOKENIZER_DIR).to(device)
        return cls(gen, tok, path)

    @property
    def config(self):
        return self.generator.config

    @property
    def is_video(self) -> bool:
        return isinstance(self.generator.layout, FramesLayout)

    @property
    def max_frames(self) -> int:
        """Longest clip a video model makes (its training clip length); 0 for image models."""
        return int(getattr(self.config, "frames", 0) or self.generator.layout.t) if self.is_video else 0

    def describe(self) -> dict[str, Any]:
        """Paradigm, tokenizer, size: what a model picker shows."""
        out = {
            "generator": type(self.generator).__name__,
            "tokenizer": type(self.tokenizer).__name__,
            "cond": self.config.cond,
            "params": self.generator.num_params(),
            "image_size": self.config.image_size,
            "forward_passes": self.generator.forward_passes(),
        }
        if self.is_video:
            out["frames"] = self.max_frames
        return out

    def check_frames(self, frames: int | None) -> int | None:
        """The clip length to generate (video models), validated; None for image models."""
        if not self.is_video:
            if frames not in (None, 1):
                raise ValueError(f"this model ({type(self.generator).__name__}) generates images; frames={frames} is only for video models")
            return None
        top = self.max_frames
        if frames is None:
            return top
        if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= top:
            raise ValueError(f"frames={frames!r} is not supported by this model: it generates clips of 1 to {top} frames")
        return frames

    def condition(self, prompt: str | Sequence[str] | None = None, label: int | Sequence[int] | None = None, n: int = 1):
        """Expand a single prompt/label to ``n`` samples, or use a list as given."""
        if isinstance(prompt, str):
            prompt = [prompt] * n
        if isinstance(label, int):
            label = [label] * n
        return self.generator.make_condition(prompts=prompt, labels=label, batch_size=n)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str] | None = None,
        label: int | Sequence[int] | None = None,
        n: int = 1,
        sampler: SamplerConfig | None = None,
        callback=None,
        negative_prompt: str | None = None,
        batch_size: int = 64,
        frames: int | None = None,
        **sampler_kw: Any,
    ) -> torch.Tensor:
        """Generate images as uint8 ``(n, 3, H, W)`` or, from a video model, clips ``(n, 3, frames, H, W)``.

        ``frames`` (video models; default: the model's clip length) is the number of frames; for a
        unified model ``frames=1`` is text-to-image. ``sampler_kw`` are SamplerConfig fields.
        """
        sampler = sampler or SamplerConfig(**sampler_kw)
        frames = self.check_frames(frames)
        video_kw = {} if frames is None else {"latent_frames": self.tokenizer.latent_frames(frames)}
        cond = self.condition(prompt, label, n)
        out = []
        for start in range(0, cond.batch_size, batch_size):
            part = cond.slice(start, start + batch_size)
            negative = None
            if negative_prompt is not None:
                negative = self.generator.make_condition(prompts=[negative_prompt] * part.batch_size)
            # each chunk gets its own seed offset so chunking never repeats samples
            chunk_sampler = replace(sampler, seed=sampler.seed + start)
            tokens = self.generator.generate(part, chunk_sampler, callback=callback, negative=negative, **video_kw)
            pixels = self.tokenizer.decode(tokens) if frames is None else self.tokenizer.decode(tokens, frames=frames)
            out.append(to_uint8(pixels).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def caption(self, images: torch.Tensor, sampler: SamplerConfig | None = None, constrained: bool = True, batch_size: int = 64) -> list[str]:
        """Image -> text with a unified model: ``images`` uint8 ``(B,3,H,W)`` or float in [-1, 1].

        ``constrained`` holds the text to the ``shapes`` caption grammar.
        """
        if not hasattr(self.generator, "caption"):
            raise ValueError(f"{type(self.generator).__name__} does not caption images; a unified model (e.g. emu3-*) does")
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images).__name__)}")
        pixels = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
        out: list[str] = []
        for start in range(0, len(pixels), batch_size):
            tokens = self.tokenizer.encode(pixels[start : start + batch_size].to(self.generator.device))
            out += self.generator.caption(tokens, sampler, constraint=constrained)
        return out
