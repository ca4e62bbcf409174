"""The one transformer every generator shares.

Pre-norm blocks (RMSNorm, SwiGLU, multi-axis RoPE, optional QK-norm), optional AdaLN conditioning
(DiT/VAR style, zero-initialised), attention through the dispatcher with a structural mask, and an
optional KV cache. Generators own their embeddings, heads and schedules; this module only maps
``(B, N, dim)`` to ``(B, N, dim)``.

The defaults are mmgen's own architecture. The other options express the published ones, so
their weights load unchanged (``mmgen.convert``): LayerNorm, GELU MLPs, biases, VAR's l2-normalised
attention with a learned per-head scale, LlamaGen's 2D RoPE, no RoPE (absolute embeddings are then
the generator's), block norms that keep their affine under AdaLN (RAR), dropout and drop-path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmgen.nn.attention import attention
from mmgen.nn.kv_cache import KVCache, LayerCache
from mmgen.nn.layers import AdaLNModulation, Dropout, GeluMLP, RotaryEmbedding, SwiGLU, apply_rotary, drop_path, modulate, swiglu_hidden
from mmgen.nn.masks import Full, Mask

__all__ = ["TransformerConfig", "Transformer", "Block", "compile_blocks"]

NORMS = ("rmsnorm", "layernorm")
MLPS = ("swiglu", "gelu", "gelu-tanh")
QK_NORMS = ("none", "rmsnorm", "layernorm", "l2")
QKV_BIASES = ("none", "qkv", "qv")
ROPES = ("multi-axis", "llamagen-2d", "none")


@dataclass
class TransformerConfig:
    dim: int = 256
    depth: int = 6
    heads: int = 8
    mlp_ratio: float = 4.0
    rope_axes: int = 3
    rope_theta: float = 10000.0
    adaln_dim: int = 0  # > 0: blocks are modulated by a condition vector of this size
    qk_norm: bool | str = True  # True = "rmsnorm"; "l2" = VAR (unit q, k; learned per-head scale)
    dropout: float = 0.0  # residual-branch dropout (attention output and MLP)
    attn_dropout: float = 0.0  # dropout on the attention weights (RAR trains with 0.1)
    grad_checkpointing: bool = False
    norm: str = "rmsnorm"
    norm_eps: float | None = None  # None: torch's default for the norm type
    mlp: str = "swiglu"
    mlp_hidden: int = 0  # 0: from mlp_ratio (SwiGLU: 2/3 of it, rounded up to mlp_multiple_of)
    mlp_multiple_of: int = 32
    mlp_bias: bool = False
    qkv_bias: str = "none"  # "qv": q and v biases, k bias fixed at zero (VAR)
    proj_bias: bool = False
    rope: str = "multi-axis"  # "llamagen-2d": 2 axes, NaN coordinates are not rotated but zeroed; "none"
    adaln_norm_affine: bool = False  # keep the block norms' affine parameters under AdaLN (RAR)
    drop_path: float = 0.0  # stochastic depth, rising linearly from 0 at the first block to this at the last

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        for name, allowed in (("norm", NORMS), ("mlp", MLPS), ("qk_norm", QK_NORMS), ("qkv_bias", QKV_BIASES), ("rope", ROPES)):
            if getattr(self, name) not in allowed and not (name == "qk_norm" and isinstance(self.qk_norm, bool)):
                raise ValueError(f"{name}={getattr(self, name)!r}; choose one of {list(allowed)}")

    @property
    def qk_norm_type(self) -> str:
        if isinstance(self.qk_norm, bool):
            return "rmsnorm" if self.qk_norm else "none"
        return self.qk_norm

    @property
    def hidden(self) -> int:
        """MLP width."""
        if self.mlp_hidden:
            return self.mlp_hidden
        if self.mlp == "swiglu":
            return swiglu_hidden(self.dim, self.mlp_ratio, self.mlp_multiple_of)
        return round(self.dim * self.mlp_ratio)

    def make_norm(self, dim: int, affine: bool = True) -> nn.Module:
        kw = {} if self.norm_eps is None else {"eps": self.norm_eps}
        if self.norm == "layernorm":
            return nn.LayerNorm(dim, elementwise_affine=affine, **kw)
        return nn.RMSNorm(dim, elementwise_affine=affine, **kw)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


class SelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=cfg.qkv_bias == "qkv")
        if cfg.qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(cfg.dim))
            self.v_bias = nn.Parameter(torch.zeros(cfg.dim))
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=cfg.proj_bias)
        qk = cfg.qk_norm_type
        self.l2_qk = qk == "l2"
        if self.l2_qk:  # VAR: q, k on the unit sphere, logits scaled by a learned exp(s) <= 100 per head
            self.qk_scale = nn.Parameter(torch.full((1, cfg.heads, 1, 1), math.log(4.0)))
        norm = lambda: cfg.make_norm(cfg.head_dim) if qk in ("rmsnorm", "layernorm") else nn.Identity()  # noqa: E731
        self.q_norm, self.k_norm = norm(), norm()
        self.dropout = Dropout(cfg.dropout)
        self.attn_dropout = cfg.attn_dropout

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "q_bias"):
            return self.qkv(x)
        return F.linear(x, self.qkv.weight, torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias]))

    def forward(self, x, rope, mask: Mask | None, cache: LayerCache | None) -> torch.Tensor:
        q, k, v = rearrange(self._qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if self.l2_qk:  # the dispatcher divides by sqrt(d): fold it into q so the logit scale is exp(s)
            scale = self.qk_scale.clamp_max(math.log(100.0)).exp() * math.sqrt(q.shape[-1])
            q, k = F.normalize(q, dim=-1) * scale, F.normalize(k, dim=-1)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        q_offset = 0
        if cache is not None:
            if cache.static and (mask is None or isinstance(mask, Full)):
                raise ValueError("a static KV cache needs a causal or block-causal mask to hide its unwritten slots")
            q_offset = cache.length
            k, v = cache.append(k, v)
        out = attention(q, k, v, mask, q_offset=q_offset, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.dropout(self.proj(rearrange(out, "b h n d -> b n (h d)")))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        affine = not cfg.adaln_dim or cfg.adaln_norm_affine
        self.norm1 = cfg.make_norm(cfg.dim, affine)
        self.attn = SelfAttention(cfg)
        self.norm2 = cfg.make_norm(cfg.dim, affine)
        if cfg.mlp == "swiglu":
            if cfg.mlp_bias:
                raise ValueError("mlp_bias=True is only available for the GELU MLPs")
            self.mlp = SwiGLU(cfg.dim, cfg.hidden, cfg.dropout)
        else:
            self.mlp = GeluMLP(cfg.dim, cfg.hidden, cfg.dropout, "tanh" if cfg.mlp == "gelu-tanh" else "none", cfg.mlp_bias)
        self.ada = AdaLNModulation(cfg.adaln_dim, cfg.dim, 6) if cfg.adaln_dim else None
        self.drop_path = drop_path

    def forward(self, x, rope, mask, cache=None, cond=None) -> torch.Tensor:
        """``cond`` is ``(B, adaln_dim)`` or per token ``(B, N, adaln_dim)`` (RAR's per-step condition)."""
        dp = lambda h: drop_path(h, self.drop_path, self.training)  # noqa: E731
        if self.ada is None:
            x = x + dp(self.attn(self.norm1(x), rope, mask, cache))
            return x + dp(self.mlp(self.norm2(x)))
        if cond is None:
            raise ValueError("this transformer uses AdaLN: pass the condition vector `cond`")
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(cond) if cache is None else cache.modulation(self.ada, cond)
        if g1.dim() == 2:
            g1, g2 = g1[:, None], g2[:, None]
        x = x + dp(g1 * self.attn(modulate(self.norm1(x), sh1, sc1), rope, mask, cache))
        return x + dp(g2 * self.mlp(modulate(self.norm2(x), sh2, sc2)))


class Transformer(nn.Module):
    """``forward(x (B,N,dim), positions (N,axes) or (B,N,axes), mask, cache=None, cond=None) -> (B,N,dim)``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.rope == "none":
            self.rope = None
        else:
            axes = 2 if cfg.rope == "llamagen-2d" else cfg.rope_axes
            self.rope = RotaryEmbedding(cfg.head_dim, axes, cfg.rope_theta, zero_nan=cfg.rope == "llamagen-2d")
        rates = torch.linspace(0, cfg.drop_path, cfg.depth, device="cpu").tolist() if cfg.drop_path else [0.0] * cfg.depth
        self.blocks = nn.ModuleList(Block(cfg, p) for p in rates)
        self.norm = cfg.make_norm(cfg.dim, affine=not cfg.adaln_dim)
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
        rope = None if self.rope is None else self.rope(positions.to(x.device))
        for i, block in enumerate(self.blocks):
            layer_cache = cache[i] if cache is not None else None
            if self.cfg.grad_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, rope, mask, None, cond, use_reentrant=False)
            else:
                x = block(x, rope, mask, layer_cache, cond)
        x = self.norm(x)
        if self.final_ada is not None:
            shift, scale = self.final_ada(cond) if cache is None else cache.modulation(self.final_ada, cond)
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
