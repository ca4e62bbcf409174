"""Give a trained FlexTok more bits per token by appending FSQ channels, without changing what it decodes.

One FSQ token of ``[8, 5, 5, 5]`` holds 1000 codes (~10 bits); FlexTok's paper uses 64 000. Retraining a
tokenizer from scratch to test "more bits per token" costs hours on a CPU, so ``widen_fsq`` grows a trained
one instead (Net2Net-style): the new channels are appended after the old ones, so an old id keeps its
value as the low digits (``new_id % old_size == old_id``, the new digits are the high ones). Everything
that reads codes (``code_in``, the code MLP, the prior, the layout head) gets zero weights on the new
channels, so the widened tokenizer decodes every id exactly as the old one decoded ``id % old_size``. The
encoder's new readout rows start at the scale of the old ones, so the new channels take varied values and
their readers get a gradient from the first step of the fine-tune that teaches them something.

``mmgen.models.widen.widen_generator`` grows a generator trained on the old ids to the widened codebook.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mmgen.config import from_dict, to_dict

from .flextok import FlexTokTokenizer
from .fsq import check_levels

__all__ = ["widen_fsq", "widen_id_map"]


def widen_id_map(old_size: int, new_size: int) -> torch.Tensor:
    """For every widened id, the old id it decodes like: ``(new_size,)`` long, ``new_id % old_size``."""
    if new_size % old_size:
        raise ValueError(f"a widened codebook is a multiple of the old one, got {new_size} for {old_size}")
    return torch.arange(new_size) % old_size


def _widen_flat(layer: nn.Linear, K: int, d_old: int, d_new: int) -> None:
    """In place: a Linear over ``K`` slots of ``[codes (d_old), keep]`` -> ``[codes (d_new), keep]``, new columns 0."""
    old = layer.weight.data.view(layer.out_features, K, d_old + 1)
    w = torch.zeros(layer.out_features, K, d_new + 1, dtype=old.dtype)
    w[..., :d_old], w[..., -1] = old[..., :d_old], old[..., -1]
    layer.weight.data = w.flatten(1)
    layer.in_features = K * (d_new + 1)


@torch.no_grad()
def widen_fsq(tok: FlexTokTokenizer, extra_levels: Sequence[int], seed: int = 0) -> FlexTokTokenizer:
    """A copy of ``tok`` with FSQ channels of ``extra_levels`` appended (see the module docstring)."""
    extra = check_levels(extra_levels)
    cfg = from_dict(type(tok.config), to_dict(tok.config))
    d_old, K = len(cfg.levels), cfg.num_registers
    cfg.levels = [*cfg.levels, *extra]
    d_new = len(cfg.levels)
    new = FlexTokTokenizer(cfg)
    state = {k: v.clone() for k, v in tok.state_dict().items()}
    # encoder readout: old rows kept, new rows drawn at the old rows' scale
    g = torch.Generator().manual_seed(seed)
    w_old = state["to_code.weight"]
    w_add = torch.randn(len(extra), w_old.shape[1], generator=g, dtype=w_old.dtype) * w_old.float().std().to(w_old.dtype)
    state["to_code.weight"] = torch.cat([w_old, w_add])
    state["to_code.bias"] = torch.cat([state["to_code.bias"], torch.zeros(len(extra), dtype=w_old.dtype)])
    # readers of the codes: zero weight on the new channels, so decodes are unchanged
    w = state["code_in.weight"]
    state["code_in.weight"] = torch.cat([w, torch.zeros(w.shape[0], len(extra), dtype=w.dtype)], 1)
    for name in ("prior.0", "code_mlp.0"):
        if f"{name}.weight" in state:
            layer = nn.Linear(K * (d_old + 1), state[f"{name}.weight"].shape[0], bias=False)
            layer.weight.data = state[f"{name}.weight"]
            _widen_flat(layer, K, d_old, d_new)
            state[f"{name}.weight"] = layer.weight.data
    if "coarse_head.0.weight" in state:  # reads K x codes, no keep column
        w = state["coarse_head.0.weight"].view(-1, K, d_old)
        state["coarse_head.0.weight"] = torch.cat([w, torch.zeros(w.shape[0], K, len(extra), dtype=w.dtype)], -1).flatten(1)
    new.load_state_dict(state)
    if new.vocab_size != tok.vocab_size * math.prod(extra):
        raise AssertionError("widened codebook size mismatch")  # pragma: no cover - guards the id layout above
    return new.to(next(tok.parameters()).dtype)

