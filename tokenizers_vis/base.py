"""The visual-tokenizer contract and the conv encoder/decoder every tokenizer here shares.

A tokenizer maps pixels in ``[-1, 1]`` to discrete ``Tokens`` and back, and trains itself with
``loss(pixels, step)``. Generators never look inside: they read ``vocab_size``, ``layout`` and
(for VAR) the multi-scale helpers of :class:`~mmgen.tokenizers_vis.msvq.MultiScaleVQTokenizer`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from diffusers.models.autoencoders.vae import Decoder, Encoder
from torch import nn

from mmgen.modeling import ConfigModule
from mmgen.tokens import Layout, Tokens

from .losses import TokenizerCriterion
from .maskgit_backbone import MaskGITDecoder, MaskGITEncoder

__all__ = ["ImageTokenizer", "TokenizerConfig", "VisualTokenizer", "build_autoencoder"]


@dataclass
class TokenizerConfig:
    """Fields shared by the conv VQ tokenizers (defaults: LlamaGen's VQ-16 backbone).

    The default backbone (``"ldm"``) is taming/LlamaGen/VAR's: ``layers_per_block`` res blocks per
    level (decoder: one more), a 2x down/up-sample between levels, attention after every res block
    of the deepest level (``level_attention``) and in the middle block (``mid_attention``).
    ``"maskgit"`` is MaskGIT's VQGAN (RAR's tokenizer; see ``maskgit_backbone.py``).
    """

    image_size: int = 256
    backbone: Literal["ldm", "maskgit"] = "ldm"
    block_out_channels: tuple[int, ...] = (128, 128, 256, 256, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    level_attention: bool = True
    mid_attention: bool = True
    z_channels: int = 256  # encoder output / decoder input width, before quant_conv
    # a decoder of its own size ("ldm" backbone; () / 0 = the encoder's): a wider or deeper decoder can
    # be trained on a frozen encoder's codes without changing a single id
    decoder_channels: tuple[int, ...] = ()
    decoder_layers_per_block: int = 0
    quant_conv_ks: int = 1  # kernel of quant_conv / post_quant_conv (LlamaGen 1, VAR 3; 0 = none, as MaskGIT)
    codebook_size: int = 16384
    codebook_dim: int = 8
    beta: float = 0.25  # commitment weight
    dead_code_steps: int = 100  # a code unused for this many training steps counts as dead
    restart_dead_codes: bool = False  # re-initialise dead codes from encoder outputs of the batch
    # --- losses (see losses.TokenizerCriterion) ---
    recon_loss: Literal["l1", "l2"] = "l2"
    perceptual_weight: float = 0.0
    perceptual_weights: str | None = None  # local VGG16(+LPIPS heads) file; nothing is downloaded
    disc_weight: float = 0.0  # > 0 adds a PatchGAN discriminator (hinge) to the module
    disc_start: int = 0
    disc_adaptive_weight: bool = False
    disc_channels: int = 64
    disc_layers: int = 3


def _check_config(cfg: TokenizerConfig) -> None:
    ch = cfg.block_out_channels
    if not ch or any(c <= 0 for c in ch):
        raise ValueError(f"block_out_channels must be a non-empty tuple of positive ints, got {ch}")
    bad = [c for c in ch if c % cfg.norm_num_groups]
    if bad:
        raise ValueError(f"norm_num_groups={cfg.norm_num_groups} must divide every block_out_channels entry; {bad} do not")
    f = 2 ** (len(ch) - 1)
    if cfg.image_size <= 0 or cfg.image_size % f:
        raise ValueError(f"image_size={cfg.image_size} must be a positive multiple of the downsampling factor {f}")
    if cfg.quant_conv_ks not in (0, 1, 3):
        raise ValueError(f"quant_conv_ks={cfg.quant_conv_ks}; allowed: 0 (none), 1, 3")
    if cfg.quant_conv_ks == 0 and cfg.z_channels != cfg.codebook_dim:
        raise ValueError(f"quant_conv_ks=0 (no quant_conv) needs z_channels == codebook_dim, got {cfg.z_channels} and {cfg.codebook_dim}")
    if cfg.backbone not in ("ldm", "maskgit"):
        raise ValueError(f"backbone={cfg.backbone!r}; allowed: 'ldm', 'maskgit'")
    if cfg.backbone == "maskgit" and (cfg.level_attention or cfg.mid_attention):
        raise ValueError("backbone='maskgit' has no attention: set level_attention=False and mid_attention=False")
    if cfg.codebook_size < 2 or cfg.codebook_dim < 1:
        raise ValueError(f"codebook_size={cfg.codebook_size} (>= 2) and codebook_dim={cfg.codebook_dim} (>= 1) are invalid")
    if cfg.dead_code_steps < 1:
        raise ValueError(f"dead_code_steps={cfg.dead_code_steps} must be >= 1")
    dch = tuple(cfg.decoder_channels)
    if dch or cfg.decoder_layers_per_block:
        if cfg.backbone != "ldm":
            raise ValueError("decoder_channels / decoder_layers_per_block need backbone='ldm'")
        if dch and (len(dch) != len(ch) or any(c <= 0 or c % cfg.norm_num_groups for c in dch)):
            raise ValueError(f"decoder_channels={dch} needs {len(ch)} levels (as block_out_channels={tuple(ch)}), "
                             f"each a positive multiple of norm_num_groups={cfg.norm_num_groups}")
        if cfg.decoder_layers_per_block < 0:
            raise ValueError(f"decoder_layers_per_block={cfg.decoder_layers_per_block} must be >= 0 (0 = layers_per_block)")


def build_autoencoder(cfg: TokenizerConfig) -> tuple[nn.Module, nn.Module]:
    """diffusers' VAE Encoder/Decoder arranged as taming/LlamaGen/VAR's (same parameter count), or MaskGIT's."""
    if cfg.backbone == "maskgit":
        ch = tuple(cfg.block_out_channels)
        return (MaskGITEncoder(ch, cfg.layers_per_block, cfg.z_channels, cfg.norm_num_groups),
                MaskGITDecoder(ch, cfg.layers_per_block, cfg.z_channels, cfg.norm_num_groups))
    n = len(cfg.block_out_channels)
    deep_down = "AttnDownEncoderBlock2D" if cfg.level_attention else "DownEncoderBlock2D"
    deep_up = "AttnUpDecoderBlock2D" if cfg.level_attention else "UpDecoderBlock2D"
    encoder = Encoder(
        in_channels=3, out_channels=cfg.z_channels,
        down_block_types=("DownEncoderBlock2D",) * (n - 1) + (deep_down,),
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups, double_z=False, mid_block_add_attention=cfg.mid_attention,
    )
    decoder = Decoder(
        in_channels=cfg.z_channels, out_channels=3,
        up_block_types=(deep_up,) + ("UpDecoderBlock2D",) * (n - 1),  # decoder runs deepest level first
        block_out_channels=tuple(cfg.decoder_channels or cfg.block_out_channels),
        layers_per_block=cfg.decoder_layers_per_block or cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups, mid_block_add_attention=cfg.mid_attention,
    )
    return encoder, decoder


