"""Vector quantizers and the codebook bookkeeping both tokenizers share.

``VectorQuantizer`` follows LlamaGen: a low-dimensional codebook (e.g. 8-d) whose entries and
inputs are l2-normalised, so the nearest code is the one of highest cosine similarity; the
codebook learns from ``mse(z_q, sg(z))`` and the encoder from ``beta * mse(z, sg(z_q))``, with a
straight-through estimator in between. ``FSQQuantizer`` puts FSQ behind the same interface: each
code channel is rounded on its own, so there is no codebook to learn, restart or collapse.
``CodebookTracker`` counts, per code, the training steps
since it was last chosen: it yields usage, perplexity and dead codes, and can restart dead codes
from encoder outputs (what rescues codebook usage on short CPU runs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .fsq import FSQ

__all__ = ["CodebookTracker", "VectorQuantizer", "FSQQuantizer", "QuantizerOutput", "build_quantizer", "nearest_code", "entropy_loss"]


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, C, h, w), straight-through: values of the codes, gradient to the input
    ids: torch.Tensor  # (B, h*w) long, raster order
    loss: torch.Tensor  # 0-d: codebook + beta * commitment (+ entropy)
    logs: dict[str, Any] = field(default_factory=dict)


def nearest_code(z: torch.Tensor, codebook: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Index of the nearest code for each row of ``z`` (N, C) in ``codebook`` (V, C).

    ``cosine`` expects both already l2-normalised and takes the highest dot product; otherwise
    plain euclidean distance (``||e||^2 - 2 z.e``; ``||z||^2`` does not change the argmin).
    """
    if cosine:
        return torch.argmax(z @ codebook.t(), dim=1)
    return torch.argmin(codebook.square().sum(1) - 2.0 * (z @ codebook.t()), dim=1)


