"""Grow a generator trained on a tokenizer's ids to that tokenizer's widened codebook (``flextok_widen``).

Every vocabulary table (input embedding, output head) gives each new id the row of the old id it decodes
like (``widen_id_map``), so the widened generator's samples decode exactly as before (the new digits start
uniform) and its fine-tune on the new ids starts from the old model rather than from a fresh embedding and head.
"""
from __future__ import annotations

import torch
from torch import nn

from mmgen.config import apply_overrides
from mmgen.models.base import tokenizer_overrides
from mmgen.tokenizers_vis.flextok_widen import widen_id_map

__all__ = ["widen_generator"]


@torch.no_grad()
def widen_generator(gen: nn.Module, tokenizer: nn.Module) -> nn.Module:
    """A copy of ``gen`` for ``tokenizer``'s widened codebook (a multiple of ``gen``'s vocabulary; see above)."""
    old_size = gen.config.vocab_size
    id_map = widen_id_map(old_size, tokenizer.vocab_size)
    new = type(gen)(apply_overrides(gen.config, tokenizer_overrides(tokenizer)))
    want = new.state_dict()
    state = {}
    for key, value in gen.state_dict().items():
        if value.shape != want[key].shape:
            if value.shape[0] != old_size or want[key].shape != (len(id_map), *value.shape[1:]):
                raise ValueError(f"{key}: {tuple(value.shape)} -> {tuple(want[key].shape)} is not a vocabulary table; "
                                 f"only the layout's vocabulary may change when widening")
            value = value[id_map]
        state[key] = value
    new.load_state_dict(state)
    return new.to(next(gen.parameters()).dtype).bind_tokenizer(tokenizer)
