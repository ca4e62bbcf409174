"""The one transformer every generator shares.

Pre-norm blocks (RMSNorm, SwiGLU, multi-axis RoPE, optional QK-norm), optional AdaLN conditioning
(DiT/VAR style, zero-initialised), attention through the dispatcher with a structural mask, and an
optional KV cache. Generators own their embeddings, heads and schedules; this module only maps
``(B, N, dim)`` to ``(B, N, dim)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmgen.nn.attention import attention
from mmgen.nn.kv_cache import KVCache, LayerCache
from mmgen.nn.layers import AdaLNModulation, RotaryEmbedding, SwiGLU, apply_rotary, modulate, swiglu_hidden
from mmgen.nn.masks import Full, Mask

__all__ = ["TransformerConfig", "Transformer", "Block", "compile_blocks"]


@dataclass
class TransformerConfig:
    dim: int = 256
    depth: int = 6
    heads: int = 8
    mlp_ratio: float = 4.0
    rope_axes: int = 3
    rope_theta: float = 10000.0
    adaln_dim: int = 0  # > 0: blocks are modulated by a condition vector of this size
    qk_norm: bool = True
    dropout: float = 0.0
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


class SelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.q_norm = nn.RMSNorm(cfg.head_dim) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(cfg.head_dim) if cfg.qk_norm else nn.Identity()
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, rope, mask: Mask | None, cache: LayerCache | None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        q_offset = 0
        if cache is not None:
            if cache.static and (mask is None or isinstance(mask, Full)):
                raise ValueError("a static KV cache needs a causal or block-causal mask to hide its unwritten slots")
            q_offset = cache.length
            k, v = cache.append(k, v)
        out = attention(q, k, v, mask, q_offset=q_offset)
        return self.dropout(self.proj(rearrange(out, "b h n d -> b n (h d)")))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.dim, elementwise_affine=not cfg.adaln_dim)
        self.attn = SelfAttention(cfg)
        self.norm2 = nn.RMSNorm(cfg.dim, elementwise_affine=not cfg.adaln_dim)
        self.mlp = SwiGLU(cfg.dim, swiglu_hidden(cfg.dim, cfg.mlp_ratio), cfg.dropout)
        self.ada = AdaLNModulation(cfg.adaln_dim, cfg.dim, 6) if cfg.adaln_dim else None

    def forward(self, x, rope, mask, cache=None, cond=None) -> torch.Tensor:
        if self.ada is None:
            x = x + self.attn(self.norm1(x), rope, mask, cache)
            return x + self.mlp(self.norm2(x))
        if cond is None:
            raise ValueError("this transformer uses AdaLN: pass the condition vector `cond`")
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(cond)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), sh1, sc1), rope, mask, cache)
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), sh2, sc2))


class Transformer(nn.Module):
    """``forward(x (B,N,dim), positions (N,axes) or (B,N,axes), mask, cache=None, cond=None) -> (B,N,dim)``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_axes, cfg.rope_theta)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.RMSNorm(cfg.dim, elementwise_affine=not cfg.adaln_dim)
        self.final_ada = AdaLNModulation(cfg.adaln_dim, cfg.dim, 2) if cfg.adaln_dim else None
        self.apply(_init_weights)
        for block in self.blocks:  # GPT-2: residual projections scaled with depth
            for lin in (block.attn.proj, block.mlp.w_down):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * cfg.depth))

    def new_cache(self, max_len: int | None = None, static: bool = False) -> KVCache:
        return KVCache(self.cfg.depth, max_len, static)

    def forward(self, x, positions, mask: Mask | None, cache: KVCache | None = None, cond=None) -> torch.Tensor:
        if positions.shape[-2] != x.shape[1]:
            raise ValueError(f"{positions.shape[-2]} positions for {x.shape[1]} tokens")
        rope = self.rope(positions.to(x.device))
        for i, block in enumerate(self.blocks):
            layer_cache = cache[i] if cache is not None else None
            if self.cfg.grad_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, rope, mask, None, cond, use_reentrant=False)
            else:
                x = block(x, rope, mask, layer_cache, cond)
        x = self.norm(x)
        if self.final_ada is not None:
            shift, scale = self.final_ada(cond)
            x = modulate(x, shift, scale)
        return x

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), PaLM/nanoGPT estimate: 6N + 12·L·d·T."""
        n = sum(p.numel() for p in self.blocks.parameters())
        return 6 * n + 12 * self.cfg.depth * self.cfg.dim * seq_len


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        if getattr(m, "_skip_init", False):
            return
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def compile_blocks(model: nn.Module, backend: bool | str = True) -> int:
    """``torch.compile`` every transformer block in place (the root if there is none); returns how many.

    Per block, not the whole model: one compiled graph serves all layers of a width, sampling
    loops and caches stay eager, and it composes with FSDP2's per-block shards.
    """
    kw = {} if backend is True else {"backend": backend}
    blocks = [m for m in model.modules() if isinstance(m, Block)] or [model]
    for m in blocks:
        m.compile(**kw)
    return len(blocks)
