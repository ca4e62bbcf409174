"""What every generator shares: config fields, conditioning, tokenizer binding, batch preparation,
the sampler contract and ``generate`` (the one decode loop of ``decoding.py``).

A generator is "tokens, grouped, ordered, masked, predicted" (design.md §2): subclasses choose a
schedule (groups, mask, positions) and a step (head -> next group) in ``decode_schedule``, and
inherit the rest from here.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, ClassVar, Literal, Sequence

import torch
from torch import nn

from mmgen.modeling import ConfigModule
from mmgen.models.decoding import Decode, decode
from mmgen.nn.transformer import TransformerConfig
from mmgen.sampler import DECODING_FIELDS, SamplerConfig
from mmgen.text import TextTokenizer
from mmgen.tokens import FramesLayout, Layout, Tokens, layout_from_dict

__all__ = ["GeneratorConfig", "Condition", "CondEmbedder", "Generator", "tokenizer_overrides", "takes_progress", "Callback"]

Callback = Callable[[int, int, Tokens], None]  # (step, total_steps, partial tokens)


@dataclass
class GeneratorConfig:
    vocab_size: int = 512
    layout: dict = field(default_factory=lambda: {"type": "grid", "h": 8, "w": 8})
    token_dim: int = 8  # dimension of the tokenizer's code vectors (VAR feeds them back in)
    image_size: int = 32
    cond: Literal["text", "class", "none"] = "text"
    num_classes: int = 21
    text_context: int = 24  # text positions, start/end tokens included
    text_vocab: list[int] = field(default_factory=list)  # compact BPE subset; empty = full vocabulary
    cond_dropout: float = 0.1  # probability of the null condition while training (enables CFG)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)


@dataclass
class Condition:
    """Conditioning of a batch: class labels ``(B,)`` or text ids ``(B, L)``, or just a batch size."""

    batch_size: int
    labels: torch.Tensor | None = None
    text: torch.Tensor | None = None

    def to(self, device) -> "Condition":
        return Condition(self.batch_size, None if self.labels is None else self.labels.to(device), None if self.text is None else self.text.to(device))

    def slice(self, start: int, stop: int) -> "Condition":
        """Samples ``start:stop`` of the batch (used to generate in chunks)."""
        sl = slice(start, min(stop, self.batch_size))
        part = lambda a: None if a is None else a[sl]  # noqa: E731
        return Condition(sl.stop - start, part(self.labels), part(self.text))

    def cat(self, other: "Condition") -> "Condition":
        """Concatenate along the batch (used for the ``[cond; uncond]`` CFG batch)."""
        cat = lambda a, b: None if a is None else torch.cat([a, b])  # noqa: E731
        return Condition(self.batch_size + other.batch_size, cat(self.labels, other.labels), cat(self.text, other.text))


def tokenizer_overrides(tokenizer) -> dict[str, Any]:
    """Generator config fields that must agree with the tokenizer it is trained on."""
    return {
        "vocab_size": tokenizer.vocab_size,
        "layout": tokenizer.layout.to_dict(),
        "token_dim": tokenizer.codebook_dim,
        "image_size": tokenizer.image_size,
    }


class CondEmbedder(nn.Module):
    """Condition -> prefix token embeddings ``(B, P, dim)`` and a pooled vector ``(B, dim)``.

    Class labels use one extra "null" row for classifier-free guidance; text uses the empty prompt as
    its null condition, so a negative prompt is simply another text.
    """

    def __init__(self, config: GeneratorConfig, embed: bool = True) -> None:
        """``embed=False``: no embedding table (a model that embeds text ids in its own vocabulary)."""
        super().__init__()
        dim = config.transformer.dim
        self.kind = config.cond
        if config.cond == "class":
            rows, self.prefix_len = config.num_classes + 1, 1
        elif config.cond == "text":
            self.text_tokenizer = TextTokenizer(config.text_context, config.text_vocab)
            rows, self.prefix_len = self.text_tokenizer.vocab_size, config.text_context
        else:
            rows, self.prefix_len = 1, 1  # a learned start token
        self.embed = nn.Embedding(rows, dim) if embed else None
        if embed:
            nn.init.normal_(self.embed.weight, std=0.02)
        self.num_classes = config.num_classes

    def null(self, batch_size: int, device) -> Condition:
        if self.kind == "class":
            return Condition(batch_size, labels=torch.full((batch_size,), self.num_classes, device=device))
        if self.kind == "text":
            return Condition(batch_size, text=self.text_tokenizer([""] * batch_size).to(device))
        return Condition(batch_size)

    def drop(self, cond: Condition, p: float) -> Condition:
        """Replace each sample's condition by the null one with probability ``p`` (training)."""
        if p <= 0 or self.kind == "none":
            return cond
        device = (cond.labels if cond.labels is not None else cond.text).device
        keep = torch.rand(cond.batch_size, device=device) >= p
        null = self.null(cond.batch_size, device)
        if self.kind == "class":
            return Condition(cond.batch_size, labels=torch.where(keep, cond.labels, null.labels))
        return Condition(cond.batch_size, text=torch.where(keep[:, None], cond.text, null.text))

    def forward(self, cond: Condition) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "class":
            if cond.labels is None:
                raise ValueError("this generator is class-conditional: pass labels")
            if cond.labels.min() < 0 or cond.labels.max() > self.num_classes:
                raise ValueError(f"labels must be in [0, {self.num_classes}) (or {self.num_classes} = null), got {cond.labels.tolist()}")
            e = self.embed(cond.labels)
            return e[:, None], e
        if self.kind == "text":
            if cond.text is None:
                raise ValueError("this generator is text-conditional: pass a prompt")
            e = self.embed(cond.text)
            valid = (cond.text != self.text_tokenizer.pad).float()[..., None]
            return e, (e * valid).sum(1) / valid.sum(1).clamp(min=1)
        e = self.embed.weight[None].expand(cond.batch_size, -1, -1)
        return e, e[:, 0]


