"""The token contract between visual tokenizers and generators.

A generator never hard-codes a shape: it asks the ``layout`` of the ``Tokens`` it receives.
``ids`` (discrete) or ``latents`` (continuous) are always flattened to ``(B, N[, C])`` in the
layout's order (raster order for a grid; coarse-to-fine scales concatenated for VAR).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Union

import torch

__all__ = ["GridLayout", "ScalesLayout", "Layout", "Tokens", "layout_from_dict"]


@dataclass(frozen=True)
class GridLayout:
    """A 2D ``h x w`` grid of tokens in raster order."""

    h: int
    w: int

    @property
    def num_tokens(self) -> int:
        return self.h * self.w

    def to_dict(self) -> dict:
        return {"type": "grid", "h": self.h, "w": self.w}


@dataclass(frozen=True)
class ScalesLayout:
    """VAR's multi-scale layout: square grids of side ``scales[k]``, coarse to fine, concatenated."""

    scales: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.scales or any(s <= 0 for s in self.scales) or list(self.scales) != sorted(self.scales):
            raise ValueError(f"scales must be positive and increasing, got {self.scales}")

    @property
    def num_tokens(self) -> int:
        return sum(s * s for s in self.scales)

    @property
    def group_sizes(self) -> tuple[int, ...]:
        return tuple(s * s for s in self.scales)

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Split ``(B, N, ...)`` into one tensor per scale."""
        return list(torch.split(x, list(self.group_sizes), dim=1))

    def to_dict(self) -> dict:
        return {"type": "scales", "scales": list(self.scales)}


Layout = Union[GridLayout, ScalesLayout]


def layout_from_dict(d: dict) -> Layout:
    kind = d.get("type")
    if kind == "grid":
        return GridLayout(int(d["h"]), int(d["w"]))
    if kind == "scales":
        return ScalesLayout(tuple(int(s) for s in d["scales"]))
    raise ValueError(f"unknown layout type {kind!r}; known: grid, scales")


@dataclass
class Tokens:
    """Discrete ids ``(B, N)`` or continuous latents ``(B, N, C)`` plus their layout."""

    layout: Layout
    ids: torch.Tensor | None = None
    latents: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.ids is None) == (self.latents is None):
            raise ValueError("Tokens needs exactly one of ids or latents")
        x = self.ids if self.ids is not None else self.latents
        if x.shape[1] != self.layout.num_tokens:
            raise ValueError(f"{x.shape[1]} tokens do not fit layout {self.layout} ({self.layout.num_tokens} tokens)")

    @property
    def batch_size(self) -> int:
        return (self.ids if self.ids is not None else self.latents).shape[0]

    @property
    def device(self) -> torch.device:
        return (self.ids if self.ids is not None else self.latents).device

    def to(self, device: torch.device | str) -> "Tokens":
        return replace(
            self,
            ids=None if self.ids is None else self.ids.to(device),
            latents=None if self.latents is None else self.latents.to(device),
        )

    def __getitem__(self, idx) -> "Tokens":
        """Index the batch dimension."""
        return replace(
            self,
            ids=None if self.ids is None else self.ids[idx],
            latents=None if self.latents is None else self.latents[idx],
        )
