"""VAR's multi-scale residual VQ tokenizer (Tian et al. 2024, ``models/quant.py``).

One codebook is shared by all scales. Scale ``k`` quantizes the area-downsampled residual
``f - f_hat`` at side ``scales[k]``; its code embeddings are upsampled (bicubic) to the latent
side, refined by a Phi conv and added to ``f_hat``. The last scale equals the latent side, so
``f_hat`` after all scales is what the decoder sees. Nearest codes use plain euclidean distance,
as VAR's released VQVAE (``using_znorm=False``): residuals shrink scale after scale, and a
normalised lookup would throw that magnitude away.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mmgen.registry import register_preset
from mmgen.tokens import ScalesLayout, Tokens

from .base import TokenizerConfig, VisualTokenizer
from .quantizers import CodebookTracker, QuantizerOutput, nearest_code

__all__ = ["MSVQConfig", "MultiScaleVQTokenizer", "MultiScaleQuantizer", "MultiScaleOutput", "Phi"]


@dataclass
class MSVQConfig(TokenizerConfig):
    """Defaults are VAR's VQVAE (ch 160, f=16, V=4096, Cvq=32, 10 scales to 16x16; ~109M params)."""

    block_out_channels: tuple[int, ...] = (160, 160, 320, 320, 640)
    z_channels: int = 32
    quant_conv_ks: int = 3
    codebook_size: int = 4096
    codebook_dim: int = 32
    scales: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    quant_resi: float = 0.5  # Phi(h) = (1 - r) * h + r * conv3x3(h); 0 disables the convs
    num_phi: int = 4  # Phis shared by nearby scales (VAR's PhiPartiallyShared); 0 = one per scale


@dataclass
class MultiScaleOutput(QuantizerOutput):
    """``quantized`` is the straight-through f_hat; ``ids`` are all scales concatenated (B, sum s^2)."""

    f_hat: torch.Tensor | None = None  # f_hat itself: carries the codebook/Phi gradient of the vq loss


class Phi(nn.Conv2d):
    """VAR's residual refinement: ``(1 - r) h + r conv3x3(h)`` (fixes bicubic blur of coarse codes)."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__(dim, dim, 3, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (1 - self.ratio) + super().forward(h) * self.ratio


class MultiScaleQuantizer(nn.Module):
    """Residual quantization over ``scales`` with one codebook and partially shared Phis."""

    def __init__(self, codebook_size: int, dim: int, scales: tuple[int, ...], beta: float = 0.25,
                 quant_resi: float = 0.5, num_phi: int = 4, dead_after: int = 100, restart_dead: bool = False) -> None:
        super().__init__()
        self.layout = ScalesLayout(tuple(scales))
        self.scales, self.dim, self.beta, self.restart_dead = tuple(scales), dim, beta, restart_dead
        self.embedding = nn.Embedding(codebook_size, dim)
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        k = num_phi if num_phi > 0 else len(scales)
        self.phis = nn.ModuleList(Phi(dim, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity() for _ in range(k))
        # VAR's tick rule: scale si sits at si/(K-1) in [0, 1] and uses the Phi with the nearest tick.
        # Some scales sit exactly half-way between two ticks (10 scales: si = 2 and 7), so the ticks
        # are numpy's float64 linspace, as VAR's: any other rounding picks the other Phi there.
        lo = 1 / 3 / k if k == 4 else 1 / 2 / k
        ticks = np.linspace(lo, 1 - lo, k)
        n = len(scales)
        self.phi_of_scale = [int(np.argmin(np.abs(ticks - si / max(n - 1, 1)))) for si in range(n)]
        self.tracker = CodebookTracker(codebook_size, dead_after)

    @property
    def side(self) -> int:
        return self.scales[-1]

    def refine(self, si: int, h: torch.Tensor) -> torch.Tensor:
        """``Phi_si(upsample(h))``: scale-``si`` embeddings (B, C, s, s) -> their f_hat increment."""
        if si < len(self.scales) - 1:
            h = F.interpolate(h, size=(self.side, self.side), mode="bicubic")
        return self.phis[self.phi_of_scale[si]](h)

    def embed_map(self, si: int, ids: torch.Tensor) -> torch.Tensor:
        s = self.scales[si]
        if ids.ndim != 2 or ids.shape[1] != s * s:
            raise ValueError(f"scale {si} expects ids of shape (B, {s * s}), got {tuple(ids.shape)}")
        return rearrange(self.embedding(ids), "b (h w) c -> b c h w", h=s, w=s)

    def _residual_loop(self, f: torch.Tensor, with_loss: bool):
        """VAR's coarse-to-fine loop -> ids per scale, f_hat, (codebook, commitment) losses, residuals."""
        f_ng = f.detach()
        rest, f_hat = f_ng.clone(), torch.zeros_like(f_ng)
        ids_all, residuals = [], []
        cb_loss, commit = f.new_zeros(()), f.new_zeros(())
        codebook = self.embedding.weight.detach()
        last = len(self.scales) - 1
        for si, s in enumerate(self.scales):
            r = F.interpolate(rest, size=(s, s), mode="area") if si < last else rest
            r = rearrange(r, "b c h w -> (b h w) c")
            residuals.append(r)
            ids = rearrange(nearest_code(r, codebook, cosine=False), "(b n) -> b n", b=f.shape[0])
            h = self.refine(si, self.embed_map(si, ids))
            f_hat = f_hat + h
            rest = rest - h.detach()
            ids_all.append(ids)
            if with_loss:
                cb_loss = cb_loss + F.mse_loss(f_hat, f_ng)
                commit = commit + F.mse_loss(f_hat.detach(), f)
        n = len(self.scales)
        return ids_all, f_hat, (cb_loss / n, commit / n), residuals

    def forward(self, f: torch.Tensor, update_stats: bool = False) -> MultiScaleOutput:
        """Quantize ``f`` (B, C, side, side); ``update_stats`` (training) updates usage/dead codes."""
        if f.ndim != 4 or f.shape[1] != self.dim or f.shape[-2:] != (self.side, self.side):
            raise ValueError(f"expected (B, {self.dim}, {self.side}, {self.side}) latents (last scale = latent side), got {tuple(f.shape)}")
        with torch.autocast(f.device.type, enabled=False):  # nearest codes in fp32, as VAR
            return self._forward(f.float(), update_stats)

    def _forward(self, f: torch.Tensor, update_stats: bool) -> MultiScaleOutput:
        logs: dict[str, Any] = {}
        if update_stats and self.restart_dead:
            logs["restarted_codes"] = f.new_zeros(())
            if bool(self.tracker.dead_mask().any()):  # one host sync; spares the extra pass otherwise
                with torch.no_grad():  # candidates: the residuals each scale would see now
                    cands = torch.cat(self._residual_loop(f, with_loss=False)[3])
                logs["restarted_codes"] = self.tracker.restart(self.embedding.weight, cands)
        ids, f_hat, (cb_loss, commit), _ = self._residual_loop(f, with_loss=True)
        loss = cb_loss + self.beta * commit  # = mean over scales of VAR's per-scale vq loss
        ids = torch.cat(ids, dim=1)
        logs.update(self.tracker.update(ids) if update_stats else self.tracker.batch_stats(ids))
        logs.update(codebook_loss=cb_loss.detach(), commit_loss=commit.detach())
        quantized = f_hat.detach() - f.detach() + f
        return MultiScaleOutput(quantized, ids, loss, logs, f_hat=f_hat)


