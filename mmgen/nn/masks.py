"""Structural attention masks: described by a few integers, materialized only when a backend needs it.

Every mask here is "block-causal over block ids": each position gets a non-decreasing block id
and a query may attend to a key iff ``block_id(key) <= block_id(query)``.

- ``Causal(prefix=P)``: the first P positions (the condition prefix) form block 0 and see each
  other bidirectionally; every later position is its own block (plain causal).
- ``BlockCausal(sizes, prefix=P)``: after the prefix, consecutive groups of ``sizes[k]`` tokens are
  bidirectional inside and causal across (VAR scales, xAR entities, NBP blocks).
- ``Full``: everything sees everything.

Queries may be a suffix of the keys (KV-cached decoding): ``q_offset`` is the absolute position
of the first query.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Union

import torch

__all__ = ["Causal", "BlockCausal", "Full", "Mask", "block_ids", "dense_mask", "all_visible"]


@dataclass(frozen=True)
class Causal:
    prefix: int = 0

    def __post_init__(self) -> None:
        if self.prefix < 0:
            raise ValueError(f"prefix must be >= 0, got {self.prefix}")


@dataclass(frozen=True)
class BlockCausal:
    sizes: tuple[int, ...]
    prefix: int = 0

    def __post_init__(self) -> None:
        if not self.sizes or any(s <= 0 for s in self.sizes):
            raise ValueError(f"block sizes must be positive, got {self.sizes}")
        if self.prefix < 0:
            raise ValueError(f"prefix must be >= 0, got {self.prefix}")
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))

    @property
    def length(self) -> int:
        return self.prefix + sum(self.sizes)


@dataclass(frozen=True)
class Full:
    pass


Mask = Union[Causal, BlockCausal, Full]


def _block_id(mask: Mask, pos: int) -> int:
    """Block id of one absolute position (O(#blocks), used for the fast-path checks)."""
    if isinstance(mask, Full):
        return 0
    if pos < mask.prefix:
        return 0
    if isinstance(mask, Causal):
        return 1 + pos - mask.prefix
    start = mask.prefix
    for k, s in enumerate(mask.sizes):
        start += s
        if pos < start:
            return 1 + k
    raise ValueError(f"position {pos} lies beyond the mask's {mask.length} positions")


@lru_cache(maxsize=64)
def _block_ids_cpu(mask: Mask, n: int) -> torch.Tensor:
    if isinstance(mask, Full):
        return torch.zeros(n, dtype=torch.long)
    pos = torch.arange(n)
    if isinstance(mask, Causal):
        return torch.where(pos < mask.prefix, 0, 1 + pos - mask.prefix)
    if n > mask.length:
        raise ValueError(f"sequence of {n} tokens is longer than the mask's {mask.length}")
    ids = torch.repeat_interleave(torch.arange(1, len(mask.sizes) + 1), torch.tensor(mask.sizes))
    return torch.cat([torch.zeros(mask.prefix, dtype=torch.long), ids])[:n]


def block_ids(mask: Mask, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Block id of each of the first ``n`` positions."""
    return _block_ids_cpu(mask, n).to(device)


def dense_mask(mask: Mask, q_len: int, kv_len: int, q_offset: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean ``(q_len, kv_len)`` mask, True where attention is allowed (the reference semantics)."""
    if q_offset + q_len > kv_len:
        raise ValueError(f"queries [{q_offset}, {q_offset + q_len}) exceed the {kv_len} keys")
    ids = block_ids(mask, kv_len, device)
    return ids[None, :] <= ids[q_offset : q_offset + q_len, None]


def all_visible(mask: Mask | None, q_len: int, kv_len: int, q_offset: int = 0) -> bool:
    """True when every query may see every key, so no mask needs to be passed at all."""
    if mask is None or isinstance(mask, Full):
        return True
    return _block_id(mask, q_offset) >= _block_id(mask, kv_len - 1)


def is_plain_causal(mask: Mask | None, q_len: int, kv_len: int, q_offset: int = 0) -> bool:
    """True when the mask is exactly the lower-triangular causal mask (SDPA ``is_causal``)."""
    return isinstance(mask, Causal) and mask.prefix <= 1 and q_offset == 0 and q_len == kv_len
