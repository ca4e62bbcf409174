"""xAR's entities: how a latent grid is cut into AR steps ("Next-X").

An entity schedule turns the ``h x w`` latent grid of a continuous tokenizer into a sequence of
entities, each one AR step (bidirectional inside, block-causal across):

- ``token``            one latent token per step, raster order (``cell:1``)
- ``cell:k``           k x k blocks of neighbouring tokens, cells in raster order
- ``subsample:k``      k^2 strided sub-grids: entity ``(a, b)`` holds every token ``(r, c)`` with
                       ``r % k == a`` and ``c % k == b`` (a non-local grouping of distant tokens)
- ``scale:s1,s2,..``   coarse-to-fine resolutions (area-downsampled latents), the last one the grid
- ``image``            the whole grid in one step

Grid schedules are a permutation of the grid (``split`` gathers, ``merge`` scatters back); the
scale schedule is a pyramid whose last scale is the result. Every schedule gives the group sizes
of its ``BlockCausal`` mask and M-RoPE coordinates ``(P + entity, P + row, P + col)`` in grid
units, so all entities share one spatial frame (as VAR's scales do).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from mmgen.models.var import scale_positions
from mmgen.nn.masks import BlockCausal
from mmgen.tokens import GridLayout

__all__ = ["EntitySchedule", "parse_entities", "ENTITY_KINDS"]

ENTITY_KINDS = ("token", "cell", "subsample", "scale", "image")


@dataclass(frozen=True)
class EntitySchedule:
    """One entity schedule on an ``h x w`` grid (see the module doc for the kinds)."""

    kind: str
    h: int
    w: int
    k: int = 1  # cell / subsample size
    scales: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ENTITY_KINDS:
            raise ValueError(f"unknown entity kind {self.kind!r}; allowed: {', '.join(ENTITY_KINDS)}")
        if self.kind in ("cell", "subsample"):
            if self.k < 1 or self.h % self.k or self.w % self.k:
                raise ValueError(f"{self.kind} size k={self.k} must be >= 1 and divide the {self.h}x{self.w} latent grid")
        if self.kind == "scale":
            s = self.scales
            if not s or any(a <= 0 for a in s) or list(s) != sorted(set(s)):
                raise ValueError(f"scales must be positive and strictly increasing, got {s}")
            if self.h != self.w or s[-1] != self.h:
                raise ValueError(f"the last scale must be the (square) latent grid {self.h}x{self.w}, got scales {s}")

    # ----- structure
    @property
    def sizes(self) -> tuple[int, ...]:
        """Tokens per entity, in generation order."""
        if self.kind == "scale":
            return tuple(s * s for s in self.scales)
        if self.kind == "image":
            return (self.h * self.w,)
        k = 1 if self.kind == "token" else self.k
        n, per = self.h * self.w // (k * k), k * k
        return (per,) * n if self.kind != "subsample" else (n,) * per

    @property
    def num_entities(self) -> int:
        return len(self.sizes)

    @property
    def num_slots(self) -> int:
        """Sequence slots of all entities (more than ``h*w`` for the scale pyramid)."""
        return sum(self.sizes)

    def offsets(self) -> list[int]:
        """Start slot of every entity, plus the total at the end."""
        out = [0]
        for s in self.sizes:
            out.append(out[-1] + s)
        return out

    def mask(self, prefix: int) -> BlockCausal:
        return BlockCausal(self.sizes, prefix=prefix)

    def entity_index(self) -> torch.Tensor:
        """``(num_slots,)`` entity id of every slot."""
        cpu = torch.device("cpu")
        return torch.repeat_interleave(torch.arange(self.num_entities, device=cpu), torch.tensor(self.sizes, device=cpu))

    def order(self) -> torch.Tensor:
        """Grid schedules: ``(h*w,)`` raster index of every slot (entity order)."""
        if self.kind == "scale":
            raise ValueError("the scale schedule is a pyramid, not a permutation of the grid")
        idx = torch.arange(self.h * self.w, device=torch.device("cpu")).reshape(self.h, self.w)
        if self.kind in ("token", "image"):
            return idx.reshape(-1)
        k = self.k
        if self.kind == "cell":
            return rearrange(idx, "(gh a) (gw b) -> (gh gw a b)", a=k, b=k)
        return rearrange(idx, "(gh a) (gw b) -> (a b gh gw)", a=k, b=k)  # subsample: stride k

    def positions(self, prefix: int) -> torch.Tensor:
        """``(prefix + num_slots, 3)`` M-RoPE coordinates: prefix 1D, then ``(P+entity, P+row, P+col)``."""
        if self.kind == "scale":
            return scale_positions(prefix, self.scales)
        cpu = torch.device("cpu")
        order = self.order()
        p = torch.arange(prefix, device=cpu)[:, None].expand(prefix, 3).float()
        g = torch.stack([self.entity_index(), order // self.w, order % self.w], -1).float() + prefix
        return torch.cat([p, g])

    # ----- latents <-> entity sequence
    def split(self, latents: torch.Tensor) -> torch.Tensor:
        """Raster latents ``(B, h*w, C)`` -> entity sequence ``(B, num_slots, C)``."""
        if latents.shape[1] != self.h * self.w:
            raise ValueError(f"expected {self.h * self.w} latent tokens for a {self.h}x{self.w} grid, got {latents.shape[1]}")
        if self.kind != "scale":
            return latents[:, self.order().to(latents.device)]
        grid = rearrange(latents, "b (h w) c -> b c h w", h=self.h)
        parts = [grid if s == self.h else F.interpolate(grid, size=(s, s), mode="area") for s in self.scales]
        return torch.cat([rearrange(p, "b c h w -> b (h w) c") for p in parts], dim=1)

    def merge(self, seq: torch.Tensor, done: int | None = None) -> torch.Tensor:
        """Entity sequence (first ``done`` entities; all by default) -> raster latents ``(B, h*w, C)``.

        Entities not generated yet are zero (the latents' mean); a partial pyramid shows its
        finest scale so far, upsampled (what the streaming callback previews).
        """
        done = self.num_entities if done is None else done
        end = self.offsets()[done]
        if seq.shape[1] < end:
            raise ValueError(f"{done} entities need {end} slots, got {seq.shape[1]}")
        B, C = seq.shape[0], seq.shape[-1]
        if self.kind == "scale":
            s = self.scales[done - 1]
            last = rearrange(seq[:, end - s * s : end], "b (h w) c -> b c h w", h=s)
            if s != self.h:
                last = F.interpolate(last, size=(self.h, self.w), mode="bilinear", align_corners=False)
            return rearrange(last, "b c h w -> b (h w) c")
        out = seq.new_zeros(B, self.h * self.w, C)
        out[:, self.order()[:end].to(seq.device)] = seq[:, :end]
        return out


def parse_entities(spec: str, layout: GridLayout) -> EntitySchedule:
    """``"token" | "cell:k" | "subsample:k" | "scale:1,2,4,8" | "image"`` on ``layout`` -> schedule."""
    if not isinstance(layout, GridLayout):
        raise ValueError(f"xAR entities need a grid latent layout, got {layout}")
    kind, _, arg = str(spec).strip().partition(":")
    kind = kind.strip()
    if kind not in ENTITY_KINDS:
        raise ValueError(f"entities={spec!r}: unknown kind {kind!r}; allowed: token, cell:K, subsample:K, scale:S1,S2,..., image")
    if kind in ("token", "image"):
        if arg:
            raise ValueError(f"entities={spec!r}: {kind!r} takes no argument")
        return EntitySchedule(kind, layout.h, layout.w)
    if not arg:
        raise ValueError(f"entities={spec!r}: {kind!r} needs an argument, e.g. {kind}:2" if kind != "scale" else f"entities={spec!r}: give the scales, e.g. scale:1,2,4,{layout.h}")
    try:
        nums = tuple(int(a) for a in arg.split(","))
    except ValueError:
        raise ValueError(f"entities={spec!r}: {arg!r} is not a comma-separated list of integers") from None
    if kind == "scale":
        return EntitySchedule(kind, layout.h, layout.w, scales=nums)
    if len(nums) != 1:
        raise ValueError(f"entities={spec!r}: {kind} takes one size, got {nums}")
    return EntitySchedule(kind, layout.h, layout.w, k=nums[0])
