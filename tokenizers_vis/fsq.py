"""Finite scalar quantization (FSQ, Mentzer et al. 2023): a codebook that cannot collapse.

Each of the ``d = len(levels)`` channels is squashed into a bounded interval and rounded to one
of ``levels[i]`` values, so the codebook is the implicit grid of ``prod(levels)`` points: there
is nothing to learn, no commitment loss, and every code is reachable. Rounding passes the
gradient straight through. Codes are rescaled to ``[-1, 1]`` (even levels give the asymmetric
grid ``{-L/2, ..., L/2 - 1} / (L/2)``), and an id is the mixed-radix number of the per-channel
indices. FlexTok uses ``levels = [8, 8, 8, 5, 5, 5]`` (64,000 codes); the FSQ paper suggests
``[8, 5, 5, 5]`` for about 2^10 codes and ``[8, 8, 8, 6, 5]`` for about 2^14.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["FSQ", "check_levels"]

_EPS = 1e-3  # keeps tanh's bound a hair outside the outermost level, so both ends are reachable


def check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    """Validate FSQ levels: a non-empty sequence of integers >= 2."""
    try:
        out = tuple(int(v) for v in levels)
    except (TypeError, ValueError):
        raise ValueError(f"FSQ levels must be a sequence of integers >= 2 (e.g. [8, 5, 5, 5]), got {levels!r}") from None
    if not out or any(v < 2 or v != float(lv) for v, lv in zip(out, levels)):
        raise ValueError(f"FSQ levels must be a non-empty sequence of integers >= 2 (e.g. [8, 5, 5, 5]), got {list(levels)!r}")
    return out


class FSQ(nn.Module):
    """``forward(z (..., d)) -> (codes (..., d) in [-1, 1], straight-through; ids (...,) long)``.

    Args:
        levels: number of values per channel; ``codebook_size = prod(levels)``.
    """

    def __init__(self, levels: Sequence[int]) -> None:
        super().__init__()
        self.levels = check_levels(levels)
        self.dim = len(self.levels)
        self.codebook_size = math.prod(self.levels)
        basis = [math.prod(self.levels[:i]) for i in range(self.dim)]
        cpu = torch.device("cpu")  # buffers stay real even under a meta-device context
        self.register_buffer("_levels", torch.tensor(self.levels, dtype=torch.float32, device=cpu), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.long, device=cpu), persistent=False)

    def extra_repr(self) -> str:
        return f"levels={list(self.levels)}, codebook_size={self.codebook_size}"

    @property
    def _half_width(self) -> torch.Tensor:
        return torch.div(self._levels, 2, rounding_mode="floor")

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash ``z`` so that rounding yields exactly ``levels[i]`` integer values per channel."""
        half = (self._levels - 1) * (1 + _EPS) / 2
        offset = (self._levels % 2 == 0).float() * 0.5  # even levels: shift the grid by half a step
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ with levels {list(self.levels)} expects inputs with last dimension {self.dim}, got shape {tuple(z.shape)}")
        with torch.autocast(z.device.type, enabled=False):
            b = self.bound(z.float())
            q = b + (torch.round(b) - b).detach()  # straight-through rounding
            codes = q / self._half_width
        return codes, self.codes_to_ids(codes.detach())

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes on the grid ``(..., d)`` -> ids ``(...,)``."""
        idx = torch.round(codes * self._half_width + self._half_width).long()
        return (idx * self._basis).sum(-1)

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids ``(...,)`` in ``[0, codebook_size)`` -> codes ``(..., d)`` in ``[-1, 1]``."""
        if ids.is_floating_point():
            raise ValueError(f"FSQ ids must be integers, got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            raise ValueError(f"FSQ ids must lie in [0, {self.codebook_size}), got range [{int(ids.min())}, {int(ids.max())}]")
        idx = torch.div(ids[..., None], self._basis, rounding_mode="floor") % self._levels.long()
        return (idx.float() - self._half_width) / self._half_width

    def codebook(self) -> torch.Tensor:
        """Every code, ``(codebook_size, d)`` in id order (the implicit codebook)."""
        return self.ids_to_codes(torch.arange(self.codebook_size, device=self._basis.device))
