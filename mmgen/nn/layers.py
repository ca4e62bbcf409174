"""Transformer building blocks shared by every generator: SwiGLU, multi-axis RoPE, AdaLN.

RMSNorm is ``torch.nn.RMSNorm`` (no re-implementation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SwiGLU", "RotaryEmbedding", "apply_rotary", "AdaLNModulation", "modulate", "swiglu_hidden"]


def swiglu_hidden(dim: int, mlp_ratio: float, multiple_of: int = 32) -> int:
    """LLaMA's SwiGLU width: 2/3 of ``mlp_ratio * dim`` (same parameter count as a GELU MLP)."""
    hidden = int(2 * mlp_ratio * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.w_gate = nn.Linear(dim, hidden, bias=False)
        self.w_up = nn.Linear(dim, hidden, bias=False)
        self.w_down = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w_down(F.silu(self.w_gate(x)) * self.w_up(x)))


class RotaryEmbedding(nn.Module):
    """Multi-axis rotary embedding (M-RoPE style).

    Positions are ``(N, A)`` coordinates (e.g. ``(t, row, col)``); the head dimension is split into
    ``A`` sections, each rotated by its own axis. A 1D sequence uses the same value on every axis,
    which reduces exactly to 1D RoPE; image tokens use their 2D grid coordinates, so text and
    image share one positional scheme. Coordinates may be fractional (VAR scales).
    """

    def __init__(self, head_dim: int, axes: int = 3, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")
        half = head_dim // 2
        base, rem = divmod(half, axes)
        sections = [base + (1 if i < rem else 0) for i in range(axes)]
        if min(sections) == 0:
            raise ValueError(f"head_dim {head_dim} is too small for {axes} rotary axes")
        self.sections = sections
        inv = [1.0 / theta ** (torch.arange(n, dtype=torch.float64, device="cpu") / n) for n in sections]
        self.register_buffer("inv_freq", torch.cat(inv).float(), persistent=False)
        self.register_buffer("axis_of", torch.repeat_interleave(torch.arange(axes, device="cpu"), torch.tensor(sections, device="cpu")), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions (N, A)`` or per-sample ``(B, N, A)`` -> ``(cos, sin)`` each ``(..., N, head_dim/2)`` in float32."""
        if positions.dim() not in (2, 3) or positions.shape[-1] != len(self.sections):
            raise ValueError(f"positions must be (N, {len(self.sections)}) or (B, N, {len(self.sections)}), got {tuple(positions.shape)}")
        angles = positions.float()[..., self.axis_of] * self.inv_freq
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x (B, H, N, D)`` by ``cos/sin (N, D/2)`` or per-sample ``(B, N, D/2)`` (pairs ``i`` and ``i + D/2``)."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN: ``x * (1 + scale) + shift`` with per-sample ``(B, D)`` shift/scale."""
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNModulation(nn.Module):
    """Maps a condition vector to ``n`` chunks of (shift/scale/gate); zero-initialised (identity at start)."""

    def __init__(self, cond_dim: int, dim: int, n: int) -> None:
        super().__init__()
        self.n = n
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, n * dim))
        nn.init.zeros_(self.proj[1].weight)
        nn.init.zeros_(self.proj[1].bias)
        self.proj[1]._skip_init = True  # keep the zero init when the owner applies its init

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.proj(c).chunk(self.n, dim=-1)
