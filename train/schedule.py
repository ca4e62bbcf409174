"""Learning-rate schedule: linear warmup, then cosine decay to ``min_lr_ratio * lr``.

The rate is a pure function of the update index, so a resumed run recomputes it exactly
instead of restoring scheduler state.
"""
from __future__ import annotations

import math

__all__ = ["lr_at"]


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