class Generator(ConfigModule):
    """Base class: ``forward(tokens, cond) -> (loss, logs)``; ``generate(cond, sampler, callback) -> Tokens``.

    A subclass declares the :class:`SamplerConfig` fields it reads (``sampler_fields``) and
    implements ``decode_schedule`` (its schedule and step); ``generate`` is the same for all.
    """

    kind = "generator"
    config_class = GeneratorConfig
    sampler_fields: ClassVar[tuple[str, ...]] = DECODING_FIELDS
    embeds_condition: ClassVar[bool] = True  # False: the model embeds its condition itself (the unified model)

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__(config)  # a copy of config: subclasses may complete it
        self.layout: Layout = layout_from_dict(self.config.layout)
        self.cond_embed = CondEmbedder(self.config, embed=self.embeds_condition)
        self._tokenizer = None

    # ----- tokenizer binding (the tokenizer is not a submodule: it is frozen and saved separately)
    def bind_tokenizer(self, tokenizer) -> "Generator":
        expected = tokenizer_overrides(tokenizer)
        mine = {"vocab_size": self.config.vocab_size, "layout": layout_from_dict(self.config.layout).to_dict(), "token_dim": self.config.token_dim, "image_size": self.config.image_size}
        bad = {k: (mine[k], v) for k, v in expected.items() if mine[k] != v}
        if bad:
            raise ValueError(f"tokenizer does not match this generator (generator value, tokenizer value): {bad}")
        tokenizer.requires_grad_(False).eval()
        self.__dict__["_tokenizer"] = tokenizer  # plain attribute: not registered, not saved
        return self

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            raise RuntimeError("no tokenizer bound: call generator.bind_tokenizer(tokenizer) first")
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def prefix_len(self) -> int:
        """Condition slots before the first generated token (class: 1, text: ``text_context``)."""
        return self.cond_embed.prefix_len

    def adaln_cond(self, pooled: torch.Tensor | None) -> torch.Tensor | None:
        """The pooled condition when the backbone is AdaLN-modulated (VAR, xAR, RAR's reference sizes), else None."""
        return pooled if self.config.transformer.adaln_dim else None

    # ----- conditions
    def make_condition(self, prompts: Sequence[str] | None = None, labels: Sequence[int] | torch.Tensor | None = None, batch_size: int | None = None) -> Condition:
        """Build a Condition from user input, validating it against the model's conditioning."""
        kind = self.config.cond
        if kind == "text":
            if prompts is None:
                raise ValueError("this model is text-conditional: give a prompt")
            return Condition(len(prompts), text=self.cond_embed.text_tokenizer(list(prompts)).to(self.device))
        if kind == "class":
            if labels is None:
                raise ValueError(f"this model is class-conditional: give a label in [0, {self.config.num_classes})")
            labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
            if labels.min() < 0 or labels.max() >= self.config.num_classes:
                raise ValueError(f"labels must be in [0, {self.config.num_classes}), got {labels.tolist()}")
            return Condition(len(labels), labels=labels.to(self.device))
        if batch_size is None:
            raise ValueError("this model is unconditional: give a batch size")
        return Condition(batch_size)

    def prepare_batch(self, batch: dict) -> tuple[Tokens, Condition]:
        """Dataset batch ``{pixels, caption?, label?}`` -> (tokens from the bound tokenizer, condition)."""
        pixels = batch["pixels"].to(self.device)
        with torch.no_grad():
            tokens = self.tokenizer.encode(pixels)
        kind = self.config.cond
        if kind == "text":
            if "caption" not in batch:
                raise KeyError("a text-conditional generator needs batches with 'caption'")
            cond = self.make_condition(prompts=batch["caption"])
        elif kind == "class":
            if "label" not in batch:
                raise KeyError("a class-conditional generator needs batches with 'label'")
            cond = self.make_condition(labels=batch["label"])
        else:
            cond = Condition(pixels.shape[0])
        return tokens, cond

    def training_condition(self, cond: Condition) -> Condition:
        """While training, each sample's condition is dropped to the null one with ``cond_dropout`` (CFG's unconditional branch)."""
        return self.cond_embed.drop(cond, self.config.cond_dropout) if self.training else cond

    def cfg_batch(self, cond: Condition, sampler: SamplerConfig, negative: Condition | None = None) -> Condition:
        """``[cond; uncond]`` when guidance is on, else ``cond``."""
        if not sampler.guided:
            return cond
        return cond.cat(negative if negative is not None else self.cond_embed.null(cond.batch_size, self.device))

    # ----- sampling: the one decode loop
    def check_sampler(self, sampler: SamplerConfig | None, allowed: Sequence[str] | None = None) -> SamplerConfig:
        """``sampler`` validated, refusing a non-default value of a field this model does not read."""
        sampler = (sampler or SamplerConfig()).validate()
        allowed = self.sampler_fields if allowed is None else allowed
        default = SamplerConfig()
        for f in fields(SamplerConfig):
            value = getattr(sampler, f.name)
            if f.name not in allowed and value != getattr(default, f.name):
                raise ValueError(f"{type(self).__name__} does not use SamplerConfig.{f.name} (got {value!r}; leave it at "
                                 f"{getattr(default, f.name)!r}); it uses: {', '.join(allowed)}")
        return sampler

    def restrict_sampler(self, sampler: SamplerConfig) -> SamplerConfig:
        """``sampler`` with every field this model does not read set back to its default.

        For one setting shared by models of different paradigms (a comparison): an explicit choice,
        where ``generate`` refuses such fields.
        """
        default = SamplerConfig()
        return replace(sampler, **{f.name: getattr(default, f.name) for f in fields(SamplerConfig) if f.name not in self.sampler_fields})

    def check_latent_frames(self, latent_frames: int | None) -> dict[str, int]:
        """``{"latent_frames": t}`` for a video layout (default: all), ``{}`` for an image model."""
        if not isinstance(self.layout, FramesLayout):
            if latent_frames is not None:
                raise ValueError(f"{type(self).__name__} generates images; latent_frames={latent_frames} is only for video models")
            return {}
        t = self.layout.t if latent_frames is None else latent_frames
        if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= self.layout.t:
            raise ValueError(f"this model generates 1..{self.layout.t} latent frames; got {latent_frames!r}")
        return {"latent_frames": t}

    @torch.no_grad()
    def generate(self, cond: Condition, sampler: SamplerConfig | None = None, callback: Callback | None = None,
                 negative: Condition | None = None, latent_frames: int | None = None, **options: Any) -> Tokens:
        """Sample tokens for ``cond``; ``negative`` replaces the unconditional branch of guidance.

        ``latent_frames`` (video models, default all) stops after that many latent frames;
        ``callback(step, total, partial)`` sees the tokens after every AR step.
        """
        sampler = self.check_sampler(sampler)
        video = self.check_latent_frames(latent_frames)
        cond = cond.to(self.device)
        if negative is not None and negative.batch_size != cond.batch_size:
            raise ValueError(f"the negative condition has {negative.batch_size} samples, the condition {cond.batch_size}")
        full = self.cfg_batch(cond, sampler, negative)
        return decode(self.decode_schedule(full, cond.batch_size, sampler, **video, **options), sampler, callback)

    # ----- the interface subclasses implement
    def forward(self, tokens: Tokens, cond: Condition) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def decode_schedule(self, full: Condition, batch: int, sampler: SamplerConfig, **options: Any) -> Decode:
        """The paradigm: its first pass, positions, mask, number of steps and step (see ``decoding.py``).

        ``full`` is the CFG batch (``[cond; uncond]`` when guided) of ``batch`` samples each.
        """
        raise NotImplementedError

    def forward_passes(self) -> int:
        """Transformer forward passes per sample at generation time (with cache)."""
        raise NotImplementedError


def corrupt_context(ids: torch.Tensor, max_fraction: float, high: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forcing input with a per-sample fraction ~ U(0, ``max_fraction``) of ``ids`` replaced by random ids in ``[0, high)``.

    The targets stay clean, so a token cannot be copied from the ones just before it (it must be read from the
    condition): what taught the raster models to bind colour and shape to each object (bench/RESULTS.md).
    ``keep`` marks positions never replaced (e.g. an end token).
    """
    frac = torch.rand(ids.shape[0], 1, device=ids.device) * max_fraction
    flip = torch.rand(ids.shape, device=ids.device) < frac
    if keep is not None:
        flip &= ~keep
    return torch.where(flip, torch.randint_like(ids, high), ids)


def takes_progress(generator: nn.Module) -> bool:
    """Whether a generator's training loss takes ``progress`` (step / steps in [0, 1]), e.g. RAR's order annealing.

    Any module with the generator contract qualifies, not only :class:`Generator` subclasses.
    """
    return "progress" in inspect.signature(type(generator).forward).parameters
