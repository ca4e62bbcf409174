"""The token contract between visual tokenizers and generators.

A generator never hard-codes a shape: it asks the ``layout`` of the ``Tokens`` it receives.
``ids`` (discrete) or ``latents`` (continuous) are always flattened to ``(B, N[, C])`` in the
layout's order (raster order for a grid; coarse-to-fine scales concatenated for VAR; ``(t, h, w)`` for video).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Union

import torch

__all__ = ["GridLayout", "ScalesLayout", "FramesLayout", "SequenceLayout", "SegmentsLayout", "Layout", "Tokens", "layout_from_dict"]


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


@dataclass(frozen=True)
class FramesLayout:
    """Video: ``t`` latent frames of ``h x w`` tokens, flattened in ``(t, h, w)`` raster order."""

    t: int
    h: int
    w: int

    def __post_init__(self) -> None:
        if min(self.t, self.h, self.w) <= 0:
            raise ValueError(f"frames layout needs positive t, h, w; got ({self.t}, {self.h}, {self.w})")

    @property
    def num_tokens(self) -> int:
        return self.t * self.h * self.w

    @property
    def frame_tokens(self) -> int:
        return self.h * self.w

    def with_frames(self, t: int) -> "FramesLayout":
        return FramesLayout(t, self.h, self.w)

    def to_dict(self) -> dict:
        return {"type": "frames", "t": self.t, "h": self.h, "w": self.w}


@dataclass(frozen=True)
class SequenceLayout:
    """A 1D sequence ordered coarse to fine (FlexTok): every prefix is a valid, shorter code."""

    length: int

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"sequence layout needs length >= 1, got {self.length}")

    @property
    def num_tokens(self) -> int:
        return self.length

    def truncate(self, k: int) -> "SequenceLayout":
        """The layout of the first ``k`` tokens (``1 <= k <= length``)."""
        if not 1 <= k <= self.length:
            raise ValueError(f"k={k} is out of range: a prefix of this sequence has 1..{self.length} tokens")
        return SequenceLayout(int(k))

    def to_dict(self) -> dict:
        return {"type": "sequence", "length": self.length}


@dataclass(frozen=True)
class SegmentsLayout:
    """Subobject segments, largest first: one token per segment (its box, mask and pixels are
    decoded from it), at most ``max_segments``; the first ``end_id`` ends the image and pads the rest."""

    max_segments: int
    end_id: int

    def __post_init__(self) -> None:
        if self.max_segments < 1 or self.end_id < 0:
            raise ValueError(f"segments layout needs max_segments >= 1 and end_id >= 0, got {self.max_segments}, {self.end_id}")

    @property
    def num_tokens(self) -> int:
        return self.max_segments

    def count(self, ids: torch.Tensor) -> torch.Tensor:
        """Segments per sample ``(B,)``: the tokens before the first end token."""
        ended = (ids == self.end_id).long().cumsum(1) > 0
        return (~ended).sum(1)

    def to_dict(self) -> dict:
        return {"type": "segments", "max_segments": self.max_segments, "end_id": self.end_id}


Layout = Union[GridLayout, ScalesLayout, FramesLayout, SequenceLayout, SegmentsLayout]


def layout_from_dict(d: dict) -> Layout:
    kind = d.get("type")
    if kind == "grid":
        return GridLayout(int(d["h"]), int(d["w"]))
    if kind == "scales":
        return ScalesLayout(tuple(int(s) for s in d["scales"]))
    if kind == "frames":
        return FramesLayout(int(d["t"]), int(d["h"]), int(d["w"]))
    if kind == "sequence":
        return SequenceLayout(int(d["length"]))
    if kind == "segments":
        return SegmentsLayout(int(d["max_segments"]), int(d["end_id"]))
    raise ValueError(f"unknown layout type {kind!r}; known: grid, scales, frames, sequence, segments")


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

    def prefix(self, k: int) -> "Tokens":
        """The first ``k`` tokens of a truncatable 1D sequence (FlexTok): ``tokens.prefix(k)``."""
        if not isinstance(self.layout, SequenceLayout):
            raise ValueError(f"only a 1D SequenceLayout can be truncated, got {self.layout}")
        lay = self.layout.truncate(k)
        return replace(self, layout=lay, ids=None if self.ids is None else self.ids[:, :k],
                       latents=None if self.latents is None else self.latents[:, :k])

    def __getitem__(self, idx) -> "Tokens":
        """Index the batch dimension."""
        return replace(
            self,
            ids=None if self.ids is None else self.ids[idx],
            latents=None if self.latents is None else self.latents[idx],
        )
