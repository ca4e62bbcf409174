"""The sampler: its settings (``SamplerConfig``) and the logits processing every categorical generator shares.

(``mmgen.sample`` is the command line that samples with it.)

``SamplerConfig`` is saved next to every sample and metric it produced. Classifier-free guidance
uses ``uncond + s * (cond - uncond)``: ``s = 1`` is no guidance; the schedule moves ``s`` from 1 to
``cfg_scale`` over generation progress (constant, linear as in VAR, power-cosine as in RAR/MUSE).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["SamplerConfig", "FLOW_SOLVERS", "cfg_scale_at", "guide", "sample_logits", "filter_logits", "nucleus",
           "DECODING_FIELDS", "GUIDANCE_FIELDS", "CATEGORICAL_FIELDS", "FLOW_FIELDS"]

CFG_SCHEDULES = ("constant", "linear", "power-cosine")
FLOW_SOLVERS = ("euler", "euler-maruyama")  # ODE / SDE integrators of flow heads (mmgen.nn.flow)


# Which fields a generator reads: each generator class lists its own (``Generator.sampler_fields``)
# and refuses a non-default value of any other field, so no setting is silently ignored.
DECODING_FIELDS = ("seed", "use_cache", "static_cache")  # every generator (the one decode loop)
GUIDANCE_FIELDS = ("cfg_scale", "cfg_schedule", "cfg_power")  # conditional generators
CATEGORICAL_FIELDS = ("temperature", "top_k", "top_p")  # generators that sample ids from logits
FLOW_FIELDS = ("flow_steps", "flow_solver", "flow_context_t")  # generators with a flow-matching head


@dataclass
class SamplerConfig:
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    cfg_scale: float = 1.0  # 1 = no guidance
    cfg_schedule: Literal["constant", "linear", "power-cosine"] = "constant"
    cfg_power: float = 2.75  # exponent of the power-cosine schedule
    flow_steps: int = 25  # ODE/SDE steps for flow heads
    flow_solver: Literal["euler", "euler-maruyama"] = "euler"  # probability-flow ODE or reverse SDE
    # noisy-context flow generators (xAR): each finished entity re-enters the context noised to this t
    # (and labelled with it); 0 = the clean entity at t = 0, as the reference samples
    flow_context_t: float = 0.0
    token_budget: int = 0  # 0 = all tokens (flexible-length tokenizers)
    use_cache: bool = True
    static_cache: bool = False  # fixed-shape KV buffers (torch.compile / CUDA graphs); attends over the full length
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "SamplerConfig":
        for name in ("temperature", "top_p", "cfg_scale", "cfg_power", "flow_context_t"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}")
        if not self.cfg_power > 0:
            raise ValueError(f"cfg_power must be > 0, got {self.cfg_power}")
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise ValueError(f"cfg_schedule must be one of {CFG_SCHEDULES}, got {self.cfg_schedule!r}")
        if self.flow_steps < 1:
            raise ValueError(f"flow_steps must be >= 1, got {self.flow_steps}")
        if self.flow_solver not in FLOW_SOLVERS:
            raise ValueError(f"flow_solver must be one of {FLOW_SOLVERS}, got {self.flow_solver!r}")
        if not 0.0 <= self.flow_context_t < 1.0:
            raise ValueError(f"flow_context_t must be in [0, 1), got {self.flow_context_t}")
        if self.token_budget < 0:
            raise ValueError(f"token_budget must be >= 0, got {self.token_budget}")
        return self

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0

    def rng(self, device: torch.device | str) -> torch.Generator:
        """A fresh ``torch.Generator`` seeded with ``seed``: the same seed gives the same samples."""
        return torch.Generator(device=device).manual_seed(self.seed)


def cfg_scale_at(sampler: SamplerConfig, step: int, steps: int) -> float:
    """Guidance scale of AR step ``step`` of ``steps``.

    The schedules follow their papers' progress measure: ``linear`` (VAR) reaches the full scale at
    the last step (``step / (steps - 1)``); ``power-cosine`` (RAR) uses ``step / steps``.
    """
    if sampler.cfg_schedule == "constant":
        w = 1.0
    elif sampler.cfg_schedule == "linear":
        w = step / max(steps - 1, 1)
    else:
        w = (1 - math.cos(math.pi * (step / steps) ** sampler.cfg_power)) / 2
    return 1.0 + (sampler.cfg_scale - 1.0) * w


def guide(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Combine a ``[cond; uncond]`` doubled batch into guided logits of half the batch."""
    cond, uncond = logits.chunk(2, dim=0)
    return uncond + scale * (cond - uncond)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then nucleus filtering on the last dimension (filtered entries become -inf)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, nucleus(sorted_logits, top_p))
    return logits


def nucleus(sorted_logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Top-p on logits sorted in descending order: keep the smallest set whose mass reaches ``top_p``."""
    probs = sorted_logits.softmax(-1)
    return sorted_logits.masked_fill(probs.cumsum(-1) - probs > top_p, float("-inf"))


def sample_logits(logits: torch.Tensor, sampler: SamplerConfig, rng: torch.Generator | None = None) -> torch.Tensor:
    """Sample ids from ``logits (..., V)`` with temperature, top-k and top-p.

    With top-k on, only the k survivors are sorted (``topk`` returns them sorted), normalised and
    drawn from: the distribution of filtering the whole vocabulary, without sorting or sampling
    over all V entries (VAR's top-k 900 of 4096). The draws differ from a full-vocabulary
    ``torch.multinomial`` with the same seed; top-k 0 (every shipped checkpoint) draws as before.
    """
    logits = logits.float()
    if sampler.temperature != 1.0:
        logits = logits / sampler.temperature
    flat = logits.reshape(-1, logits.shape[-1])
    if 0 < sampler.top_k < flat.shape[-1]:
        kept, idx = flat.topk(sampler.top_k, dim=-1)
        if sampler.top_p < 1.0:
            kept = nucleus(kept, sampler.top_p)
        ids = idx.gather(-1, torch.multinomial(kept.softmax(-1), 1, generator=rng))
    else:
        ids = torch.multinomial(filter_logits(flat, 0, sampler.top_p).softmax(-1), 1, generator=rng)
    return ids.reshape(logits.shape[:-1])

