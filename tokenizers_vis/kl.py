"""Continuous latent tokenizer: a KL-regularised autoencoder (LDM / diffusers ``AutoencoderKL``).

The encoder (diffusers' VAE ``Encoder``, arranged as the VQ tokenizers here) predicts a diagonal
Gaussian posterior per latent cell (diffusers' ``DiagonalGaussianDistribution``); training
decodes a posterior sample and adds ``kl_weight`` times the KL to N(0, I), averaged per latent
element (so the weight does not depend on the image size). Generators see ``Tokens.latents``
``(B, h*w, C)`` in raster order, shifted and scaled to about zero mean and unit variance.

Latent scale: like Stable Diffusion's ``scaling_factor`` (and SD3's ``shift_factor``), but per
channel and measured rather than hard-coded: training keeps a running per-channel mean / std of
the posterior means (buffers saved with the weights; momentum ``stats_momentum``, so they track
the last ~10 training steps), and :meth:`calibrate` sets them exactly from a batch.
``encode`` returns the *posterior mean* (deterministic; pass ``sample=True`` for a sample).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from einops import rearrange
from torch import nn

from mmgen.registry import register_preset
from mmgen.tokens import GridLayout, Tokens

from .base import TokenizerConfig, VisualTokenizer

__all__ = ["KLConfig", "KLTokenizer"]


@dataclass
class KLConfig(TokenizerConfig):
    """Defaults are MAR's KL-16 (LDM f16 VAE: ch 128 x (1,1,2,2,4), 16 latent channels), used by xAR.

    ``z_channels`` is the encoder output (LDM's doubled z: mean and log-variance), mapped by a 1x1
    ``quant_conv`` to ``2 * latent_channels``. The codebook fields of TokenizerConfig are unused.
    """

    z_channels: int = 32
    latent_channels: int = 16
    kl_weight: float = 1e-6  # per latent element, relative to the per-pixel reconstruction loss
    sample_posterior: bool = True  # decode a posterior sample while training (False: the mean)
    stats_momentum: float = 0.9  # running per-channel mean/std of the latents (each batch holds thousands of values per channel)


class KLTokenizer(VisualTokenizer):
    """Image -> ``(image_size/f)^2`` continuous latents on a ``GridLayout`` and back.

    Example:
        >>> tok = mmgen.create_tokenizer("kl-tiny")
        >>> tokens = tok.encode(pixels)          # Tokens(latents=(B, 64, 4), layout=GridLayout(8, 8))
        >>> pixels_hat = tok.decode(tokens)      # (B, 3, 32, 32) in [-1, 1]
    """

    config_class: ClassVar[type] = KLConfig

    def __init__(self, config: KLConfig | dict) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg.latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {cfg.latent_channels}")
        if cfg.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {cfg.kl_weight}")
        if not 0.0 <= cfg.stats_momentum < 1.0:
            raise ValueError(f"stats_momentum must be in [0, 1), got {cfg.stats_momentum}")
        if cfg.quant_conv_ks == 0:
            raise ValueError("quant_conv_ks=0 is not allowed for KL: quant_conv maps z_channels to the 2 x latent_channels moments")
        pad = cfg.quant_conv_ks // 2
        self.quant_conv = nn.Conv2d(cfg.z_channels, 2 * cfg.latent_channels, cfg.quant_conv_ks, padding=pad)
        self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.z_channels, cfg.quant_conv_ks, padding=pad)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))
        self.register_buffer("stats_updates", torch.zeros((), dtype=torch.long))

    # ----- what a generator reads
    @property
    def vocab_size(self) -> int:
        return 0  # continuous

    @property
    def codebook_dim(self) -> int:
        """Channels of a latent token (generators read it as ``token_dim``)."""
        return self.config.latent_channels

    @property
    def scaling_factor(self) -> torch.Tensor:
        """Stable Diffusion's name for ``1 / latent_std`` (here per channel)."""
        return 1.0 / self.latent_std

    @property
    def layout(self) -> GridLayout:
        s = self.latent_size
        return GridLayout(s, s)

    # ----- contract
    def posterior(self, pixels: torch.Tensor) -> DiagonalGaussianDistribution:
        return DiagonalGaussianDistribution(self.quant_conv(self.encoder(self.check_pixels(pixels))))

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tokens:
        """Pixels -> normalised latents: the posterior mean (or a sample with ``sample=True``)."""
        post = self.posterior(pixels)
        z = post.sample(generator) if sample else post.mode()
        z = (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]
        return Tokens(layout=self.layout, latents=rearrange(z, "b c h w -> b (h w) c"))

    def decode(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        """``Tokens`` (or ``(B, h*w, C)`` latents) -> pixels ``(B, 3, H, W)`` clamped to ``[-1, 1]``."""
        z = self.check_latents(tokens) * self.latent_std + self.latent_mean
        lay = self.layout
        return self._decode_latent(rearrange(z, "b (h w) c -> b c h w", h=lay.h, w=lay.w)).clamp(-1, 1)

    def check_latents(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        if isinstance(tokens, Tokens):
            if tokens.latents is None:
                raise ValueError(f"{type(self).__name__} decodes continuous latents, got Tokens with ids only")
            if tokens.layout != self.layout:
                raise ValueError(f"tokens have layout {tokens.layout}, this tokenizer produces {self.layout}")
            tokens = tokens.latents
        n, c = self.layout.num_tokens, self.codebook_dim
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (n, c):
            raise ValueError(f"latents must be (B, {n}, {c}) for layout {self.layout}, got shape {tuple(tokens.shape)}")
        if not tokens.is_floating_point():
            raise ValueError(f"latents must be floating point, got dtype {tokens.dtype}")
        return tokens

    # ----- training
    def _reconstruct(self, pixels: torch.Tensor, update_stats: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        post = self.posterior(pixels)
        z = post.sample() if self.training and self.config.sample_posterior else post.mode()
        kl = post.kl().sum() / post.mean.numel()  # per latent element
        mean = post.mean.detach().float()
        if update_stats:
            self._update_stats(mean)
        logs = {"kl_loss": kl.detach(), "latent_mean": mean.mean(), "latent_std": mean.transpose(0, 1).flatten(1).std(1).mean(),
                "posterior_std": post.std.detach().mean()}
        return self._decode_latent(z), self.config.kl_weight * kl, logs

    @staticmethod
    def _channel_stats(mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_channel = mean.transpose(0, 1).flatten(1)  # (C, B*h*w)
        return per_channel.mean(1), per_channel.std(1).clamp_min(1e-6)

    @torch.no_grad()
    def _update_stats(self, mean: torch.Tensor) -> None:
        m, s = self._channel_stats(mean)
        if int(self.stats_updates) == 0:
            self.latent_mean.copy_(m)
            self.latent_std.copy_(s)
        else:
            w = 1.0 - self.config.stats_momentum
            self.latent_mean.lerp_(m, w)
            self.latent_std.lerp_(s, w)
        self.stats_updates += 1

    @torch.no_grad()
    def calibrate(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Set the per-channel latent shift / scale exactly from ``pixels``' posterior means."""
        m, s = self._channel_stats(self.posterior(pixels).mode().float())
        self.latent_mean.copy_(m)
        self.latent_std.copy_(s)
        self.stats_updates += 1
        return m, s

    def _decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))


# MAR's KL-16 (the tokenizer of the xAR reference models): 256 px -> 16x16x16 latents.
register_preset("kl-f16-mar", KLTokenizer, tags=("reference",))

# CPU recipe: 32x32 -> 8x8x4 latents, the vq-tiny backbone (no attention).
register_preset(
    "kl-tiny", KLTokenizer, tags=("tiny",),
    image_size=32, block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=16,
    level_attention=False, mid_attention=False, z_channels=64, latent_channels=4, kl_weight=1e-6,
)
