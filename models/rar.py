"""RAR (randomized autoregressive generation): the raster generator trained on random orders.

Training permutes each token sequence into a random factorization order with probability ``r``.
``r`` stays 1 for the first ``anneal_start`` fraction of training, decays linearly to 0 by
``anneal_end`` and the rest trains on raster order, so the model ends as a raster model that has
seen bidirectional context (the paper's point). Under a random order the model must know which
cell it is asked for: every slot carries the target-aware embedding of the cell it predicts
(``RasterConfig.target_pos_embed``), and every token keeps the RoPE coordinate of its own cell.

Sampling is the raster generator's: raster order with the KV cache, CFG constant, linear or with
the paper's power-cosine schedule (``SamplerConfig.cfg_schedule``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mmgen.data.shapes_text import shapes_text_vocab
from mmgen.models.base import Condition
from mmgen.models.raster import _TINY, RasterConfig, RasterGenerator
from mmgen.nn.losses import head_cross_entropy
from mmgen.registry import register_preset
from mmgen.tokens import Tokens

__all__ = ["RARConfig", "RARGenerator", "permute_probability", "rar_official_transformer", "RAR_SIZES", "RAR_OFFICIAL"]


@dataclass
class RARConfig(RasterConfig):
    target_pos_embed: bool = True
    anneal_start: float = 0.3125  # fraction of training at r = 1 (paper: epoch 125 of 400)
    anneal_end: float = 0.75  # r reaches 0 here (paper: epoch 300 of 400); raster order after


def permute_probability(progress: float, start: float, end: float) -> float:
    """The annealed probability ``r`` of a random order at training progress ``progress`` in [0, 1]."""
    if progress <= start:
        return 1.0
    if progress >= end:
        return 0.0
    return 1.0 - (progress - start) / (end - start)


class RARGenerator(RasterGenerator):
    config_class = RARConfig

    def __init__(self, config: RARConfig) -> None:
        if not config.target_pos_embed:
            raise ValueError("RAR needs target_pos_embed=True: under a random order a slot must know which cell it predicts")
        if not 0.0 <= config.anneal_start <= config.anneal_end <= 1.0:
            raise ValueError(f"need 0 <= anneal_start <= anneal_end <= 1, got {config.anneal_start}, {config.anneal_end}")
        super().__init__(config)

    def sample_orders(self, batch: int, r: float) -> torch.Tensor:
        """``(batch, N)`` orders: a random permutation with probability ``r``, else raster."""
        N = self.layout.num_tokens
        raster = torch.arange(N, device=self.device).expand(batch, N)
        if r <= 0:
            return raster.clone()
        shuffle = torch.rand(batch, device=self.device) < r
        random = torch.rand(batch, N, device=self.device).argsort(dim=1)
        return torch.where(shuffle[:, None], random, raster)

    def forward(self, tokens: Tokens, cond: Condition, progress: float = 0.0) -> tuple[torch.Tensor, dict]:
        """Loss at training ``progress`` in [0, 1] (the trainer passes ``step / steps``); eval is raster order."""
        r = permute_probability(progress, self.config.anneal_start, self.config.anneal_end) if self.training else 0.0
        cond = self.training_condition(cond)
        order = self.sample_orders(cond.batch_size, r)
        loss, _ = head_cross_entropy(self.hidden(tokens, cond, order), self.head, tokens.ids.gather(1, order))
        return loss, {"ce": loss.detach(), "rar/permute_prob": torch.tensor(r)}


def _register() -> None:
    register_preset("rar-tiny", RARGenerator, tags=("tiny",), transformer=dict(_TINY), cond="text", text_vocab=shapes_text_vocab)
    register_preset("rar-tiny-class", RARGenerator, tags=("tiny",), transformer=dict(_TINY), cond="class", num_classes=10)
    # mmgen's own architecture at RAR's reference sizes (class-conditional ImageNet 256, 16x16 tokens of a 1024-code MaskGIT VQ);
    # like the paper, their blocks are AdaLN-modulated by the class embedding.
    ref = dict(cond="class", num_classes=1000, vocab_size=1024, layout={"type": "grid", "h": 16, "w": 16}, image_size=256, token_dim=8)
    register_preset("rar-mmgen-b", RARGenerator, tags=("reference",), transformer=dict(dim=768, depth=24, heads=16, adaln_dim=768), **ref)
    register_preset("rar-mmgen-l", RARGenerator, tags=("reference",), transformer=dict(dim=1024, depth=24, heads=16, adaln_dim=1024), **ref)
    # the published RAR-B/L/XL/XXL (bytedance/1d-tokenizer README_RAR.md), on MaskGIT-VQ's 256-dim codes
    for size, (dim, depth, hidden) in RAR_SIZES.items():
        register_preset(f"rar-{size}", RARGenerator, tags=("reference", "official"), transformer=rar_official_transformer(dim, depth, 16, hidden),
                        **(ref | dict(token_dim=256)), **RAR_OFFICIAL)


RAR_SIZES = {"b": (768, 24, 3072), "l": (1024, 24, 4096), "xl": (1280, 32, 5120), "xxl": (1408, 40, 6144)}  # (hidden, layers, intermediate)
RAR_OFFICIAL = dict(start_token=True, abs_pos_embed=True, step_cond=True, head_bias=True, cond_dropout=0.1)


def rar_official_transformer(dim: int, depth: int, heads: int, hidden: int, dropout: float = 0.1, attn_dropout: float = 0.1) -> dict:
    """RAR's block (``modeling/rar.py``): LayerNorm (1e-6, affine kept), qk-LayerNorm, biases, GELU MLP, adaLN-zero per slot; no RoPE."""
    return dict(dim=dim, depth=depth, heads=heads, mlp="gelu", mlp_hidden=hidden, mlp_bias=True, qkv_bias="qkv", proj_bias=True,
                norm="layernorm", norm_eps=1e-6, qk_norm="layernorm", rope="none", adaln_dim=dim, adaln_norm_affine=True, dropout=dropout,
                attn_dropout=attn_dropout)

_register()