class ImageTokenizer(ConfigModule):
    """What every image tokenizer shares: pixels ``(B,3,S,S)`` in ``[-1,1]`` with ``S = config.image_size``.

    The input contract (:meth:`check_pixels`) lives here once, for the convolutional autoencoders
    below as for FlexTok and the subobject tokenizer, which build no such autoencoder.
    """

    kind: ClassVar[str] = "tokenizer"

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def check_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixels, torch.Tensor):
            raise TypeError(f"pixels must be a torch.Tensor, got {type(pixels).__name__}")
        if pixels.ndim != 4:
            raise ValueError(f"pixels must be (B,3,H,W), got shape {tuple(pixels.shape)} (rank {pixels.ndim}); video is not supported by {type(self).__name__}")
        if pixels.shape[1] != 3:
            raise ValueError(f"pixels must have 3 channels (RGB), got {pixels.shape[1]} in shape {tuple(pixels.shape)}")
        s = self.config.image_size
        if tuple(pixels.shape[-2:]) != (s, s):
            raise ValueError(f"{type(self).__name__} is configured for {s}x{s} images, got {pixels.shape[-2]}x{pixels.shape[-1]}; resize or build it with image_size={pixels.shape[-1]}")
        if not pixels.is_floating_point():
            raise ValueError(f"pixels must be floating point in [-1, 1], got dtype {pixels.dtype}")
        return pixels


