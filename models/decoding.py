"""The one decode loop every generator runs (design.md §8).

A paradigm is a *schedule* plus a *step*. The generator's ``decode_schedule`` returns a
:class:`Decode`: what the first pass reads (the condition prefix, VAR's start tokens, NBP's
queries), where every slot of the sequence sits (``positions``), which slots see which
(``mask``) and how many AR steps there are. Its ``step(d, k, h)`` turns the hidden states ``h``
of step ``k``'s pass into that step's tokens and returns the input embeddings of the next group
(one sample each, the loop doubles them for guidance), or None when done.

The loop owns the rest, the same for every paradigm:

- classifier-free guidance: the batch is ``[cond; uncond]`` (or a negative condition) from the
  first pass on; ``d.guide(out)`` combines a doubled output with the scheduled scale
  (``cfg_scale_at``) of the current step, ``d.double(x)`` repeats a next input for both halves;
- the KV cache: growing, static (fixed shapes) or none (``use_cache=False``: every step
  recomputes the whole sequence, the reference the cache is tested against);
- ``d.peek(x)``: run ``x`` as the next slots after the context without keeping it (xAR's flow
  passes over the entity being denoised);
- the seeded RNG (``d.rng``), callbacks ``callback(step, total, partial)`` and stopping.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from mmgen.nn.kv_cache import KVCache
from mmgen.nn.masks import Mask
from mmgen.sampler import SamplerConfig, cfg_scale_at, guide

__all__ = ["Decode", "decode", "run_in_groups"]


@dataclass(eq=False)
class Decode:
    """One generation in progress: the paradigm's schedule and step, and the loop's running state."""

    transformer: torch.nn.Module
    first: torch.Tensor  # (reps*B, n0, dim) input embeddings of the first pass (full CFG batch)
    positions: torch.Tensor  # (S, axes) coordinates of every slot of the sequence
    mask: Mask
    steps: int  # AR steps (forward passes with the cache)
    step: Callable[["Decode", int, torch.Tensor], torch.Tensor | None]
    tokens: Callable[["Decode", int], Any]  # what the first k steps made (k = steps: the result)
    batch: int  # samples (half the CFG batch)
    cond: torch.Tensor | None = None  # AdaLN condition of the full batch, or None
    cond_at: Callable[[int, int], torch.Tensor] | None = None  # slot-dependent AdaLN condition of n slots at a start slot (RAR), instead of cond
    inputs: Callable[[torch.Tensor, int], torch.Tensor] | None = None  # slot-dependent additions to x at a start slot
    needs_hidden: bool = True  # False: the step runs its own passes (``peek``); without cache the loop's pass is skipped
    state: dict[str, Any] = field(default_factory=dict)  # the paradigm's own running state (ids so far, ...)
    # set by the loop
    sampler: SamplerConfig | None = None
    rng: torch.Generator | None = None
    scale: float = 1.0  # guidance scale of the current step
    cache: KVCache | None = None
    context: torch.Tensor | None = None  # without cache: the whole input sequence so far

    @property
    def reps(self) -> int:
        return self.first.shape[0] // self.batch

    def double(self, x: torch.Tensor) -> torch.Tensor:
        """One sample's tensor -> the CFG batch (``[x; x]``), or ``x`` without guidance."""
        return x.repeat(self.reps, *([1] * (x.ndim - 1)))

    def guide(self, out: torch.Tensor) -> torch.Tensor:
        """Guided output of half the batch from the doubled one (identity without guidance)."""
        return guide(out, self.scale) if self.sampler.guided else out

    def run(self, x: torch.Tensor, start: int, cache: KVCache | None) -> torch.Tensor:
        """Hidden states of slots ``start .. start + len(x) - 1`` (through ``cache`` if given)."""
        if self.inputs is not None:
            x = self.inputs(x, start)
        cond = self.cond if self.cond_at is None else self.cond_at(start, x.shape[1])
        return self.transformer(x, self.positions[start : start + x.shape[1]], self.mask, cache=cache, cond=cond)

    def peek(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states of ``x`` as the slots right after the context, which is left as it was."""
        if self.cache is None:
            return self.run(torch.cat([self.context, x], 1), 0, None)[:, -x.shape[1] :]
        length = self.cache.length
        h = self.run(x, length, self.cache)
        self.cache.truncate(length)
        return h


@torch.no_grad()
def decode(d: Decode, sampler: SamplerConfig, callback: Callable[[int, int, Any], None] | None = None) -> Any:
    """Run ``d``'s schedule to the end: one pass per AR step (cached), the step picks the next group."""
    d.sampler, d.rng = sampler, sampler.rng(d.first.device)
    d.cache = d.transformer.new_cache(d.positions.shape[-2], sampler.static_cache) if sampler.use_cache else None
    x, start = d.first, 0
    for k in range(d.steps):
        if d.cache is not None:
            h = d.run(x, start, d.cache)
        else:
            d.context = x if d.context is None else torch.cat([d.context, x], 1)
            h = d.run(d.context, 0, None) if d.needs_hidden else None
        start += x.shape[1]
        d.scale = cfg_scale_at(sampler, k, d.steps)
        nxt = d.step(d, k, h)
        if callback is not None:
            callback(k + 1, d.steps, d.tokens(d, k + 1))
        if nxt is None:
            return d.tokens(d, k + 1)
        x = d.double(nxt)
    return d.tokens(d, d.steps)


def run_in_groups(transformer: torch.nn.Module, x: torch.Tensor, positions: torch.Tensor, mask: Mask, sizes: Sequence[int],
                  cond: torch.Tensor | None = None) -> torch.Tensor:
    """A teacher-forced pass of ``x`` cut into groups of ``sizes`` through a fresh KV cache, as decoding runs it.

    For tests that compare the cached pass with one full pass (``cached=True`` of the models' teacher-forced outputs).
    """
    cache, out, a = transformer.new_cache(), [], 0
    for n in sizes:
        c = cond[:, a : a + n] if cond is not None and cond.dim() == 3 else cond  # a per-token condition follows its slots
        out.append(transformer(x[:, a : a + n], positions[a : a + n], mask, cache=cache, cond=c))
        a += n
    return torch.cat(out, 1)
