"""The optimizer (AdamW, decay on matrices only) and its learning-rate schedule: linear warmup, then cosine
decay to ``min_lr_ratio * lr``.

The rate is a pure function of the update index, so a resumed run recomputes it exactly
instead of restoring scheduler state.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["lr_at", "make_adamw"]


def lr_at(it: int, *, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1) -> float:
    """Learning rate for update ``it`` (0-based, ``0 <= it < total_steps``).

    Warmup rises linearly to ``base_lr`` at ``it = warmup_steps - 1``; cosine then decays so the
    last update (``it = total_steps - 1``) uses exactly ``min_lr_ratio * base_lr``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if it < 0:
        raise ValueError(f"update index must be >= 0, got {it}")
    done = it + 1  # updates made once this one is applied
    if done <= warmup_steps:
        return base_lr * done / warmup_steps
    min_lr = base_lr * min_lr_ratio
    progress = min(1.0, (done - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_adamw(model: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only, fused where the kernel exists (CUDA, and CPU since torch 2.4:
    one pass over each parameter instead of a dozen, ~9% of a 300 M-parameter CPU step)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except (TypeError, RuntimeError):  # a dtype/device the fused kernel does not support
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
