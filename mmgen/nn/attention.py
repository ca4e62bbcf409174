"""Attention dispatcher: one call site, several backends, structural masks in.

Backends:
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (everywhere; flash /
  memory-efficient kernels on CUDA). Plain causal uses ``is_causal``; a query group that may see
  every key gets no mask; other structures become a boolean mask.
- ``xformers``: ``xformers.ops.memory_efficient_attention`` on CUDA when installed (soft import).
- ``flex``: PyTorch FlexAttention with a ``BlockMask`` built from the structure (cached per
  shape), so block-causal masks (VAR scales, xAR entities, NBP blocks) never become dense
  tensors: compiled into one fused kernel on CUDA; on CPU the unfused reference (for tests).
- ``eager``: the explicit softmax reference, used by tests.
- ``auto`` (default): xformers for CUDA tensors when importable, otherwise sdpa.

Choose with the ``MMGEN_ATTN_BACKEND`` environment variable or, scoped and thread-safe, with
``with attention_backend("eager"): ...`` (a context variable: no global monkeypatching).
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import math
import os
import warnings
from functools import lru_cache
from typing import Iterator

import torch
import torch.nn.functional as F

from mmgen.nn.layers import dropout
from mmgen.nn.masks import Mask, all_visible, block_ids, dense_mask, is_plain_causal

__all__ = ["attention", "attention_backend", "available_backends", "current_backend", "BACKENDS"]

BACKENDS = ("auto", "sdpa", "xformers", "flex", "eager")
_backend_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("mmgen_attn_backend", default=None)


@lru_cache(maxsize=1)
def _xformers_ops():
    if importlib.util.find_spec("xformers") is None:
        return None
    try:
        import xformers.ops as xops
    except Exception:  # a broken install must not break attention
        return None
    return xops


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on ``device``."""
    out = ["sdpa", "flex", "eager"]
    if torch.device(device).type == "cuda" and _xformers_ops() is not None:
        out.insert(1, "xformers")
    return out


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {list(BACKENDS)}")
    return name


def current_backend() -> str:
    name = _backend_var.get()
    if name is None:
        name = _check(os.environ.get("MMGEN_ATTN_BACKEND", "auto").lower())
    return name


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Use backend ``name`` inside the ``with`` block (this thread / task only)."""
    token = _backend_var.set(_check(name))
    try:
        yield
    finally:
        _backend_var.reset(token)


def _resolve(name: str, q: torch.Tensor) -> str:
    if name == "auto":
        return "xformers" if q.is_cuda and _xformers_ops() is not None else "sdpa"
    if name == "xformers":
        if not q.is_cuda:
            raise RuntimeError("the xformers attention backend needs CUDA tensors; use 'sdpa' or 'auto' on CPU")
        if _xformers_ops() is None:
            raise RuntimeError("xformers is not installed: `pip install xformers` (CUDA only) or use backend 'sdpa'")
    return name


def _eager(q, k, v, allowed: torch.Tensor | None, dropout_p: float = 0.0) -> torch.Tensor:
    scores = (q.float() / math.sqrt(q.shape[-1])) @ k.float().transpose(-2, -1)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = scores.softmax(-1)
    return (dropout(probs, dropout_p) @ v.float()).to(q.dtype)


def _xformers(q, k, v, mask: Mask | None, q_offset: int, dropout_p: float = 0.0) -> torch.Tensor:
    xops = _xformers_ops()
    q_len, kv_len = q.shape[2], k.shape[2]
    bias = None
    if is_plain_causal(mask, q_len, kv_len, q_offset):
        bias = xops.LowerTriangularMask()
    elif not all_visible(mask, q_len, kv_len, q_offset):
        allowed = dense_mask(mask, q_len, kv_len, q_offset, q.device)
        bias = torch.zeros(q_len, kv_len, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        bias = bias.expand(q.shape[0], q.shape[1], q_len, kv_len)
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, p=dropout_p)
    return out.transpose(1, 2)


@lru_cache(maxsize=1)
def _flex_kernel(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if device_type == "cuda" else flex_attention


@lru_cache(maxsize=64)
def _flex_block_mask(mask: Mask, q_len: int, kv_len: int, q_offset: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    ids = block_ids(mask, kv_len, device)

    def visible(b, h, q, kv):
        return ids[kv] <= ids[q + q_offset]

    return create_block_mask(visible, None, None, q_len, kv_len, device=device)


def _flex(q, k, v, mask: Mask | None, q_offset: int) -> torch.Tensor:
    if q.device.type == "cpu" and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        raise RuntimeError("the 'flex' attention backend has no backward pass on CPU in PyTorch; train with 'sdpa' there")
    block_mask = None
    if not all_visible(mask, q.shape[2], k.shape[2], q_offset):
        block_mask = _flex_block_mask(mask, q.shape[2], k.shape[2], q_offset, str(q.device))
    with warnings.catch_warnings():  # CPU runs the unfused reference on purpose
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return _flex_kernel(q.device.type)(q, k, v, block_mask=block_mask)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask | None = None, q_offset: int = 0, dropout_p: float = 0.0) -> torch.Tensor:
    """Multi-head attention ``(B, H, Lq, D) x (B, H, Lk, D) -> (B, H, Lq, D)``.

    Args:
        mask: a structural mask (``Causal``, ``BlockCausal``, ``Full``) or None for full attention.
        q_offset: absolute position of the first query (queries are a suffix when decoding with a cache).
        dropout_p: dropout on the attention weights (training only: the caller passes 0 in eval).
    """
    if q.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention expects (B,H,L,D) tensors with matching B,H,D; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    backend = _resolve(current_backend(), q)
    q_len, kv_len = q.shape[2], k.shape[2]
    if backend == "xformers":
        return _xformers(q, k, v, mask, q_offset, dropout_p)
    if backend == "flex":
        if dropout_p:
            raise ValueError(f"the 'flex' attention backend has no attention dropout (got dropout_p={dropout_p}); use 'sdpa'")
        return _flex(q, k, v, mask, q_offset)
    if backend == "eager" or (dropout_p and q.device.type == "cpu"):  # SDPA's CPU dropout runs its math kernel with a slow mask
        allowed = None if all_visible(mask, q_len, kv_len, q_offset) else dense_mask(mask, q_len, kv_len, q_offset, q.device)
        return _eager(q, k, v, allowed, dropout_p)
    if all_visible(mask, q_len, kv_len, q_offset):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if is_plain_causal(mask, q_len, kv_len, q_offset):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask(mask, q_len, kv_len, q_offset, q.device), dropout_p=dropout_p)
