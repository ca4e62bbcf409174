"""Exponential moving average of model weights.

Short runs would export nearly untrained weights with a fixed decay of 0.999, so by default
the decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the first ``n`` updates.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Holds ``self.model``, a frozen copy whose floating weights track the live model's."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        # Share, don't copy: frozen parameters never change, and modules kept as plain attributes
        # (a generator's bound tokenizer) are not part of the model's state.
        memo: dict[int, object] = {id(p): p for p in model.parameters() if not p.requires_grad}
        for mod in model.modules():
            memo.update({id(v): v for v in vars(mod).values() if isinstance(v, nn.Module)})
        self.model = copy.deepcopy(model, memo).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``ema = d * ema + (1 - d) * live`` for floating tensors; other buffers are copied."""
        d = self.current_decay()
        # named_parameters/buffers skip duplicates, so tied weights are averaged once.
        live = dict(model.named_parameters()) | dict(model.named_buffers())
        ema = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        for name, e in ema.items():
            if e is live[name]:  # shared frozen parameter
                continue
            v = live[name].detach()
            if e.is_floating_point():
                e.lerp_(v.to(e.dtype), 1.0 - d)
            else:
                e.copy_(v)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        self.model.load_state_dict(state, strict=True)
        self.num_updates = int(num_updates)
