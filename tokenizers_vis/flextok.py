"""FlexTok-style 1D tokenizer: images -> an ordered sequence of 1..K discrete tokens and back.

Follows FlexTok (Bachmann et al. 2025, apple/ml-flextok):

- **Encoder.** A ViT (the shared :class:`~mmgen.nn.transformer.Transformer`) over ``p x p`` patches of
  the pixels, or of the latent grid of a trained KL/VQ autoencoder (``autoencoder=FOLDER``), followed
  by K learned register tokens. Mask ``Causal(prefix=patches)``: patches see each other, register
  ``i`` sees every patch and registers ``<= i`` (the reference's ``causal_last``), so a register
  never depends on later ones. Only the registers are kept and projected to the FSQ channels.
- **FSQ** (``levels``, the paper's ``[8, 8, 8, 5, 5, 5]``): an implicit codebook that cannot collapse.
- **Nested dropout.** While training each sample keeps its first ``k`` registers, ``k`` uniform in
  ``1..K`` (or a power of two); the rest become one learned mask token. The sequence is therefore
  ordered coarse to fine and every prefix is a valid code. With probability ``null_prob`` a sample
  keeps none (``k = 0``): that all-masked input is the decoder's unconditional branch for CFG.
- **Decoder.** A rectified-flow transformer over ``[registers ; noisy patches]`` with full attention,
  AdaLN-modulated by the noise level, that regresses the velocity ``eps - x`` of
  ``x_t = (1 - t) x + t eps`` (logit-normal ``t``; :mod:`mmgen.nn.flow`'s convention).
  Decoding integrates the ODE with ``flow_steps`` Euler steps from a seeded noise (deterministic),
  with classifier-free guidance ``cfg_scale`` on the velocity.

REPA (the paper aligns decoder states to DINOv2 features; off by default): ``repa_weight`` > 0 adds a
negative-cosine loss between projected decoder patch states after block ``repa_layer`` and the pooled
conv-encoder features of a frozen KL/VQ tokenizer (``repa_teacher``); on ``shapes`` it did not help in
short runs (bench/RESULTS.md, FlexTok, issue 19). What did help there is ``coarse_weight``: a training-only MLP must
redraw an average-pooled ``coarse_size``-square copy of the grid from every kept prefix of codes, so the codes keep
the layout on both image axes (without it the shapes encoder lost the object's row early in training).

Knobs beyond the reference (defaults off; the CPU preset turns on ``time_shift`` and ``fsq_dropout``):
``prediction="x"`` regresses the clean patches instead of the velocity (JiT; the loss stays the velocity
loss); ``time_shift`` (SD3) moves training noise levels up; ``fsq_dropout`` is the reference's
``drop_quant_p``; ``detail_weight`` weights the flow loss toward patches with detail (edges, corners);
``prior_mlp`` adds a code prior: an MLP redraws the grid from all kept codes at once (its own MSE) and the decoder
reads that redraw beside the noisy patches (on ``shapes`` a direct readout of the codes keeps small shapes that
the flow loss alone leaves unsure); ``prior_nested`` trains that prior on every power-of-two prefix at once, so the
first tokens learn from every image. ``keep_all_prob``, ``conv_head``, ``code_mlp`` and ``repa_target="ids"`` are
measured ablations (bench/RESULTS.md, FlexTok).

Usage: ``tok.encode(img, k=8)`` gives 8 tokens, ``tok.decode(tokens.prefix(k))`` works for every
``k`` in ``1..K``; a raster generator trained on the sequences can stop at any token budget.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import build_sincos2d_pos_embed
from torch import nn

from mmgen.config import from_dict, to_dict
from mmgen.nn.flow import TimestepEmbedder, solve_flow
from mmgen.nn.masks import Causal, Full
from mmgen.nn.transformer import Transformer
from mmgen.registry import register_preset
from mmgen.tokens import SequenceLayout, Tokens

from .base import ImageTokenizer
from .flextok_config import FlexTokConfig
from .flextok_heads import ConvHead
from .flextok_objective import T_MIN, FlexTokObjective
from .fsq import FSQ, check_levels
from .patches import patchify, unpatchify

__all__ = ["FlexTokConfig", "FlexTokTokenizer"]


def _grid_positions(g: int) -> torch.Tensor:
    """M-RoPE coordinates ``(0, row, col)`` of a ``g x g`` patch grid."""
    r, c = torch.meshgrid(torch.arange(g, device="cpu"), torch.arange(g, device="cpu"), indexing="ij")
    return torch.stack([torch.zeros_like(r), r, c], -1).reshape(-1, 3).float()


class FlexTokTokenizer(FlexTokObjective, ImageTokenizer):
    """Image -> ``Tokens(ids=(B, k), layout=SequenceLayout(k))`` for any ``1 <= k <= K``, and back."""

    config_class: ClassVar[type] = FlexTokConfig

    def __init__(self, config: FlexTokConfig | dict) -> None:
        super().__init__(config)
        cfg = self.config
        cfg.levels = check_levels(cfg.levels)
        self.autoencoder = self._build_autoencoder()
        if cfg.num_registers < 1:
            raise ValueError(f"num_registers must be >= 1, got {cfg.num_registers}")
        if cfg.patch_size < 1 or cfg.grid_size % cfg.patch_size:
            raise ValueError(f"patch_size={cfg.patch_size} must divide grid_size={cfg.grid_size}")
        if not 0.0 <= cfg.null_prob < 1.0:
            raise ValueError(f"null_prob must be in [0, 1), got {cfg.null_prob}")
        if cfg.time_shift <= 0 or not 0.0 <= cfg.fsq_dropout <= 1.0 or not 0.0 <= cfg.pure_noise_prob < 1.0:
            raise ValueError(f"need time_shift > 0, fsq_dropout in [0, 1] and pure_noise_prob in [0, 1), got "
                             f"{cfg.time_shift}, {cfg.fsq_dropout}, {cfg.pure_noise_prob}")
        if cfg.detail_weight < 0:
            raise ValueError(f"detail_weight must be >= 0, got {cfg.detail_weight}")
        if cfg.prior_nested and not cfg.prior_mlp:
            raise ValueError("prior_nested needs a code prior (prior_mlp > 0)")
        if cfg.keep_weights and (cfg.keep_k != "pow2" or len(cfg.keep_weights) != len(self.prefix_sizes())
                                 or min(cfg.keep_weights) < 0 or sum(cfg.keep_weights) <= 0):
            raise ValueError(f"keep_weights needs keep_k='pow2' and one weight >= 0 per prefix size {self.prefix_sizes()} "
                             f"(not all 0), got {cfg.keep_k!r}, {list(cfg.keep_weights)}")
        if not 0.0 <= cfg.keep_all_prob < 1.0 or min(cfg.conv_head, cfg.code_mlp, cfg.prior_mlp, cfg.prior_weight) < 0:
            raise ValueError(f"need keep_all_prob in [0, 1) and conv_head, code_mlp, prior_mlp, prior_weight >= 0, got "
                             f"{cfg.keep_all_prob}, {cfg.conv_head}, {cfg.code_mlp}, {cfg.prior_mlp}, {cfg.prior_weight}")
        if cfg.noise_draws < 1:
            raise ValueError(f"noise_draws must be >= 1, got {cfg.noise_draws}")
        if cfg.repa_target not in ("features", "ids"):
            raise ValueError(f"repa_target must be 'features' or 'ids', got {cfg.repa_target!r}")
        if cfg.repa_weight < 0 or not 1 <= cfg.repa_layer <= cfg.decoder.depth or (cfg.repa_weight > 0 and not cfg.repa_teacher):
            raise ValueError(f"need repa_weight >= 0, repa_layer in 1..{cfg.decoder.depth} and a repa_teacher folder when "
                             f"repa_weight > 0, got {cfg.repa_weight}, {cfg.repa_layer}, {cfg.repa_teacher!r}")
        if cfg.coarse_weight < 0 or cfg.coarse_size < 1 or cfg.grid_size % cfg.coarse_size:
            raise ValueError(f"need coarse_weight >= 0 and coarse_size dividing grid_size={cfg.grid_size}, got "
                             f"{cfg.coarse_weight}, {cfg.coarse_size}")
        if cfg.flow_steps < 1 or cfg.cfg_scale < 0 or cfg.decode_noise_scale < 0:
            raise ValueError(f"need flow_steps >= 1, cfg_scale >= 0 and decode_noise_scale >= 0, got {cfg.flow_steps}, "
                             f"{cfg.cfg_scale}, {cfg.decode_noise_scale}")
        K, g, pd = cfg.num_registers, cfg.grid_size // cfg.patch_size, cfg.in_channels * cfg.patch_size**2
        cfg.decoder.adaln_dim = cfg.decoder.dim  # the noise level modulates every decoder block
        self.fsq = FSQ(cfg.levels)
        # encoder: patches + K registers -> FSQ channels
        self.patch_in = nn.Linear(pd, cfg.encoder.dim)
        self.registers = nn.Parameter(torch.randn(K, cfg.encoder.dim) * cfg.register_std)
        self.enc = Transformer(cfg.encoder)
        self.to_code = nn.Linear(cfg.encoder.dim, self.fsq.dim)
        nn.init.zeros_(self.to_code.weight)  # the reference's zero-initialised readout: codes start unsaturated
        nn.init.zeros_(self.to_code.bias)
        # decoder: [registers (codes or the mask token) ; noisy patches] -> velocity of the patches
        self.code_in = nn.Linear(self.fsq.dim, cfg.decoder.dim)
        self.mask_token = nn.Parameter(torch.randn(cfg.decoder.dim) * 0.02)
        if cfg.id_embed:
            self.id_in = nn.Embedding(self.fsq.codebook_size, cfg.decoder.dim)
            nn.init.zeros_(self.id_in.weight)  # a fine-tune starts as the decoder it extends
        self.reg_pos = nn.Parameter(torch.randn(K, cfg.decoder.dim) * 0.02)
        self.noisy_in = nn.Linear(pd, cfg.decoder.dim)
        self.time_embed = TimestepEmbedder(cfg.decoder.dim)
        self.dec = Transformer(cfg.decoder)
        self.out = nn.Linear(cfg.decoder.dim, pd)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if cfg.code_mlp:
            self.code_mlp = nn.Sequential(nn.Linear(K * (self.fsq.dim + 1), cfg.code_mlp), nn.SiLU(),
                                          nn.Linear(cfg.code_mlp, cfg.decoder.dim))
            nn.init.zeros_(self.code_mlp[2].weight)
            nn.init.zeros_(self.code_mlp[2].bias)
        if cfg.prior_mlp:
            h = cfg.prior_mlp
            self.prior = nn.Sequential(nn.Linear(K * (self.fsq.dim + 1), h), nn.GELU(), nn.Linear(h, h), nn.GELU(),
                                       nn.Linear(h, g * g * pd))
            self.prior_in = nn.Linear(pd, cfg.decoder.dim)
            nn.init.zeros_(self.prior_in.weight)
            nn.init.zeros_(self.prior_in.bias)
        if cfg.conv_head:
            self.conv_head = ConvHead(cfg.decoder.dim, cfg.in_channels, cfg.patch_size, cfg.conv_head)
        if cfg.repa_weight > 0:  # REPA's projector: decoder patch state -> teacher feature
            d = cfg.decoder.dim
            self.repa_proj = nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, cfg.repa_dim))
        if cfg.coarse_weight > 0:  # training only: kept codes -> coarse grid (never read by encode/decode)
            self.coarse_head = nn.Sequential(nn.Linear(K * self.fsq.dim, 4 * cfg.encoder.dim), nn.SiLU(),
                                             nn.Linear(4 * cfg.encoder.dim, cfg.in_channels * cfg.coarse_size**2))
        patches, regs = _grid_positions(g), torch.zeros(K, 3, device="cpu")
        self.register_buffer("enc_pos", torch.cat([patches, regs]), persistent=False)
        self.register_buffer("dec_pos", torch.cat([regs, patches]), persistent=False)
        for name, dim in (("enc_abs", cfg.encoder.dim), ("dec_abs", cfg.decoder.dim)):
            pe = build_sincos2d_pos_embed([g, g], dim, device="cpu") if cfg.abs_pos else torch.zeros(1, dim, device="cpu")
            self.register_buffer(name, pe, persistent=False)
        self.num_patches = g * g

    def _build_autoencoder(self) -> nn.Module | None:
        """The frozen KL/VQ autoencoder whose latent grid is FlexTok's input/output space (or None)."""
        from mmgen.modeling import load_module, module_class

        cfg = self.config
        if cfg.autoencoder_config:
            cls = module_class(cfg.autoencoder_config["class"])
            ae = cls(from_dict(cls.config_class, cfg.autoencoder_config["config"]))  # weights come with ours
        elif cfg.autoencoder:
            ae = load_module(cfg.autoencoder)
            cfg.autoencoder_config = {"class": type(ae).__name__, "config": to_dict(ae.config)}
        else:
            return None  # pixels, or a latent grid whose autoencoder is not attached (see _check_space)
        if getattr(ae, "kind", None) != "tokenizer" or not hasattr(ae, "latent_size"):
            raise ValueError(f"autoencoder must be a KL or VQ tokenizer folder, got {type(ae).__name__}")
        if ae.image_size != cfg.image_size:
            raise ValueError(f"autoencoder works at {ae.image_size} px but image_size={cfg.image_size}")
        cfg.in_channels, cfg.grid_size = ae.codebook_dim, ae.latent_size
        return ae.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "FlexTokTokenizer":
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()  # frozen: never in training mode
        return self

    # ----- what a generator reads
    @property
    def vocab_size(self) -> int:
        return self.fsq.codebook_size

    @property
    def codebook_dim(self) -> int:
        return self.fsq.dim

    @property
    def num_registers(self) -> int:
        return self.config.num_registers

    @property
    def layout(self) -> SequenceLayout:
        return SequenceLayout(self.config.num_registers)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """FSQ codes ``(B, n) -> (B, n, len(levels))``."""
        return self.fsq.ids_to_codes(ids)

    # ----- the grid the transformers see (pixels or autoencoder latents), as patch sequences
    def _check_space(self) -> None:
        cfg = self.config
        if self.autoencoder is None and (cfg.in_channels != 3 or cfg.grid_size != cfg.image_size):
            raise ValueError(f"this FlexTok works on a {cfg.in_channels}-channel {cfg.grid_size}x{cfg.grid_size} latent grid but has no autoencoder: "
                             f"build it with autoencoder=FOLDER of a trained KL/VQ tokenizer (or in_channels=3, grid_size=image_size for pixels)")

    def _to_grid(self, pixels: torch.Tensor) -> torch.Tensor:
        self._check_space()
        ae = self.autoencoder
        if ae is None:
            return pixels
        with torch.no_grad():
            t = ae.encode(pixels)
            z = t.latents if t.latents is not None else ae.embed_ids(t.ids)
        s = self.config.grid_size
        return rearrange(z, "b (h w) c -> b c h w", h=s, w=s)

    def _from_grid(self, x: torch.Tensor) -> torch.Tensor:
        self._check_space()
        ae = self.autoencoder
        if ae is None:
            return x
        if ae.vocab_size == 0:  # KL: continuous latents
            return ae.decode(Tokens(ae.layout, latents=rearrange(x, "b c h w -> b (h w) c")))
        return ae._decode_latent(x)  # VQ: continuous code vectors straight into its decoder

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x, self.config.patch_size)

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        return unpatchify(x, self.config.patch_size, self.config.grid_size // self.config.patch_size)

    # ----- encoder
    def _encode(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid -> ``(codes (B, K, d) straight-through, ids (B, K))``."""
        x = self.patch_in(self._patchify(grid)) + self.enc_abs.to(self.patch_in.weight.dtype)
        x = torch.cat([x, self.registers.expand(x.shape[0], -1, -1).to(x.dtype)], 1)
        h = self.enc(x, self.enc_pos, Causal(prefix=self.num_patches))
        z = self.to_code(h[:, self.num_patches :])
        codes, ids = self.fsq(z)
        if self.training and self.config.fsq_dropout > 0:  # bounded but unrounded codes for some samples
            skip = torch.rand(z.shape[0], 1, 1, device=z.device) < self.config.fsq_dropout
            codes = torch.where(skip, self.fsq.bound(z.float()) / self.fsq._half_width, codes)
        return codes, ids

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, k: int | None = None) -> Tokens:
        """Pixels -> the first ``k`` tokens (all ``K`` by default); ``k`` must be in ``1..K``."""
        k = self._check_k(self.num_registers if k is None else k)
        _, ids = self._encode(self._to_grid(self.check_pixels(pixels)))
        return Tokens(SequenceLayout(k), ids=ids[:, :k])

    def _check_k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.num_registers:
            raise ValueError(f"k={k!r} is out of range: this FlexTok keeps 1..{self.num_registers} tokens")
        return k

    # ----- decoder
    def _registers_in(self, codes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Decoder register slots: the code of a kept token, else the mask token (+ slot embedding)."""
        x = self.code_in(codes.to(self.code_in.weight.dtype))
        if self.config.id_embed:
            x = x + self.id_in(self.fsq.codes_to_ids(codes.float())) * self.config.decoder.dim**0.5
        return torch.where(keep[..., None], x, self.mask_token.to(x.dtype)) + self.reg_pos

    @staticmethod
    def _flat_codes(codes: torch.Tensor, keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """All codes at once, ``(B, K * (d + 1))``: dropped ones zeroed, plus the keep mask."""
        return torch.cat([codes.to(dtype) * keep[..., None], keep[..., None].to(dtype)], -1).flatten(1)

    def _code_summary(self, codes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor | None:
        """``code_mlp``'s reading of all kept codes at once, ``(B, dim)`` (None when off)."""
        if not self.config.code_mlp:
            return None
        return self.code_mlp(self._flat_codes(codes, keep, self.code_mlp[0].weight.dtype))

    def _code_prior(self, codes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor | None:
        """The code prior's redraw of the grid from all kept codes, as patches ``(B, patches, patch_dim)`` (None when off)."""
        if not self.config.prior_mlp:
            return None
        return self.prior(self._flat_codes(codes, keep, self.prior[0].weight.dtype)).view(codes.shape[0], self.num_patches, -1)

    def predict(self, registers: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                summary: torch.Tensor | None = None, prior: torch.Tensor | None = None) -> torch.Tensor:
        """The network's output for noisy patches ``x_t`` at noise level ``t (B,)``: velocity or clean patches.
        ``summary`` / ``prior``: :meth:`_code_summary` / :meth:`_code_prior` of the same codes (None when off)."""
        patches = self.noisy_in(x_t.to(registers.dtype)) + self.dec_abs.to(registers.dtype)
        if prior is not None:
            patches = patches + self.prior_in(prior.to(registers.dtype))
        x = torch.cat([registers, patches], 1)
        temb = self.time_embed(t)
        if summary is not None:
            temb = temb + summary.to(temb.dtype)
        h = self.dec(x, self.dec_pos, Full(), cond=temb)[:, self.num_registers :]
        out = self.out(h)
        if self.config.conv_head:
            out = out + self._patchify(self.conv_head(h, self._unpatchify(x_t.to(out.dtype)), self._unpatchify(out), temb))
        return out.float()

    def velocity(self, registers: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 summary: torch.Tensor | None = None, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity ``(B, n, patch_dim)`` (``eps - x``) of noisy patches ``x_t`` at noise level ``t (B,)``."""
        out = self.predict(registers, x_t, t, summary, prior)
        if self.config.prediction == "v":
            return out
        return (x_t.float() - out) / t.clamp_min(T_MIN)[:, None, None]  # v = (x_t - x) / t

    def check_ids(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        """The ``(B, k)`` ids of a prefix (``1 <= k <= K``), after checking layout, dtype and range."""
        if isinstance(tokens, Tokens):
            if tokens.ids is None:
                raise ValueError(f"{type(self).__name__} decodes discrete ids, got Tokens with latents only")
            if not isinstance(tokens.layout, SequenceLayout):
                raise ValueError(f"tokens have layout {tokens.layout}, this tokenizer produces a SequenceLayout (1..{self.num_registers} tokens)")
            tokens = tokens.ids
        K = self.num_registers
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or not 1 <= tokens.shape[1] <= K:
            raise ValueError(f"ids must be a (B, k) tensor with 1 <= k <= {K} (k out of range), got shape {tuple(getattr(tokens, 'shape', ())) or type(tokens).__name__}")
        if tokens.is_floating_point():
            raise ValueError(f"ids must be integers, got dtype {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}), got range [{int(tokens.min())}, {int(tokens.max())}]")
        return tokens.long()

    @torch.no_grad()
    def decode(self, tokens: Tokens | torch.Tensor, steps: int | None = None, cfg_scale: float | None = None,
               seed: int | None = None, noise_scale: float | None = None) -> torch.Tensor:
        """Any prefix of 1..K tokens -> pixels ``(B, 3, H, W)`` in ``[-1, 1]``.

        Args:
            steps: Euler steps (default ``config.flow_steps``).
            cfg_scale: decoder guidance against the all-masked input (default ``config.cfg_scale``).
            seed: seed of the start noise (default ``config.decode_seed``): decoding is deterministic.
            noise_scale: the start noise times this (default ``config.decode_noise_scale``); 0 ignores ``seed``.
        """
        ids = self.check_ids(tokens)
        steps = self.config.flow_steps if steps is None else steps
        scale = self.config.cfg_scale if cfg_scale is None else cfg_scale
        noise_scale = self.config.decode_noise_scale if noise_scale is None else noise_scale
        if steps < 1 or scale < 0 or noise_scale < 0:
            raise ValueError(f"need steps >= 1, cfg_scale >= 0 and noise_scale >= 0, got {steps}, {scale}, {noise_scale}")
        (B, k), K, dev = ids.shape, self.num_registers, ids.device
        codes = F.pad(self.fsq.ids_to_codes(ids), (0, 0, 0, K - k))
        keep = (torch.arange(K, device=dev) < k).expand(B, K)
        keeps = [keep] if scale == 1.0 else [keep, torch.zeros_like(keep)]  # CFG: and the all-masked input

        def both(fn):  # noqa: ANN001, ANN202
            out = [fn(codes, kp) for kp in keeps]
            return None if out[0] is None else torch.cat(out)

        regs, summary, prior = both(self._registers_in), both(self._code_summary), both(self._code_prior)

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if scale == 1.0:
                return self.velocity(regs, x, t, summary, prior)
            v_cond, v_uncond = self.velocity(regs, x.repeat(2, 1, 1), t.repeat(2), summary, prior).float().chunk(2)
            return v_uncond + scale * (v_cond - v_uncond)

        rng = torch.Generator(device=dev).manual_seed(self.config.decode_seed if seed is None else seed)
        pd = self.config.in_channels * self.config.patch_size**2
        noise = torch.randn((B, self.num_patches, pd), generator=rng, device=dev) * noise_scale
        x = solve_flow(velocity, noise, steps, "euler")
        return self._from_grid(self._unpatchify(x)).float().clamp(-1, 1)

    @torch.no_grad()
    def reconstruct(self, pixels: torch.Tensor, k: int | None = None, **decode_kw: Any) -> torch.Tensor:
        """``decode(encode(pixels, k))``."""
        return self.decode(self.encode(pixels, k), **decode_kw)


def _register() -> None:
    # FlexTok's released sizes: 256 px, f8 VAE latents (16 channels, 32x32), 2x2 patches, 256 registers,
    # FSQ [8,8,8,5,5,5]; width 64 x depth (the d18 config has dim 1152). The VAE is not counted.
    for name, de, dd in (("flextok-d12-d12", 12, 12), ("flextok-d18-d18", 18, 18), ("flextok-d18-d28", 18, 28)):
        register_preset(name, FlexTokTokenizer, tags=("reference",), encoder=dict(dim=64 * de, depth=de, heads=de),
                        decoder=dict(dim=64 * dd, depth=dd, heads=dd))
    # CPU recipe: 32x32 pixels, 4x4 patches (64), 32 registers, FSQ [8,5,5,5] (1000 codes). Short CPU runs: half
    # the samples skip rounding, and training leans to high noise (time_shift 2), where only the tokens tell the image.
    # Registers start at std 1 (distinct from step 0; at std 0.02 all 32 emitted nearly the same code).
    register_preset("flextok-tiny", FlexTokTokenizer, tags=("tiny",), image_size=32, in_channels=3, grid_size=32, patch_size=4,
                    num_registers=32, levels=[8, 5, 5, 5], encoder=dict(dim=128, depth=4, heads=4),
                    decoder=dict(dim=128, depth=4, heads=4), flow_steps=10, fsq_dropout=0.5, time_shift=2.0, register_std=1.0)


_register()