def entropy_loss(logits: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """LlamaGen/MaskGIT's entropy penalty: sharp per-token choice, flat codebook average."""
    logits = logits / temperature
    probs = logits.softmax(-1)
    log_probs = F.log_softmax(logits + 1e-5, dim=-1)
    avg = probs.mean(0)
    avg_entropy = -(avg * torch.log(avg + 1e-5)).sum()
    sample_entropy = -(probs * log_probs).sum(-1).mean()
    return sample_entropy - avg_entropy


class CodebookTracker(nn.Module):
    """Per-code "training steps since last chosen" counter (a buffer, so it is checkpointed).

    Everything stays on the device (no ``.item()``), so tracking costs no host sync.
    """

    def __init__(self, codebook_size: int, dead_after: int) -> None:
        super().__init__()
        if dead_after < 1:
            raise ValueError(f"dead_after={dead_after} must be >= 1")
        self.codebook_size = codebook_size
        self.dead_after = dead_after
        self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long))

    @torch.no_grad()
    def batch_stats(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Fraction of codes used by ``ids`` and the perplexity of their histogram."""
        counts = torch.bincount(ids.reshape(-1), minlength=self.codebook_size).float()
        p = counts / counts.sum().clamp_min(1.0)
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())
        return {"codebook_usage": (counts > 0).float().mean(), "perplexity": perplexity}

    @torch.no_grad()
    def update(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Count one training step in which ``ids`` were chosen; return batch stats + dead count."""
        used = torch.bincount(ids.reshape(-1), minlength=self.codebook_size) > 0
        self.unused_steps.add_(1).masked_fill_(used, 0)
        return {**self.batch_stats(ids), "dead_codes": self.dead_mask().sum().float()}

    def dead_mask(self) -> torch.Tensor:
        return self.unused_steps >= self.dead_after

    @torch.no_grad()
    def restart(self, weight: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Overwrite dead rows of ``weight`` (V, C) with random rows of ``candidates`` (N, C).

        The choice uses torch's global RNG on ``weight``'s device, so runs are reproducible from a
        seed. Restarted codes get a fresh grace period. Returns the number restarted (0-d).
        """
        dead = self.dead_mask()
        pick = torch.randint(0, candidates.shape[0], (self.codebook_size,), device=weight.device)
        weight.copy_(torch.where(dead[:, None], candidates[pick].to(weight.dtype), weight))
        self.unused_steps.masked_fill_(dead, 0)
        return dead.sum().float()


class VectorQuantizer(nn.Module):
    """LlamaGen's quantizer: (optionally) l2-normalised codes, nearest by cosine, straight-through.

    Args:
        codebook_size: number of codes ``V``.
        dim: code dimension (LlamaGen uses 8: a low dim keeps codes well used).
        beta: commitment weight.
        l2_norm: normalise inputs and codes (cosine lookup); off = plain euclidean VQ.
        entropy_weight: weight of the entropy penalty (0 = off, as in LlamaGen's default).
        dead_after: steps unused after which a code counts as dead.
        restart_dead: re-initialise dead codes from this batch's encoder outputs (training only).
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, l2_norm: bool = True,
                 entropy_weight: float = 0.0, dead_after: int = 100, restart_dead: bool = False) -> None:
        super().__init__()
        self.codebook_size, self.dim, self.beta = codebook_size, dim, beta
        self.l2_norm, self.entropy_weight, self.restart_dead = l2_norm, entropy_weight, restart_dead
        self.embedding = nn.Embedding(codebook_size, dim)
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
            if l2_norm:
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        self.tracker = CodebookTracker(codebook_size, dead_after)

    def codebook(self) -> torch.Tensor:
        """The ``(V, C)`` code vectors as the decoder sees them (normalised if ``l2_norm``)."""
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Code vectors for ``ids`` of any shape: ``(...,) -> (..., C)``."""
        return F.embedding(ids, self.codebook())

    def forward(self, z: torch.Tensor, update_stats: bool = False) -> QuantizerOutput:
        """Quantize ``z`` (B, C, h, w). ``update_stats`` (training) updates usage/dead-code state."""
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise ValueError(f"expected (B, {self.dim}, h, w) latents, got shape {tuple(z.shape)}")
        with torch.autocast(z.device.type, enabled=False):  # nearest codes in fp32 under bf16 autocast
            return self._forward(z.float(), update_stats)

    def _forward(self, z: torch.Tensor, update_stats: bool) -> QuantizerOutput:
        b, _, h, w = z.shape
        flat = rearrange(z, "b c h w -> (b h w) c")
        restarted = None
        if update_stats and self.restart_dead:
            restarted = self.tracker.restart(self.embedding.weight, flat.detach())
        zf = F.normalize(flat, dim=-1) if self.l2_norm else flat
        codebook = self.codebook()
        ids = nearest_code(zf.detach(), codebook.detach(), cosine=self.l2_norm)
        zq = F.embedding(ids, codebook)
        codebook_loss = F.mse_loss(zq, zf.detach())
        commit_loss = F.mse_loss(zf, zq.detach())
        loss = codebook_loss + self.beta * commit_loss
        logs: dict[str, Any] = {"codebook_loss": codebook_loss.detach(), "commit_loss": commit_loss.detach()}
        if self.entropy_weight > 0:
            logits = 2.0 * zf @ codebook.t() - codebook.square().sum(1)  # -distance up to a per-row constant
            ent = entropy_loss(logits)
            loss = loss + self.entropy_weight * ent
            logs["entropy_loss"] = ent.detach()
        zq = zf + (zq - zf).detach()
        ids = rearrange(ids, "(b n) -> b n", b=b)
        logs.update(self.tracker.update(ids) if update_stats else self.tracker.batch_stats(ids))
        if restarted is not None:
            logs["restarted_codes"] = restarted
        return QuantizerOutput(rearrange(zq, "(b h w) c -> b c h w", b=b, h=h, w=w), ids, loss, logs)


class FSQQuantizer(nn.Module):
    """:class:`~.fsq.FSQ` with :class:`VectorQuantizer`'s interface (no loss, no codebook to restart).

    Args:
        levels: FSQ levels; ``codebook_size = prod(levels)`` and ``dim = len(levels)``.
        dead_after: steps unused after which a code counts as dead (reported, never restarted).
    """

    def __init__(self, levels, dead_after: int = 100) -> None:
        super().__init__()
        self.fsq = FSQ(levels)
        self.codebook_size, self.dim = self.fsq.codebook_size, self.fsq.dim
        self.tracker = CodebookTracker(self.codebook_size, dead_after)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fsq.ids_to_codes(ids)

    def forward(self, z: torch.Tensor, update_stats: bool = False) -> QuantizerOutput:
        """Quantize ``z`` (B, C, h, w); the loss is zero (FSQ has nothing to learn)."""
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise ValueError(f"expected (B, {self.dim}, h, w) latents, got shape {tuple(z.shape)}")
        b, _, h, w = z.shape
        codes, ids = self.fsq(rearrange(z, "b c h w -> b h w c"))
        ids = ids.reshape(b, h * w)
        logs = self.tracker.update(ids) if update_stats else self.tracker.batch_stats(ids)
        return QuantizerOutput(rearrange(codes, "b h w c -> b c h w"), ids, z.new_zeros((), dtype=torch.float32), logs)


def build_quantizer(cfg) -> VectorQuantizer | FSQQuantizer:
    """The quantizer a VQ tokenizer config asks for: FSQ when ``cfg.fsq_levels`` is set, else LlamaGen's VQ."""
    if not cfg.fsq_levels:
        return VectorQuantizer(cfg.codebook_size, cfg.codebook_dim, beta=cfg.beta, l2_norm=cfg.l2_norm, entropy_weight=cfg.entropy_weight,
                               dead_after=cfg.dead_code_steps, restart_dead=cfg.restart_dead_codes)
    q = FSQQuantizer(cfg.fsq_levels, dead_after=cfg.dead_code_steps)
    if (cfg.codebook_size, cfg.codebook_dim) != (q.codebook_size, q.dim):
        raise ValueError(f"fsq_levels={list(q.fsq.levels)} make {q.codebook_size} codes of dimension {q.dim}: "
                         f"set codebook_size={q.codebook_size} and codebook_dim={q.dim} (got {cfg.codebook_size}, {cfg.codebook_dim})")
    if cfg.restart_dead_codes:
        raise ValueError("restart_dead_codes=True has no meaning with fsq_levels: FSQ has no codebook to restart")
    return q
