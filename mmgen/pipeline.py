"""A generation pipeline: tokenizer + generator loaded from one folder.

Layout of a pipeline folder::

    runs/x/model/
        config.json, model.safetensors          # the generator
        tokenizer/config.json, model.safetensors  # the (frozen) visual tokenizer

``mmgen.load("runs/x/model")(prompt="a red circle at the top left", n=4)`` returns images.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from mmgen.modeling import atomic_dir, load_module, read_config
from mmgen.sampling import SamplerConfig

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

    def describe(self) -> dict[str, Any]:
        """Paradigm, tokenizer, size: what a model picker shows."""
        return {
            "generator": type(self.generator).__name__,
            "tokenizer": type(self.tokenizer).__name__,
            "cond": self.config.cond,
            "params": self.generator.num_params(),
            "image_size": self.config.image_size,
            "forward_passes": self.generator.forward_passes(),
        }

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
        **sampler_kw: Any,
    ) -> torch.Tensor:
        """Generate images as uint8 ``(n, 3, H, W)``; ``sampler_kw`` are SamplerConfig fields."""
        sampler = sampler or SamplerConfig(**sampler_kw)
        cond = self.condition(prompt, label, n)
        out = []
        for start in range(0, cond.batch_size, batch_size):
            part = cond.slice(start, start + batch_size)
            negative = None
            if negative_prompt is not None:
                negative = self.generator.make_condition(prompts=[negative_prompt] * part.batch_size)
            # each chunk gets its own seed offset so chunking never repeats samples
            chunk_sampler = replace(sampler, seed=sampler.seed + start)
            tokens = self.generator.generate(part, chunk_sampler, callback=callback, negative=negative)
            out.append(to_uint8(self.tokenizer.decode(tokens)).cpu())
        return torch.cat(out)
