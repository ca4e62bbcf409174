"""Transformer building blocks shared by every generator: SwiGLU / GELU MLPs, multi-axis RoPE, AdaLN.

RMSNorm and LayerNorm are torch's (no re-implementation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SwiGLU", "GeluMLP", "RotaryEmbedding", "apply_rotary", "AdaLNModulation", "modulate", "swiglu_hidden", "drop_path",
           "dropout", "Dropout"]


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout`` with a cheaper mask on a CPU.

    Why: on a CPU ``bernoulli_`` draws one double per element from the serial generator; with the
    attention-weight dropout of RAR it was a fifth of a small model's training step. Here each 64-bit
    draw of the (seeded, default) generator gives four 16-bit lanes, and a lane is kept when it
    clears a threshold: keep probability ``1 - round(65536 p) / 65536`` (within 1e-5 of ``1 - p``), outputs
    scaled by its inverse so the mean is unchanged. Same distribution per element, other random
    stream; CUDA tensors use ``F.dropout`` (its fused kernels are the fast path there).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    dropped = round(p * 65536)
    if dropped >= 65536:
        return x * 0.0
    n = x.numel()
    lanes = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None).view(torch.int16)[:n]
    # lane >= threshold  <=>  clamp(lane - threshold + 1, 0, 1) == 1 for integers: float ops, no bool tensor
    keep = lanes.view(x.shape).to(x.dtype).sub_(dropped - 32768 - 1).clamp_(0.0, 1.0).mul_(65536 / (65536 - dropped))
    return x * keep


class Dropout(nn.Module):
    """``nn.Dropout`` through :func:`dropout` (no parameters, so checkpoints are unchanged)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


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
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w_down(F.silu(self.w_gate(x)) * self.w_up(x)))


class GeluMLP(nn.Module):
    """``fc2(gelu(fc1(x)))``: the ViT/DiT MLP of VAR (tanh GELU) and RAR (exact GELU)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, approximate: str = "none", bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.approximate = approximate
        self.dropout = Dropout(dropout)

    @property
    def w_down(self) -> nn.Linear:  # the residual projection (depth-scaled init)
        return self.fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x), approximate=self.approximate))))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop a residual branch per sample with probability ``p`` (scaled to keep the mean)."""
    if p <= 0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class RotaryEmbedding(nn.Module):
    """Multi-axis rotary embedding (M-RoPE style).

    Positions are ``(N, A)`` coordinates (e.g. ``(t, row, col)``); the head dimension is split into
    ``A`` sections, each rotated by its own axis. A 1D sequence uses the same value on every axis,
    which reduces exactly to 1D RoPE; image tokens use their 2D grid coordinates, so text and
    image share one positional scheme. Coordinates may be fractional (VAR scales).
    """

    def __init__(self, head_dim: int, axes: int = 3, theta: float = 10000.0, zero_nan: bool = False) -> None:
        super().__init__()
        self.zero_nan = zero_nan  # a NaN coordinate gives cos = sin = 0 (LlamaGen's class token: q, k zeroed)
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
        if self.zero_nan:
            return angles.cos().nan_to_num(0.0), angles.sin().nan_to_num(0.0)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x (B, H, N, D)`` by ``cos/sin (N, D/2)`` or per-sample ``(B, N, D/2)`` (pairs ``i`` and ``i + D/2``)."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN: ``x * (1 + scale) + shift`` with per-sample ``(B, D)`` or per-token ``(B, N, D)`` shift/scale."""
    if scale.dim() == 2:
        scale, shift = scale[:, None], shift[:, None]
    return x * (1 + scale) + shift


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
