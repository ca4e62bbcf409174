"""VQGAN-style tokenizer with LlamaGen's quantizer: one code per latent cell, raster order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from einops import rearrange

from mmgen.registry import register_preset
from mmgen.tokens import GridLayout, Tokens

from .base import TokenizerConfig, VisualTokenizer
from .quantizers import QuantizerOutput, build_quantizer

__all__ = ["VQConfig", "VQTokenizer"]


@dataclass
class VQConfig(TokenizerConfig):
    """Defaults are LlamaGen's VQ-16 (f=16, 16384 x 8 l2-normalised codebook, ~72M params)."""

    l2_norm: bool = True  # cosine lookup in a normalised codebook (LlamaGen); False = euclidean
    entropy_weight: float = 0.0
    # FSQ levels instead of the learned codebook (then codebook_size = prod, codebook_dim = len; l2_norm,
    # beta, entropy_weight and dead-code restarts do not apply): () = LlamaGen's VQ
    fsq_levels: tuple[int, ...] = ()


class VQTokenizer(VisualTokenizer):
    """Image -> ``(image_size/f)^2`` discrete ids on a ``GridLayout`` and back.

    Example:
        >>> tok = mmgen.create_tokenizer("vq-tiny")
        >>> tokens = tok.encode(pixels)          # Tokens(ids=(B, 64), layout=GridLayout(8, 8))
        >>> pixels_hat = tok.decode(tokens)      # (B, 3, 32, 32) in [-1, 1]
    """

    config_class: ClassVar[type] = VQConfig

    def __init__(self, config: VQConfig | dict) -> None:
        super().__init__(config)
        cfg = self.config
        self.quantizer = build_quantizer(cfg)

    @property
    def layout(self) -> GridLayout:
        s = self.latent_size
        return GridLayout(s, s)

    def quantize(self, pixels: torch.Tensor, update_stats: bool = False) -> QuantizerOutput:
        """Encoder + quant_conv + quantizer on checked pixels."""
        return self.quantizer(self.quant_conv(self.encoder(self.check_pixels(pixels))), update_stats=update_stats)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> Tokens:
        return Tokens(layout=self.layout, ids=self.quantize(pixels).ids)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Codebook lookup ``(B, n) -> (B, n, codebook_dim)`` (normalised codes if ``l2_norm``)."""
        return self.quantizer.lookup(ids)

    def decode(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        """``Tokens`` (or ``(B, h*w)`` ids) -> pixels ``(B, 3, H, W)`` clamped to ``[-1, 1]``."""
        ids = self.check_ids(tokens)
        lay = self.layout
        z_q = rearrange(self.embed_ids(ids), "b (h w) c -> b c h w", h=lay.h, w=lay.w)
        return self._decode_latent(z_q).clamp(-1, 1)

    def _reconstruct(self, pixels: torch.Tensor, update_stats: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        q = self.quantize(pixels, update_stats=update_stats)
        return self._decode_latent(q.quantized), q.loss, q.logs


# LlamaGen VQ-16 at 256 px: 16x16 tokens.
register_preset("vq-f16-llamagen", VQTokenizer, tags=("reference",))

# CPU recipe: 32x32 -> 8x8 tokens; no attention (too slow per FLOP on one CPU thread).
register_preset(
    "vq-tiny", VQTokenizer, tags=("tiny",),
    image_size=32, block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=16,
    level_attention=False, mid_attention=False, z_channels=64, codebook_size=512, codebook_dim=8,
    dead_code_steps=50, restart_dead_codes=True,
)