class VisualTokenizer(ImageTokenizer):
    """Base class: pixels ``(B,3,H,W)`` in ``[-1,1]`` <-> ``Tokens``; subclasses add the quantizer.

    Subclasses implement ``encode``, ``decode``, ``layout`` and ``_reconstruct``; this class owns
    the encoder/decoder, ``quant_conv``/``post_quant_conv`` and the training loss.
    """

    config_class: ClassVar[type] = TokenizerConfig

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        cfg = self.config
        _check_config(cfg)
        self.encoder, self.decoder = build_autoencoder(cfg)
        ks = cfg.quant_conv_ks
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.codebook_dim, ks, padding=ks // 2) if ks else nn.Identity()
        self.post_quant_conv = nn.Conv2d(cfg.codebook_dim, cfg.z_channels, ks, padding=ks // 2) if ks else nn.Identity()
        self.criterion = TokenizerCriterion(cfg)

    # ----- properties a generator reads -----
    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    @property
    def codebook_dim(self) -> int:
        return self.config.codebook_dim

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        """Side of the latent grid the decoder sees."""
        return self.config.image_size // self.downsample

    @property
    def layout(self) -> Layout:
        raise NotImplementedError

    # ----- contract -----
    def encode(self, pixels: torch.Tensor) -> Tokens:
        raise NotImplementedError

    def decode(self, tokens: Tokens) -> torch.Tensor:
        raise NotImplementedError

    def _reconstruct(self, pixels: torch.Tensor, update_stats: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Return ``(reconstruction (unclamped), quantizer loss, quantizer logs)``."""
        raise NotImplementedError

    def reconstruct(self, pixels: torch.Tensor) -> torch.Tensor:
        """Encoder -> quantizer (straight-through) -> decoder, unclamped; no codebook bookkeeping."""
        return self._reconstruct(self.check_pixels(pixels), update_stats=False)[0]

    def loss(self, pixels: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
        """Total training loss (recon + quantizer [+ perceptual] [+ GAN, both sides]) and logs.

        In training mode this also updates the codebook usage counters and, if configured,
        restarts dead codes. ``step`` gates the GAN terms (``disc_start``).
        """
        x = self.check_pixels(pixels)
        recon, qloss, logs = self._reconstruct(x, update_stats=self.training)
        total, clogs = self.criterion(x, recon, step, last_layer=self.decoder.conv_out.weight)
        total = total + qloss
        logs = {"loss": total.detach(), "quant_loss": qloss.detach(), **clogs, **logs}
        return total, logs

    def forward(self, pixels: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
        """Same as :meth:`loss`: under DDP the wrapper's ``forward`` is what must run."""
        return self.loss(pixels, step)

    # ----- validation -----
    def check_ids(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        """Return the ``(B, N)`` ids of ``tokens`` after checking layout and range."""
        if isinstance(tokens, Tokens):
            if tokens.ids is None:
                raise ValueError(f"{type(self).__name__} decodes discrete ids, got Tokens with latents only")
            if tokens.layout != self.layout:
                raise ValueError(f"tokens have layout {tokens.layout}, this tokenizer produces {self.layout}")
            ids = tokens.ids
        else:
            ids = tokens
        n = self.layout.num_tokens
        if ids.ndim != 2 or ids.shape[1] != n:
            raise ValueError(f"ids must be (B, {n}) for layout {self.layout}, got shape {tuple(ids.shape)}")
        if ids.is_floating_point():
            raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}), got range [{int(ids.min())}, {int(ids.max())}]")
        return ids.long()

    def _decode_latent(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantized latent ``(B, codebook_dim, h, w)`` -> unclamped pixels."""
        return self.decoder(self.post_quant_conv(z_q))
