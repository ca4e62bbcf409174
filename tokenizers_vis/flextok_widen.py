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

from typing import Sequence

import torch

from mmgen.config import apply_overrides

from .flextok import FlexTokTokenizer
from .fsq import check_levels

__all__ = ["widen_fsq", "widen_id_map"]


def widen_id_map(old_size: int, new_size: int) -> torch.Tensor:
    """For every widened id, the old id it decodes like: ``(new_size,)`` long, ``new_id % old_size``."""
    if new_size % old_size:
        raise ValueError(f"a widened codebook is a multiple of the old one, got {new_size} for {old_size}")
    return torch.arange(new_size) % old_size


def _zero_new_channels(w: torch.Tensor, slots: int, d_old: int, d_extra: int, keep_column: bool) -> torch.Tensor:
    """A weight reading ``slots`` x ``[codes (d_old), keep?]`` -> the same with ``d_extra`` zero columns after the codes."""
    w = w.view(w.shape[0], slots, d_old + keep_column)
    zeros = w.new_zeros(w.shape[0], slots, d_extra)
    return torch.cat([w[..., :d_old], zeros, w[..., d_old:]], -1).flatten(1)


@torch.no_grad()
def widen_fsq(tok: FlexTokTokenizer, extra_levels: Sequence[int], seed: int = 0) -> FlexTokTokenizer:
    """A copy of ``tok`` with FSQ channels of ``extra_levels`` appended (see the module docstring)."""
    extra = check_levels(extra_levels)
    d_old, K = len(tok.config.levels), tok.config.num_registers
    new = FlexTokTokenizer(apply_overrides(tok.config, {"levels": [*tok.config.levels, *extra]}))
    state = {k: v.clone() for k, v in tok.state_dict().items()}
    # encoder readout: old rows kept, new rows drawn at the old rows' scale
    g = torch.Generator().manual_seed(seed)
    w_old = state["to_code.weight"]
    w_add = torch.randn(len(extra), w_old.shape[1], generator=g, dtype=w_old.dtype) * w_old.float().std().to(w_old.dtype)
    state["to_code.weight"] = torch.cat([w_old, w_add])
    state["to_code.bias"] = torch.cat([state["to_code.bias"], torch.zeros(len(extra), dtype=w_old.dtype)])
    # readers of the codes: zero weight on the new channels, so decodes are unchanged
    readers = {"code_in.weight": (1, False), "prior.0.weight": (K, True), "code_mlp.0.weight": (K, True),
               "coarse_head.0.weight": (K, False)}  # (slots read at once, keep-mask column after each slot's codes)
    for key, (slots, keep_column) in readers.items():
        if key in state:
            state[key] = _zero_new_channels(state[key], slots, d_old, len(extra), keep_column)
    if "id_in.weight" in state:  # a new id decodes as the old id it extends
        state["id_in.weight"] = state["id_in.weight"][widen_id_map(tok.vocab_size, new.vocab_size)]
    new.load_state_dict(state)
    return new.to(next(tok.parameters()).dtype)

