"""A generation pipeline: tokenizer + generator + recommended sampler settings, loaded from one folder.

Layout of a pipeline folder (a Hub model repo holds the same files)::

    shapes-var/
        config.json, model.safetensors             # the generator
        tokenizer/config.json, model.safetensors   # the (frozen) visual tokenizer
        sampler.json                               # recommended SamplerConfig fields (optional)
        sampler_presets.json                       # named settings, e.g. {"paper": {...}} (optional; --preset)
        README.md                                  # model card, generated (mmgen.model_card)

``mmgen.load("shapes-var")(prompt="a red circle at the top left", n=4)`` returns images sampled
with the folder's ``sampler.json``; keyword arguments override single fields. A video model
(frames layout) returns clips ``(n, 3, T, H, W)`` and takes ``frames=``; a unified model also
captions images (``pipe.caption(images)``). Hub support (``push_to_hub``, repo ids in
``from_pretrained``) is ``huggingface_hub``'s ``ModelHubMixin``.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from huggingface_hub import ModelHubMixin, snapshot_download

from mmgen.images import from_uint8, to_uint8
from mmgen.model_card import DOC_FILES, model_card
from mmgen.modeling import atomic_dir, load_module, read_config
from mmgen.sampler import SamplerConfig
from mmgen.tokens import FramesLayout

__all__ = ["Pipeline", "save_pipeline", "export_pipeline", "recommended_sampler", "sampler_fields", "to_uint8", "SAMPLER_FILE", "SAMPLER_PRESETS_FILE", "SAMPLER_FIELDS"]

TOKENIZER_DIR = "tokenizer"
SAMPLER_FILE = "sampler.json"
SAMPLER_PRESETS_FILE = "sampler_presets.json"  # {"name": {SamplerConfig fields}}: `mmgen sample --preset name`
SAMPLER_FIELDS = tuple(f.name for f in fields(SamplerConfig))
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the Hub spells it


def recommended_sampler(folder: str | Path, preset: str | None = None) -> SamplerConfig:
    """The folder's recommended sampler settings (``sampler.json``) over SamplerConfig's defaults.

    The one reader of ``sampler.json``: the API, the CLI, the demo and the benchmarks all sample
    with what this returns. ``preset`` picks a named entry of ``sampler_presets.json`` instead
    (converted official checkpoints have ``paper`` and ``demo``). Unknown keys are an error (a typo
    would otherwise be ignored).
    """
    f = Path(folder) / (SAMPLER_PRESETS_FILE if preset is not None else SAMPLER_FILE)
    if not f.is_file():
        if preset is not None:
            raise ValueError(f"--preset {preset!r}: {Path(folder)} has no {SAMPLER_PRESETS_FILE} (only converted or exported folders with presets have one)")
        return SamplerConfig()
    data = _json_object(f)
    if preset is not None:
        if preset not in data:
            raise ValueError(f"--preset {preset!r} is not in {f}; available: {sorted(data)}")
        data = data[preset]
        if not isinstance(data, dict):
            raise ValueError(f"{f}: preset {preset!r} must be a JSON object of SamplerConfig fields, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SAMPLER_FIELDS))
    if unknown:
        raise ValueError(f"{f} has unknown sampler field(s) {unknown}; allowed: {list(SAMPLER_FIELDS)}")
    try:
        return SamplerConfig(**data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{f}: {e}") from None


def _json_object(f: Path) -> dict:
    try:
        data = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{f} must hold a JSON object, got {type(data).__name__}")
    return data


def sampler_fields(generator: Any) -> tuple[str, ...]:
    """SamplerConfig fields a generator (class or instance) uses: its ``sampler_fields``, else all; seed always."""
    cls = generator if isinstance(generator, type) else type(generator)
    used = getattr(cls, "sampler_fields", None)
    return SAMPLER_FIELDS if used is None else tuple(f for f in SAMPLER_FIELDS if f in used or f == "seed")


def save_pipeline(path: str | Path, generator, tokenizer, extra: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write generator + tokenizer (+ a model card) into one folder, atomically; ``Pipeline.save_pretrained`` adds sampler.json."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        generator.write_files(tmp, dtype=dtype, extra=extra)
        tokenizer.write_files(tmp / TOKENIZER_DIR, dtype=dtype)
        (tmp / "README.md").write_text(model_card(tmp, name=path.name))
    return path


def export_pipeline(src: str | Path, dst: str | Path, dtype: torch.dtype | None = torch.float16, sampler: dict[str, Any] | None = None,
                    tokenizer: str | Path | None = None) -> Path:
    """Copy a trained pipeline into a small shippable folder (e.g. fp16 weights + recommended sampler + model card).

    ``tokenizer``: ship this tokenizer folder instead of the pipeline's own (see :meth:`Pipeline.with_tokenizer`).
    """
    pipe = Pipeline.from_pretrained(src)
    if tokenizer is not None:
        pipe = pipe.with_tokenizer(tokenizer)
    if sampler:
        pipe.sampler = replace(pipe.sampler, **sampler)
    return pipe.save_pretrained(dst, dtype=dtype)


def _offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


class Pipeline(ModelHubMixin, library_name="mmgen", tags=["mmgen"]):
    """Generator + tokenizer + ``sampler`` (the recommended SamplerConfig every call starts from)."""

    def __init__(self, generator, tokenizer, path: str | Path | None = None, sampler: SamplerConfig | None = None) -> None:
        self.generator = generator.eval()
        self.tokenizer = tokenizer.eval()
        self.generator.bind_tokenizer(tokenizer)
        self.path = None if path is None else Path(path)
        self.sampler = sampler if sampler is not None else SamplerConfig()

    # --- loading and saving -----------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, device: str | torch.device = "cpu", *, revision: str | None = None,
                        cache_dir: str | Path | None = None, local_files_only: bool = False, token: str | bool | None = None,
                        force_download: bool = False) -> "Pipeline":
        """A pipeline from a folder, or from a Hub repo id (``owner/name``) through huggingface_hub's cache.

        With ``HF_HUB_OFFLINE=1`` (the ``mmgen`` CLI's default) or ``local_files_only`` a repo id
        loads only from the cache (``cache_dir``, default ``HF_HUB_CACHE``); nothing is downloaded.
        """
        path = Path(path_or_repo_id)
        if path.is_dir() or not _REPO_ID.match(str(path_or_repo_id)):
            return cls._from_folder(path, device)
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

        offline = local_files_only or _offline()
        try:
            return super().from_pretrained(str(path_or_repo_id), revision=revision, cache_dir=cache_dir, local_files_only=offline,
                                           token=token, force_download=force_download, device=device)
        except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError) as e:
            from huggingface_hub.constants import HF_HUB_CACHE

            where = f"a local folder nor in the Hugging Face cache ({cache_dir or HF_HUB_CACHE})"
            if offline:
                why = "HF_HUB_OFFLINE=1 (or local_files_only) forbids downloading it; set HF_HUB_OFFLINE=0 to download it"
            else:
                why = f"the Hub did not serve it ({str(e).splitlines()[0][:200]}); offline use needs it in the cache (HF_HUB_OFFLINE)"
            raise FileNotFoundError(f"{str(path_or_repo_id)!r} is neither {where}: {why}") from None

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None, force_download: bool,
                         local_files_only: bool, token: str | bool | None, device: str | torch.device = "cpu", **_: Any) -> "Pipeline":
        """ModelHubMixin's hook: the whole repo snapshot (weights, tokenizer/, sampler.json) into the cache, then load it."""
        folder = snapshot_download(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                                   local_files_only=local_files_only, token=token)
        return cls._from_folder(Path(folder), device)

    @classmethod
    def _from_folder(cls, path: Path, device: str | torch.device = "cpu") -> "Pipeline":
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint folder {str(path)!r} does not exist")
        if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
            path = path / "model"  # a training run folder: use its exported model
        meta = read_config(path)
        if meta.get("kind") != "generator":
            raise ValueError(f"{path} holds a {meta.get('kind', 'unknown')} ({meta.get('class')}), not a generator pipeline")
        if not (path / TOKENIZER_DIR).is_dir():
            raise FileNotFoundError(f"{path} has no {TOKENIZER_DIR}/ folder: a pipeline needs its tokenizer")
        sampler = recommended_sampler(path)  # before the weights: a bad sampler.json fails fast
        gen = load_module(path).to(device)
        tok = load_module(path / TOKENIZER_DIR).to(device)
        return cls(gen, tok, path, sampler)

    def save_pretrained(self, save_directory: str | Path, *, dtype: torch.dtype | None = None, push_to_hub: bool = False,
                        repo_id: str | None = None, config: Any = None, model_card_kwargs: dict | None = None, **push_kw: Any) -> Path:
        """Write the pipeline folder atomically: weights (in ``dtype``, default as loaded in memory),
        ``sampler.json`` (``self.sampler``), the source folder's REPRODUCE.md / metrics.json, and a model card.

        ``config`` is ModelHubMixin's argument and unused (each module's config.json is the config).
        """
        path = Path(save_directory)
        name = (model_card_kwargs or {}).get("name") or path.name
        with atomic_dir(path) as tmp:
            self.generator.write_files(tmp, dtype=dtype)
            self.tokenizer.write_files(tmp / TOKENIZER_DIR, dtype=dtype)
            (tmp / SAMPLER_FILE).write_text(json.dumps(asdict(self.sampler), indent=2))
            for doc in (*DOC_FILES, SAMPLER_PRESETS_FILE) if self.path is not None else ():
                if (self.path / doc).is_file():
                    shutil.copyfile(self.path / doc, tmp / doc)
            (tmp / "README.md").write_text(model_card(tmp, name=name))
        if push_to_hub:
            self.push_to_hub(repo_id or path.name, **push_kw)
        return path

    def with_tokenizer(self, tokenizer: str | Path, min_agreement: float = 0.99) -> "Pipeline":
        """This generator over another tokenizer folder that gives the same ids (e.g. one whose decoder alone was
        fine-tuned on the frozen encoder). The generator only knows the old ids, so both tokenizers encode one seeded
        batch of random images and ``min_agreement`` of the ids must agree (an fp16 copy flips a few borderline codes)."""
        if self.is_video:
            raise ValueError("with_tokenizer compares image encodings; a video tokenizer is not supported")
        device = self.generator.device
        new = load_module(tokenizer).to(device).eval()
        swapped = Pipeline(copy.deepcopy(self.generator), new, self.path, self.sampler)  # a copy: binding must not touch ours
        side = self.config.image_size
        x = torch.rand((16, 3, side, side), generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
        with torch.no_grad():
            old_ids, new_ids = self.tokenizer.encode(x).ids, new.encode(x).ids
        agree = (old_ids == new_ids).float().mean().item()  # same shapes: Pipeline() above checked the layout
        if agree < min_agreement:
            raise ValueError(f"tokenizer {str(tokenizer)!r} gives other ids than the one this generator was trained on "
                             f"({agree:.1%} agree, need {min_agreement:.0%}): its generator would read the wrong codes")
        return swapped

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload the pipeline folder to the Hub repo ``repo_id`` (ModelHubMixin: ``create_repo`` + ``upload_folder``)."""
        card = {"name": repo_id, **(kwargs.pop("model_card_kwargs", None) or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=card, **kwargs)

    # --- what it is -------------------------------------------------------------------------

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

    @property
    def sampler_fields(self) -> tuple[str, ...]:
        """The SamplerConfig fields this model's generator uses."""
        return sampler_fields(self.generator)

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

    def sampler_for(self, sampler: SamplerConfig | None = None, **overrides: Any) -> SamplerConfig:
        """The settings a call samples with: ``sampler`` (default: the recommended ``self.sampler``) with ``overrides`` applied."""
        base = self.sampler if sampler is None else sampler
        if not isinstance(base, SamplerConfig):
            raise TypeError(f"sampler must be a SamplerConfig, got {type(base).__name__}")
        unknown = sorted(set(overrides) - set(SAMPLER_FIELDS))
        if unknown:
            raise TypeError(f"unknown sampler setting(s) {unknown}; SamplerConfig fields: {list(SAMPLER_FIELDS)}")
        return replace(base, **overrides) if overrides else base

    # --- generation -------------------------------------------------------------------------

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

        Settings: ``sampler`` (default: the folder's recommended ``self.sampler``) with any
        SamplerConfig field given as a keyword on top, e.g. ``pipe(prompt, sampler=s, cfg_scale=5)``.
        ``frames`` (video models; default: the model's clip length) is the number of frames; for a
        unified model ``frames=1`` is text-to-image.
        """
        sampler = self.sampler_for(sampler, **sampler_kw)
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
        pixels = from_uint8(images)
        out: list[str] = []
        for start in range(0, len(pixels), batch_size):
            tokens = self.tokenizer.encode(pixels[start : start + batch_size].to(self.generator.device))
            out += self.generator.caption(tokens, sampler, constraint=constrained)
        return out
