"""xAR (Next-X prediction): continuous entities, block-causal transformer, flow matching per AR step.

Faithful to the reference code (OliverRensu/xAR), where the block-causal transformer itself is
the velocity network of every AR step:

- **Schedule.** The latent grid of a continuous (KL) tokenizer is cut into entities
  (``entities.py``: token, cell:k, subsample:k, scale:..., image). Sequence: ``[condition prefix]
  + entity 1 + ... + entity K``, ``BlockCausal(sizes, prefix=P)``: bidirectional inside an
  entity, causal across. The condition also modulates every block (AdaLN), as in VAR / xAR.
- **Noisy context learning.** While training, every entity ``X_i`` is replaced by
  ``(1 - t_i) X_i + t_i eps_i`` at its *own* noise level ``t_i`` (logit-normal, as the reference),
  and the slots of entity ``i`` regress its velocity ``eps_i - X_i``. So entity ``i`` is predicted
  from itself (noisy) and from *noisy* earlier entities: the model never relies on a perfect
  context. ``noisy_context=False`` is the teacher-forcing ablation: one target entity per sample,
  every earlier entity clean (``t = 0``), the loss on the target only.
- **Noise level.** Each slot's entity ``t`` reaches the flow head through per-token AdaLN, and the
  transformer either through every block's AdaLN, per slot (``time_cond="adaln"``, the reference's
  way and the presets') or added to the slot's input (``time_cond="input"``).
- **Sampling.** Entity by entity: draw noise, solve the flow ODE (Euler) or
  SDE (Euler–Maruyama) with ``flow_steps`` transformer passes over that entity only;
  classifier-free guidance on the velocity with the doubled ``[cond; uncond]`` batch, scale
  scheduled over entities (the reference: linear). Then the *clean* entity (``t = 0``; or noised to
  ``flow_context_t``) is appended to the KV cache; the ODE steps' own keys are rolled back, so the cache
  only ever holds the prefix and the context.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import repeat
from torch import nn

from mmgen.data.shapes_text import shapes_text_vocab
from mmgen.models.base import Condition, Generator, GeneratorConfig
from mmgen.models.decoding import Decode, run_in_groups
from mmgen.models.entities import EntitySchedule, parse_entities
from mmgen.nn.flow import FlowHead, TimestepEmbedder, interpolate, solve_flow
from mmgen.nn.transformer import Transformer
from mmgen.registry import register_preset
from mmgen.sampler import DECODING_FIELDS, FLOW_FIELDS, GUIDANCE_FIELDS, SamplerConfig
from mmgen.tokens import Tokens

__all__ = ["XARConfig", "XARGenerator"]


@dataclass
class XARConfig(GeneratorConfig):
    vocab_size: int = 0  # continuous latents: no vocabulary
    token_dim: int = 4  # latent channels of the tokenizer
    entities: str = "cell:2"  # token | cell:K | subsample:K | scale:S1,S2,... | image
    noisy_context: bool = True  # False: teacher forcing (clean context), to measure the effect
    # True: loss on one random entity per sample, as teacher forcing must have it (its clean context
    # and noisy target share one pass); with noisy_context this is the matched-supervision control.
    single_target: bool = False
    time_dist: Literal["logit-normal", "uniform"] = "logit-normal"  # training noise levels
    head_depth: int = 2  # AdaLN MLP blocks of the flow head (0 = the reference's linear layer)
    head_width: int = 0  # 0 = the transformer width
    # How a slot's noise level t reaches the transformer: "input" adds its embedding to the slot's
    # input; "adaln" adds it to the condition of every block's AdaLN, per slot (the reference).
    time_cond: Literal["input", "adaln"] = "input"


class XARGenerator(Generator):
    config_class = XARConfig
    sampler_fields = DECODING_FIELDS + GUIDANCE_FIELDS + FLOW_FIELDS

    def __init__(self, config: XARConfig) -> None:
        super().__init__(config)
        config, tconfig = self.config, self.config.transformer
        if config.vocab_size:
            raise ValueError(f"xAR models continuous latents (vocab_size=0); got vocab_size={config.vocab_size}: bind a continuous tokenizer such as kl-tiny")
        if config.token_dim < 1:
            raise ValueError(f"token_dim (latent channels) must be >= 1, got {config.token_dim}")
        if tconfig.adaln_dim not in (0, tconfig.dim):
            raise ValueError(f"xAR's AdaLN condition has the model width {tconfig.dim}; got adaln_dim={tconfig.adaln_dim}")
        if config.time_cond not in ("input", "adaln"):
            raise ValueError(f"time_cond={config.time_cond!r}; allowed: input, adaln")
        tconfig.adaln_dim = tconfig.dim  # on the generator's own copy of the config (the base copies it)
        self.schedule: EntitySchedule = parse_entities(config.entities, self.layout)
        dim, M = tconfig.dim, self.schedule.num_slots
        self.in_proj = nn.Linear(config.token_dim, dim)
        self.slot_embed = nn.Parameter(torch.randn(M, dim) * 0.02)  # absolute slot (the reference's learned pos-embed)
        self.time_embed = TimestepEmbedder(dim)
        self.transformer = Transformer(tconfig)
        self.head = FlowHead(dim, config.token_dim, config.head_depth, config.head_width)
        nn.init.zeros_(self.head.out.weight)
        nn.init.zeros_(self.head.out.bias)
        self.register_buffer("positions", self.schedule.positions(self.prefix_len), persistent=False)
        self.register_buffer("slot_entity", self.schedule.entity_index(), persistent=False)

    @property
    def num_entities(self) -> int:
        return self.schedule.num_entities

    def forward_passes(self) -> int:
        """AR steps (entities); each costs ``flow_steps`` cached passes over one entity (see :meth:`transformer_passes`)."""
        return self.num_entities

    def transformer_passes(self, sampler: SamplerConfig) -> int:
        """Transformer calls per generation with the cache: prefix, ODE/SDE steps, clean-context appends."""
        return 1 + self.num_entities * sampler.flow_steps + self.num_entities - 1

    # ----- building blocks
    def _embed(self, x: torch.Tensor, t_emb: torch.Tensor, start: int) -> torch.Tensor:
        """Entity tokens ``x (B, n, C)`` filling slots ``start..start+n-1`` (with their noise-level embeddings: ``time_cond="input"``)."""
        h = self.in_proj(x) + self.slot_embed[start : start + x.shape[1]]
        return h + t_emb if self.config.time_cond == "input" else h

    def _slot_cond(self, pooled: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """Per-slot AdaLN condition ``(B, P + n, dim)``: the pooled condition on the prefix, plus ``t_emb (B, n, dim)`` after it."""
        c = pooled[:, None]
        return torch.cat([c.expand(-1, self.prefix_len, -1), c + t_emb], 1)

    def _latents(self, tokens: Tokens) -> torch.Tensor:
        if tokens.latents is None or tokens.layout != self.layout:
            raise ValueError(f"xAR expects continuous latents with layout {self.layout}, got {'ids' if tokens.ids is not None else 'latents'} on {tokens.layout}")
        if tokens.latents.shape[-1] != self.config.token_dim:
            raise ValueError(f"latents have {tokens.latents.shape[-1]} channels, this model expects token_dim={self.config.token_dim}")
        return tokens.latents

    def _noise(self, shape: tuple[int, ...], rng: torch.Generator | None, uniform: bool = False) -> torch.Tensor:
        """Normal (or uniform) noise from ``rng`` (drawn on its device) or the global RNG, on the model's device."""
        fn = torch.rand if uniform else torch.randn
        return fn(shape, generator=rng, device=rng.device if rng is not None else self.device).to(self.device)

    def sample_t(self, shape: tuple[int, ...], rng: torch.Generator | None = None) -> torch.Tensor:
        """Training noise levels: logit-normal(0, 1) as the reference, or uniform."""
        if self.config.time_dist == "logit-normal":
            return torch.sigmoid(self._noise(shape, rng))
        return self._noise(shape, rng, uniform=True)

    def noisy_sequence(self, tokens: Tokens, rng: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Teacher-forced inputs: ``(x_t, t, v, weight)`` per slot, ``(B, M, C)``/``(B, M)``.

        Every entity gets its own noise level; without ``noisy_context`` one random target entity
        per sample is noisy, the earlier ones clean, and only the target carries loss ``weight``
        (with ``single_target`` only that last part: the context stays noisy).
        """
        x = self.schedule.split(self._latents(tokens)).float()
        B, K = x.shape[0], self.num_entities
        t = self.sample_t((B, K), rng)
        weight = torch.ones(B, K, device=x.device)
        if self.config.single_target or not self.config.noisy_context:
            target = (self._noise((B,), rng, uniform=True) * K).long().clamp_max(K - 1)
            ent = torch.arange(K, device=x.device)
            if not self.config.noisy_context:
                t = torch.where(ent < target[:, None], torch.zeros_like(t), t)
            weight = (ent == target[:, None]).float()
        t, weight = t[:, self.slot_entity], weight[:, self.slot_entity]
        noise = self._noise(tuple(x.shape), rng)
        x_t, v = interpolate(x, noise, t[..., None])
        return x_t, t, v, weight

    def velocity(self, tokens: Tokens, cond: Condition, rng: torch.Generator | None = None, cached: bool = False) -> tuple[torch.Tensor, ...]:
        """Teacher-forced ``(predicted velocity, target velocity, weight)`` of every slot.

        ``cached=True`` runs the same sequence one entity at a time through a KV cache (tests).
        """
        x_t, t, v, weight = self.noisy_sequence(tokens, rng)
        prefix, pooled = self.cond_embed(cond)
        mask, P = self.schedule.mask(self.prefix_len), self.prefix_len
        t_emb = self.time_embed(t)
        x = torch.cat([prefix, self._embed(x_t, t_emb, 0)], dim=1)
        c = self._slot_cond(pooled, t_emb) if self.config.time_cond == "adaln" else pooled
        if not cached:
            h = self.transformer(x, self.positions, mask, cond=c)[:, P:]
        else:
            h = run_in_groups(self.transformer, x, self.positions, mask, (P, *self.schedule.sizes), cond=c)[:, P:]
        return self.head(h, t_emb), v, weight

    def forward(self, tokens: Tokens, cond: Condition) -> tuple[torch.Tensor, dict]:
        cond = self.training_condition(cond)
        pred, v, weight = self.velocity(tokens, cond)
        err = (pred.float() - v).square().mean(-1)
        loss = (err * weight).sum() / weight.sum()
        logs = {"flow_mse": loss.detach()}
        with torch.no_grad():  # first vs last entity: where context helps
            ent = self.slot_entity
            for name, k in (("first", 0), ("last", self.num_entities - 1)):
                w = weight[:, ent == k]
                logs[f"mse_{name}"] = (err[:, ent == k] * w).sum() / w.sum().clamp_min(1)
        return loss, logs

    # ----- sampling
    def decode_schedule(self, full: Condition, batch: int, sampler: SamplerConfig) -> Decode:
        """One entity per step: the prefix first, then each clean (``t = 0``) entity as context."""
        prefix, pooled = self.cond_embed(full)
        seq = torch.zeros(batch, self.schedule.num_slots, self.config.token_dim, device=self.device)  # clean entities so far
        d = Decode(self.transformer, prefix, self.positions, self.schedule.mask(self.prefix_len), self.num_entities, self._entity_step,
                   self._sampled, batch, cond=self.adaln_cond(pooled), needs_hidden=False, state={"seq": seq, "current": None})
        if self.config.time_cond == "adaln":  # the context's AdaLN condition is the same at every step: computed once
            d.state["context_cond"] = pooled[:, None] + self.time_embed(pooled.new_full((1,), sampler.flow_context_t))
            d.cond, d.cond_at = None, lambda start, n: self._decode_cond(d, pooled, start, n)
        return d

    def _decode_cond(self, d: Decode, pooled: torch.Tensor, start: int, n: int) -> torch.Tensor:
        """AdaLN condition of slots ``start..start+n-1`` while sampling (``time_cond="adaln"``).

        Context slots carry the embedding of the sampler's ``flow_context_t``; the entity being denoised
        (``d.state["current"] = (first slot, t_emb)``) its ODE time.
        """
        cond = pooled[:, None].repeat(1, n, 1)
        P = self.prefix_len
        if start + n > P:
            cond[:, max(start, P) - start :] = d.state["context_cond"]
        if d.state["current"] is not None:
            a, t_emb = d.state["current"]
            s = P + a - start
            cond[:, s : s + t_emb.shape[1]] = pooled[:, None] + t_emb
        return cond

    def _entity_step(self, d: Decode, k: int, h: None) -> torch.Tensor | None:
        """Solve the flow ODE/SDE of entity ``k``: ``flow_steps`` passes over it on top of the context (``d.peek``)."""
        offs, seq = self.schedule.offsets(), d.state["seq"]
        a, b = offs[k], offs[k + 1]

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t_emb = d.double(self.time_embed(repeat(t, "b -> b n", n=b - a)))
            d.state["current"] = (a, t_emb)
            out = self.head(d.peek(d.double(self._embed(x, t_emb[: x.shape[0]], a))), t_emb).float()
            return d.guide(out)

        noise = torch.randn(d.batch, b - a, self.config.token_dim, generator=d.rng, device=self.device)
        seq[:, a:b] = solve_flow(velocity, noise, d.sampler.flow_steps, d.sampler.flow_solver, d.rng)
        d.state["current"] = None
        if k + 1 == d.steps:
            return None
        ctx, tc = seq[:, a:b], d.sampler.flow_context_t
        if tc > 0:  # re-noise the finished entity to the context's noise level
            ctx = interpolate(ctx, torch.randn(ctx.shape, generator=d.rng, device=self.device), tc)[0]
        return self._embed(ctx, self.time_embed(seq.new_full((d.batch, b - a), tc)), a)

    def _sampled(self, d: Decode, k: int) -> Tokens:
        return Tokens(self.layout, latents=self.schedule.merge(d.state["seq"], k))


def _register() -> None:
    # CPU presets: single-token entities and the reference's per-slot AdaLN noise level (measured best on shapes at 3000
    # steps: 1.000 / 0.988 one / two objects, against 0.997 / 0.700 with the level on the input and 0.993 / 0.620 for 2x2 cells)
    tiny = dict(transformer=dict(dim=192, depth=6, heads=6), entities="token", time_cond="adaln", token_dim=4, head_depth=2)
    register_preset("xar-tiny", XARGenerator, tags=("tiny",), cond="text", text_vocab=shapes_text_vocab, **tiny)
    register_preset("xar-tiny-class", XARGenerator, tags=("tiny",), cond="class", num_classes=10, **tiny)
    # Reference sizes: class-conditional ImageNet 256 on MAR's KL-16 VAE (16x16x16 latents), four
    # 8x8 cells, the whole transformer as velocity network (head_depth=0). xAR-B 8+8 blocks of 768,
    # xAR-L 16+16 blocks of 1024 (the reference's encoder + decoder stacks are one stack here).
    ref = dict(cond="class", num_classes=1000, layout={"type": "grid", "h": 16, "w": 16}, image_size=256, token_dim=16,
               entities="cell:8", head_depth=0, time_cond="adaln")
    register_preset("xar-b", XARGenerator, tags=("reference",), transformer=dict(dim=768, depth=16, heads=12), **ref)
    register_preset("xar-l", XARGenerator, tags=("reference",), transformer=dict(dim=1024, depth=32, heads=16), **ref)


_register()