class MultiScaleVQTokenizer(VisualTokenizer):
    """VAR's tokenizer: ids of all scales, coarse to fine, on a ``ScalesLayout``.

    Besides the tokenizer contract it offers what a VAR generator needs: ``embed_ids``,
    ``ids_to_var_input`` (teacher forcing), ``empty_fhat`` + ``next_scale_input`` (sampling) and
    ``decode_fhat``. ``decode(ids)`` == ``decode_fhat`` of the f_hat accumulated by
    ``next_scale_input`` over all scales.
    """

    config_class: ClassVar[type] = MSVQConfig

    def __init__(self, config: MSVQConfig | dict) -> None:
        super().__init__(config)
        cfg = self.config
        scales = tuple(cfg.scales)
        ScalesLayout(scales)  # validates positive, increasing
        if scales[-1] != self.latent_size:
            raise ValueError(f"the last scale must equal the latent side {self.latent_size} "
                             f"(image_size {cfg.image_size} / f {self.downsample}), got scales={scales}")
        if cfg.num_phi < 0:
            raise ValueError(f"num_phi={cfg.num_phi} must be >= 0 (0 = one Phi per scale)")
        self.quantizer = MultiScaleQuantizer(
            cfg.codebook_size, cfg.codebook_dim, scales, beta=cfg.beta, quant_resi=cfg.quant_resi,
            num_phi=cfg.num_phi, dead_after=cfg.dead_code_steps, restart_dead=cfg.restart_dead_codes,
        )

    @property
    def layout(self) -> ScalesLayout:
        return self.quantizer.layout

    @property
    def scales(self) -> tuple[int, ...]:
        return self.quantizer.scales

    def quantize(self, pixels: torch.Tensor, update_stats: bool = False) -> MultiScaleOutput:
        """Encoder + quant_conv + residual quantizer on checked pixels (see MultiScaleQuantizer)."""
        return self.quantizer(self.quant_conv(self.encoder(self.check_pixels(pixels))), update_stats=update_stats)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> Tokens:
        """Pixels -> ``Tokens`` with ids ``(B, sum s^2)``: scales concatenated coarse to fine."""
        return Tokens(layout=self.layout, ids=self.quantize(pixels).ids)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Codebook lookup ``(B, n) -> (B, n, Cvq)`` for ids of any scale(s)."""
        return self.quantizer.embedding(ids)

    def empty_fhat(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The zero ``f_hat`` (B, Cvq, side, side) that sampling starts from."""
        w = self.quantizer.embedding.weight
        s = self.quantizer.side
        return torch.zeros(batch_size, self.codebook_dim, s, s, device=device or w.device, dtype=w.dtype)

    def next_scale_input(self, si: int, f_hat: torch.Tensor, ids_si: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One VAR sampling step (VAR's ``get_next_autoregressive_input``).

        Args:
            si: index of the scale just sampled.
            f_hat: accumulated latent (B, Cvq, side, side); start from ``empty_fhat``. Not modified.
            ids_si: the ids of scale ``si`` (B, s_si^2), raster order; or their embeddings
                (B, s_si^2, Cvq) (e.g. soft/gumbel sampling).

        Returns:
            ``(f_hat + Phi(upsample(embed(ids_si))), next_input)`` where ``next_input`` is the new
            f_hat area-downsampled to scale ``si+1``, flattened to (B, s_{si+1}^2, Cvq): the
            generator's input for predicting scale ``si+1``. ``None`` after the last scale.
        """
        n = len(self.scales)
        if not 0 <= si < n:
            raise ValueError(f"scale index si={si} out of range [0, {n})")
        s = self.scales[si]
        if ids_si.is_floating_point():
            if ids_si.shape[1:] != (s * s, self.codebook_dim):
                raise ValueError(f"scale {si} embeddings must be (B, {s * s}, {self.codebook_dim}), got {tuple(ids_si.shape)}")
            h = rearrange(ids_si, "b (h w) c -> b c h w", h=s, w=s)
        else:
            h = self.quantizer.embed_map(si, ids_si)
        f_hat = f_hat + self.quantizer.refine(si, h)
        if si == n - 1:
            return f_hat, None
        nxt = self.scales[si + 1]
        return f_hat, rearrange(F.interpolate(f_hat, size=(nxt, nxt), mode="area"), "b c h w -> b (h w) c")

    def ids_to_fhat(self, ids: Tokens | torch.Tensor) -> torch.Tensor:
        """All-scale ids (B, sum s^2) -> final f_hat (B, Cvq, side, side)."""
        parts = self.layout.split(self.check_ids(ids))
        f_hat = self.empty_fhat(parts[0].shape[0], parts[0].device)
        for si, p in enumerate(parts):
            f_hat, _ = self.next_scale_input(si, f_hat, p)
        return f_hat

    def ids_to_var_input(self, ids: Tokens | torch.Tensor) -> torch.Tensor:
        """Teacher-forcing inputs (VAR's ``idxBl_to_var_input``): (B, N - scales[0]^2, Cvq).

        Row block ``k`` (k = 0..K-2) is f_hat after scales 0..k, area-downsampled to scale
        ``k+1``'s side and flattened; i.e. the concatenation of ``next_scale_input``'s outputs.
        """
        parts = self.layout.split(self.check_ids(ids))
        f_hat = self.empty_fhat(parts[0].shape[0], parts[0].device)
        inputs = []
        for si, p in enumerate(parts[:-1]):
            f_hat, nxt = self.next_scale_input(si, f_hat, p)
            inputs.append(nxt)
        if not inputs:
            return f_hat.new_zeros(f_hat.shape[0], 0, self.codebook_dim)
        return torch.cat(inputs, dim=1)

    def decode_fhat(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Accumulated latent f_hat (B, Cvq, side, side) -> pixels clamped to [-1, 1]."""
        s = self.quantizer.side
        if f_hat.ndim != 4 or f_hat.shape[1:] != (self.codebook_dim, s, s):
            raise ValueError(f"f_hat must be (B, {self.codebook_dim}, {s}, {s}), got {tuple(f_hat.shape)}")
        return self._decode_latent(f_hat).clamp(-1, 1)

    def decode(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        """All-scale ids -> pixels (B, 3, H, W) clamped to [-1, 1]."""
        return self.decode_fhat(self.ids_to_fhat(tokens))

    def _reconstruct(self, pixels: torch.Tensor, update_stats: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        q = self.quantize(pixels, update_stats=update_stats)
        return self._decode_latent(q.quantized), q.loss, q.logs


# VAR's VQVAE (vae_ch=160) at 256 px: 16x16 final latent, 680 tokens.
register_preset("msvq-var", MultiScaleVQTokenizer, tags=("reference",))

# CPU recipe: 32x32 -> scales up to 8x8 (130 tokens).
register_preset(
    "msvq-tiny", MultiScaleVQTokenizer, tags=("tiny",),
    image_size=32, block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=16,
    level_attention=False, mid_attention=False, z_channels=16, codebook_size=512, codebook_dim=16,
    scales=(1, 2, 3, 4, 6, 8), dead_code_steps=50, restart_dead_codes=True,
)
