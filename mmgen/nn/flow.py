"""Flow matching for continuous entities: time embedding, velocity head, Euler / Euler–Maruyama.

Convention (xAR's reference code, SiT's linear path): ``x_t = (1 - t) * x + t * eps`` with ``t`` the
noise level, so ``t = 1`` is pure noise and ``t = 0`` a clean entity, and the network regresses the
velocity ``v = eps - x``. Sampling integrates from ``t = 1`` to ``t = 0``:

- ``euler``: the probability-flow ODE on a uniform grid (deterministic given the start noise).
- ``euler-maruyama``: the reverse SDE with diffusion ``g(t)^2 = 2t`` (xAR's sampler) on a uniform
  grid from 1 to ``t_min``; the drift is ``v - t * score = v + eps_hat`` with the predicted noise
  ``eps_hat = x_t + (1 - t) v``. The last step jumps from ``t_min`` to 0 with the denoised
  estimate ``x_t - t v`` (the reference takes the drift's mean step there; the estimate is the
  exact posterior mean and also makes a single step reduce to Euler).
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from torch import nn

from mmgen.nn.layers import AdaLNModulation
from mmgen.sampler import FLOW_SOLVERS

__all__ = ["TimestepEmbedder", "FlowHead", "solve_flow", "flow_grid", "interpolate", "FLOW_SOLVERS"]

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t of shape (B,)) -> v


def interpolate(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, v)`` of the linear path; ``t`` broadcasts against ``x`` (e.g. ``(B, N, 1)``)."""
    return (1 - t) * x + t * noise, noise - x


class TimestepEmbedder(nn.Module):
    """DiT's sinusoidal embedding of ``1000 t`` followed by a two-layer MLP."""

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = (1000.0 * t.float())[..., None] * freqs
        emb = torch.cat([args.cos(), args.sin()], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class _HeadBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = AdaLNModulation(width, width, 3)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(c)  # per token: c is (B, N, width)
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class FlowHead(nn.Module):
    """Per-token velocity from the transformer state ``z`` of an entity's slot and its noise level.

    ``depth = 0`` is the reference's linear ``pred`` layer (the whole block-causal transformer is
    the velocity network). ``depth > 0`` adds MAR-style residual MLP blocks whose AdaLN is
    modulated per token by the time embedding: the shared transformer's AdaLN is per sample (the
    condition), so this is where an entity's own ``t`` modulates the prediction directly.
    """

    def __init__(self, dim: int, out_dim: int, depth: int = 0, width: int = 0) -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"head_depth must be >= 0, got {depth}")
        width = width or dim
        self.depth = depth
        if depth == 0:
            self.out = nn.Linear(dim, out_dim)
            return
        self.inp = nn.Linear(dim, width)
        self.t_proj = nn.Linear(dim, width) if width != dim else nn.Identity()
        self.blocks = nn.ModuleList(_HeadBlock(width) for _ in range(depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = AdaLNModulation(width, width, 2)
        self.out = nn.Linear(width, out_dim)

    def forward(self, z: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """``z (B, N, dim)``, ``t_emb (B, N, dim)`` -> velocity ``(B, N, out_dim)``."""
        if self.depth == 0:
            return self.out(z)
        c = self.t_proj(t_emb)
        h = self.inp(z)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c)
        return self.out(self.norm(h) * (1 + scale) + shift)


def flow_grid(steps: int, solver: str, t_min: float = 0.04) -> torch.Tensor:
    """Descending float64 time grid from 1 to 0 (``steps`` intervals)."""
    if steps < 1:
        raise ValueError(f"flow_steps must be >= 1, got {steps}")
    if solver == "euler":
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    if solver == "euler-maruyama":
        return torch.cat([torch.linspace(1.0, t_min, steps, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    raise ValueError(f"flow_solver={solver!r}; allowed: {', '.join(FLOW_SOLVERS)}")


@torch.no_grad()
def solve_flow(velocity: VelocityFn, noise: torch.Tensor, steps: int, solver: Literal["euler", "euler-maruyama"] = "euler",
               rng: torch.Generator | None = None, t_min: float = 0.04) -> torch.Tensor:
    """Integrate ``dx/dt = velocity(x, t)`` from ``noise`` at ``t = 1`` to a sample at ``t = 0``.

    The state is kept in float32 whatever dtype the network runs in. ``rng`` draws the SDE noise.
    """
    grid = flow_grid(steps, solver, t_min).tolist()
    x = noise.float()
    B = x.shape[0]
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        v = velocity(x, x.new_full((B,), t)).float()
        dt = t_next - t
        if solver == "euler" or i == len(grid) - 2:
            x = x + dt * v  # the last EM step: x - t v, the denoised estimate
            continue
        eps_hat = x + (1 - t) * v
        xi = torch.randn(x.shape, generator=rng, device=x.device, dtype=x.dtype)
        x = x + (v + eps_hat) * dt + math.sqrt(2 * t * abs(dt)) * xi
    return x
