"""KV cache that grows by groups of any size (one token, one VAR scale, one NBP block).

One ``LayerCache`` per transformer layer. With ``max_len`` the buffers are preallocated once
(no re-allocation per step); without, they grow by concatenation. ``static=True`` (needs
``max_len``) returns the whole zero-initialised buffers on every step, so every decoding step has
the same shapes (what ``torch.compile`` and CUDA graphs need); the causal / block-causal mask,
evaluated at absolute positions, already hides the slots not written yet. The batch dimension is
whatever the caller runs: for classifier-free guidance the generator runs the doubled batch
``[cond; uncond]`` through one cache. The caches also keep the blocks' AdaLN modulations of the
condition, which stays the same over all steps (VAR: 10 steps x one ``(dim, 6 dim)`` matmul per block).
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["LayerCache", "KVCache"]


class _ModulationMemo:
    """AdaLN modulations computed once per condition: decoding passes the same per-sample condition at every step."""

    _mod_key: torch.Tensor | None = None
    _mod: tuple[torch.Tensor, ...] = ()

    def modulation(self, ada: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``ada(cond)``, reused while ``cond`` is the same tensor (a per-token condition, RAR's, is recomputed)."""
        if cond.dim() != 2:
            return ada(cond)
        if self._mod_key is not cond:
            self._mod_key, self._mod = cond, ada(cond)
        return self._mod


class LayerCache(_ModulationMemo):
    def __init__(self, max_len: int | None = None, static: bool = False) -> None:
        if static and max_len is None:
            raise ValueError("a static KV cache needs max_len")
        self.max_len, self.static = max_len, static
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``(B, H, n, D)`` keys/values; return all keys/values so far."""
        n = k.shape[2]
        if self.k is not None and k.shape[0] != self.k.shape[0]:
            raise ValueError(f"batch size changed inside a KV cache: {self.k.shape[0]} -> {k.shape[0]}")
        if self.max_len is None:
            self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
            self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
            self.length += n
            return self.k, self.v
        if self.length + n > self.max_len:
            raise ValueError(f"KV cache overflow: {self.length} + {n} > max_len {self.max_len}")
        if self.k is None:
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            alloc = k.new_zeros if self.static else k.new_empty  # masked slots must be finite (0 * nan = nan)
            self.k, self.v = alloc(shape), alloc(shape)
        self.k[:, :, self.length : self.length + n] = k
        self.v[:, :, self.length : self.length + n] = v
        self.length += n
        if self.static:
            return self.k, self.v
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def truncate(self, length: int) -> None:
        """Forget everything after the first ``length`` positions (e.g. an ODE step's noisy entity)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of length {self.length} to {length}")
        self.length = length
        if self.max_len is None and self.k is not None:
            self.k, self.v = self.k[:, :, :length], self.v[:, :, :length]


class KVCache(_ModulationMemo):
    """Per-layer caches plus the shared current length (the absolute position of the next token)."""

    def __init__(self, num_layers: int, max_len: int | None = None, static: bool = False) -> None:
        self.layers = [LayerCache(max_len, static) for _ in range(num_layers)]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def truncate(self, length: int) -> None:
        for layer in self.layers:
            layer.truncate(length)

    def __getitem__(self, i: int) -> LayerCache:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)
