"""FlexTok's training objective, a mixin of :class:`~mmgen.tokenizers_vis.flextok.FlexTokTokenizer`.

Nested dropout of the registers (``sample_keep``), the decoder's noise levels (``sample_t``), the
rectified-flow loss given the kept FSQ registers (velocity or x-prediction), and the optional REPA
alignment of decoder states to a frozen teacher's features. It reads the tokenizer's modules and
config; nothing here runs when encoding or decoding. ``coarse_weight`` adds a direct layout loss on the codes.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from mmgen.nn.flow import interpolate

from .losses import psnr

T_MIN = 0.05  # x-prediction: v = (x_t - x) / t is clipped below this noise level (JiT)


class FlexTokObjective:
    def _load_teacher(self, device: torch.device) -> torch.nn.Module:
        """The frozen REPA teacher, loaded once as a plain attribute: not a submodule, so never saved, moved or trained with us."""
        from mmgen.modeling import load_module

        if "_teacher" not in self.__dict__:
            self.__dict__["_teacher"] = load_module(self.config.repa_teacher).requires_grad_(False).eval()
        return self.__dict__["_teacher"].to(device)

    def _teacher_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The frozen REPA teacher's conv-encoder features, pooled to the patch grid: ``(B, patches, repa_dim)``."""
        teacher = self._load_teacher(pixels.device)
        with torch.no_grad():
            f = F.adaptive_avg_pool2d(teacher.encoder(pixels).float(), self.config.grid_size // self.config.patch_size)
        if f.shape[1] != self.config.repa_dim:
            raise ValueError(f"repa_dim={self.config.repa_dim} but the teacher {self.config.repa_teacher!r} gives {f.shape[1]} channels")
        return rearrange(f, "b c h w -> b (h w) c")

    def _teacher_ids(self, pixels: torch.Tensor) -> torch.Tensor:
        """The frozen VQ teacher's code ids, one per decoder patch: ``(B, patches)``."""
        teacher = self._load_teacher(pixels.device)
        if not getattr(teacher, "vocab_size", 0) or teacher.vocab_size != self.config.repa_dim:
            raise ValueError(f"repa_target='ids' needs a VQ teacher with repa_dim={self.config.repa_dim} codes, "
                             f"got {self.config.repa_teacher!r} with {getattr(teacher, 'vocab_size', 0)}")
        with torch.no_grad():
            ids = teacher.encode(pixels).ids
        if ids.shape[1] != self.num_patches:
            raise ValueError(f"the teacher gives {ids.shape[1]} ids per image, the decoder has {self.num_patches} patches")
        return ids

    def _repa_loss(self, pixels: torch.Tensor, hidden: torch.Tensor, r: int) -> torch.Tensor:
        """REPA: negative cosine similarity between projected decoder patch states and the teacher's features, or
        (``repa_target="ids"``) cross-entropy of the projected states against the VQ teacher's code ids."""
        pred = self.repa_proj(hidden[:, self.num_registers :].float())
        if self.config.repa_target == "ids":
            return F.cross_entropy(pred.flatten(0, 1), self._teacher_ids(pixels).repeat(r, 1).flatten())
        target = self._teacher_features(pixels).repeat(r, 1, 1)
        return -F.cosine_similarity(pred, target, dim=-1).mean()

    def _weighted_flow(self, err: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean of the per-element flow error ``(B, patches, values)``; with ``detail_weight`` each patch counts
        ``1 + w * std / mean std`` of its clean target, renormalised to mean 1 (the loss keeps its scale)."""
        w = self.config.detail_weight
        if w == 0:
            return err.mean()
        std = target.std(-1)
        weight = 1 + w * std / std.mean().clamp_min(1e-6)
        return (err.mean(-1) * weight).sum() / weight.sum()

    def _coarse_loss(self, codes: torch.Tensor, grid: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """MSE between the coarse head's redraw from the kept codes (dropped ones zeroed) and the average-pooled grid."""
        s = self.config.coarse_size
        pred = self.coarse_head((codes.float() * keep[..., None]).flatten(1))
        return F.mse_loss(pred, F.adaptive_avg_pool2d(grid.float(), s).flatten(1))

    def prefix_sizes(self) -> list[int]:
        """The powers of two up to ``K``, and ``K``: FlexTok's nested-dropout budgets."""
        K = self.num_registers
        return sorted({2**i for i in range(K.bit_length()) if 2**i <= K} | {K})

    def _prior_loss(self, codes: torch.Tensor, prior: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
        """The code prior's MSE at the sampled prefixes, or (``prior_nested``) averaged over every power-of-two prefix."""
        if prior is None:
            return torch.zeros((), device=target.device)
        if not self.config.prior_nested:
            return F.mse_loss(prior.float(), target)
        slots = torch.arange(self.num_registers, device=codes.device)
        return torch.stack([F.mse_loss(self._code_prior(codes, (slots < k).expand(codes.shape[0], -1)).float(), target)
                            for k in self.prefix_sizes()]).mean()

    def sample_keep(self, batch: int, device: torch.device | str) -> torch.Tensor:
        """Nested dropout: tokens kept per sample, ``(B,)`` in ``1..K`` (0 with probability ``null_prob``)."""
        K = self.num_registers
        if self.config.keep_k == "pow2":
            sizes, w = self.prefix_sizes(), self.config.keep_weights
            pick = torch.multinomial(torch.tensor(w, dtype=torch.float, device=device), batch, replacement=True) if w \
                else torch.randint(len(sizes), (batch,), device=device)
            k = torch.tensor(sizes, device=device)[pick]
        else:
            k = torch.randint(1, K + 1, (batch,), device=device)
        if self.config.keep_all_prob > 0:
            k = torch.where(torch.rand(batch, device=device) < self.config.keep_all_prob, K, k)
        return torch.where(torch.rand(batch, device=device) < self.config.null_prob, 0, k)

    def sample_t(self, batch: int, device: torch.device | str) -> torch.Tensor:
        """Training noise levels: logit-normal (the reference) or uniform, shifted by ``time_shift``; ``pure_noise_prob`` of them 1."""
        t = torch.sigmoid(torch.randn(batch, device=device)) if self.config.time_dist == "logit-normal" else torch.rand(batch, device=device)
        s = self.config.time_shift
        t = s * t / (1 + (s - 1) * t)
        return torch.where(torch.rand(batch, device=device) < self.config.pure_noise_prob, 1.0, t)

    def loss(self, pixels: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
        """Rectified-flow loss of the decoder given nested-dropped FSQ registers, and logs."""
        x = self.check_pixels(pixels)
        grid = self._to_grid(x)
        target = self._patchify(grid).float()
        codes, ids = self._encode(grid)
        K, dev, r = self.num_registers, x.device, self.config.noise_draws
        coarse = torch.zeros((), device=dev)
        if self.config.coarse_weight > 0:  # every nested prefix (k >= 1) must carry the coarse layout
            kept = torch.arange(K, device=dev) < self.sample_keep(codes.shape[0], dev).clamp_min(1)[:, None]
            coarse = self._coarse_loss(codes, grid, kept)
        if r > 1:  # every image encoded once, decoded from r noise draws (and r token budgets)
            grid, target, codes = grid.repeat(r, 1, 1, 1), target.repeat(r, 1, 1), codes.repeat(r, 1, 1)
        B = target.shape[0]
        k = self.sample_keep(B, dev)
        keep = torch.arange(K, device=dev) < k[:, None]
        regs, summary, prior = self._registers_in(codes, keep), self._code_summary(codes, keep), self._code_prior(codes, keep)
        prior_loss = self._prior_loss(codes, prior, target)
        t = self.sample_t(B, dev)
        x_t, v = interpolate(target, torch.randn_like(target), t[:, None, None])
        repa = self.config.repa_weight > 0
        if repa:  # the patch states after block repa_layer, caught on the way through the decoder
            caught: list[torch.Tensor] = []
            hook = self.dec.blocks[self.config.repa_layer - 1].register_forward_hook(lambda m, a, o: caught.append(o))
        try:
            out = self.predict(regs, x_t, t, summary, None if prior is None else prior.detach())
        finally:
            if repa:
                hook.remove()
        if self.config.prediction == "v":
            err, x0 = (out.float() - v) ** 2, (x_t - t[:, None, None] * out).detach()
        else:  # x-prediction, still the velocity loss (JiT): ||v_hat - v||^2 = ||x_hat - x||^2 / t^2
            err, x0 = ((out.float() - target) / t.clamp_min(T_MIN)[:, None, None]) ** 2, out.detach()
        flow = self._weighted_flow(err, target)
        repa_loss = self._repa_loss(x, caught[0], r) if repa else torch.zeros((), device=dev)
        loss = flow + self.config.repa_weight * repa_loss + self.config.coarse_weight * coarse + self.config.prior_weight * prior_loss
        with torch.no_grad():  # one-step estimate of the clean grid: a cheap reconstruction monitor
            x0 = self._unpatchify(x0)
            counts = torch.bincount(ids.reshape(-1), minlength=self.vocab_size).float()
            p = counts / counts.sum()
            logs = {
                "loss": loss.detach(), "flow_loss": flow.detach(), "repa_loss": repa_loss.detach(), "coarse_loss": coarse.detach(),
                "prior_loss": prior_loss.detach(), "quant_loss": torch.zeros((), device=dev),
                "recon_loss": F.mse_loss(x0, grid.float()), "psnr": psnr(x0.clamp(-1, 1), grid) if self.autoencoder is None else psnr(x0, grid),
                "codebook_usage": (counts > 0).float().mean(), "perplexity": torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum()),
                "keep_k": k.float().mean(),
            }
        return loss, logs

    def forward(self, pixels: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
        """Same as :meth:`loss` (under DDP the wrapper's forward is what runs)."""
        return self.loss(pixels, step)
