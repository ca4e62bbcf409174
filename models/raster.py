"""Raster next-token generator (LlamaGen style): one token per AR step, causal attention.

Sequence: ``[condition prefix] + tok(0..N-2)``; the output at the position before token ``n``
predicts token ``n``. Class conditions are one prefix token, text is a prefix of BPE tokens that
see each other bidirectionally (``Causal(prefix=P)``). Positions are multi-axis RoPE: the prefix
is 1D, image tokens carry their ``(row, col)`` on the grid.

RoPE only tells a query how far away a key is, so a small model finds it hard to know *which*
cell it is about to generate, and so which words of the prompt apply (two-object prompts bind
colours to positions). With ``target_pos_embed`` every slot that predicts a token also gets a
learned embedding of that token's grid cell (the slot before token ``n`` gets ``pos[n]``), the
target-aware embedding RAR uses for arbitrary orders, here in raster order.

1D layouts run the same way, with 1D positions continuing the prefix's: a FlexTok
``SequenceLayout`` (``SamplerConfig.token_budget = k`` stops after ``k`` tokens and returns that
prefix, which the tokenizer decodes) and a subobject ``SegmentsLayout`` (after its end token every
token is the end token: not trained on, and forced while sampling).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmgen.nn.masks import Causal
from mmgen.nn.transformer import Transformer
from mmgen.registry import register_preset
from mmgen.sampling import CATEGORICAL_FIELDS, DECODING_FIELDS, GUIDANCE_FIELDS, SamplerConfig, sample_logits
from mmgen.tokens import GridLayout, SegmentsLayout, SequenceLayout, Tokens
from mmgen.models.base import Condition, Generator, GeneratorConfig
from mmgen.models.decoding import Decode
from mmgen.text import shapes_text_vocab

__all__ = ["RasterConfig", "RasterGenerator", "grid_positions", "sequence_positions"]


@dataclass
class RasterConfig(GeneratorConfig):
    target_pos_embed: bool = False  # (presets turn it on) learned embedding of the cell each slot predicts (see module doc)


def grid_positions(prefix: int, h: int, w: int) -> torch.Tensor:
    """``(prefix + h*w, 3)`` M-RoPE coordinates: ``(i,i,i)`` for the prefix, ``(P, P+r, P+c)`` on the grid."""
    cpu = torch.device("cpu")  # buffers are computed on CPU even under a meta-device context
    p = torch.arange(prefix, device=cpu)[:, None].expand(prefix, 3)
    r, c = torch.meshgrid(torch.arange(h, device=cpu), torch.arange(w, device=cpu), indexing="ij")
    g = torch.stack([torch.full_like(r, prefix), prefix + r, prefix + c], -1).reshape(-1, 3)
    return torch.cat([p, g]).float()


def sequence_positions(prefix: int, n: int) -> torch.Tensor:
    """``(prefix + n, 3)`` M-RoPE coordinates of a 1D sequence after the prefix: ``(i, i, i)`` (plain 1D RoPE)."""
    return torch.arange(prefix + n, device=torch.device("cpu"))[:, None].expand(prefix + n, 3).float()


class RasterGenerator(Generator):
    config_class = RasterConfig
    sampler_fields = DECODING_FIELDS + GUIDANCE_FIELDS + CATEGORICAL_FIELDS + ("token_budget",)  # token_budget: 1D sequences only

    def __init__(self, config: RasterConfig) -> None:
        super().__init__(config)
        if not isinstance(self.layout, (GridLayout, SequenceLayout, SegmentsLayout)):
            raise ValueError(f"the raster generator needs a grid, sequence or segments layout, got {self.layout}")
        dim = self.config.transformer.dim
        if self.config.transformer.adaln_dim not in (0, dim):
            raise ValueError(f"the AdaLN condition is the pooled condition of width {dim}; got adaln_dim={self.config.transformer.adaln_dim}")
        self.tok_embed = nn.Embedding(self.config.vocab_size, dim)
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        self.transformer = Transformer(self.config.transformer)
        self.head = nn.Linear(dim, self.config.vocab_size, bias=False)
        nn.init.zeros_(self.head.weight)
        if self.config.target_pos_embed:
            self.target_pos = nn.Parameter(torch.randn(self.layout.num_tokens, dim) * 0.02)
        P = self.cond_embed.prefix_len
        pos = grid_positions(P, self.layout.h, self.layout.w) if isinstance(self.layout, GridLayout) else sequence_positions(P, self.layout.num_tokens)
        self.register_buffer("positions", pos, persistent=False)

    def _mask(self) -> Causal:
        return Causal(prefix=self.prefix_len)

    def _token_positions(self, start: int, end: int) -> torch.Tensor:
        """Positions of sequence slots ``start..end-1`` (slot P+n holds the embedding of token n)."""
        return self.positions[start:end]

    def _add_targets(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Add the target-cell embedding to slots ``start..`` of ``x`` (slot ``P-1+n`` predicts token ``n``)."""
        if not self.config.target_pos_embed:
            return x
        first = self.prefix_len - 1  # the slot that predicts token 0
        lo, hi = max(start, first), min(start + x.shape[1], first + self.layout.num_tokens)
        if lo >= hi:
            return x
        pad = (lo - start, start + x.shape[1] - hi)
        return x + F.pad(self.target_pos[lo - first : hi - first], (0, 0) + pad)

    def logits(self, tokens: Tokens, cond: Condition, order: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits ``(B, N, V)``: row ``n`` predicts token ``n`` (raster order).

        With ``order (B, N)``, a permutation of the cells per sample, the sequence is generated in
        that order instead (RAR): row ``i`` predicts token ``order[:, i]``; every token keeps the
        RoPE coordinate of its own cell and each slot gets the target embedding of the cell it predicts.
        """
        ids = tokens.ids
        if ids is None or tokens.layout != self.layout:
            raise ValueError(f"expected discrete tokens with layout {self.layout}, got {tokens.layout}")
        prefix, pooled = self.cond_embed(cond)
        pooled = self.adaln_cond(pooled)
        P, N = self.prefix_len, ids.shape[1]
        if order is None:
            x = torch.cat([prefix, self.tok_embed(ids[:, :-1])], dim=1)
            h = self.transformer(self._add_targets(x, 0), self._token_positions(0, P + N - 1), self._mask(), cond=pooled)
            return self.head(h[:, P - 1 :])
        if order.shape != ids.shape:
            raise ValueError(f"order must have the tokens' shape {tuple(ids.shape)}, got {tuple(order.shape)}")
        x = torch.cat([prefix, self.tok_embed(ids.gather(1, order[:, :-1]))], dim=1)
        if self.config.target_pos_embed:
            x = x + F.pad(self.target_pos[order], (0, 0, P - 1, 0))
        grid = self.positions[P:][order[:, :-1]]  # (B, N-1, 3): each token at its own cell
        positions = torch.cat([self.positions[:P].expand(ids.shape[0], -1, -1), grid], dim=1)
        h = self.transformer(x, positions, self._mask(), cond=pooled)
        return self.head(h[:, P - 1 :])

    def forward(self, tokens: Tokens, cond: Condition) -> tuple[torch.Tensor, dict]:
        cond = self.training_condition(cond)
        logits = self.logits(tokens, cond)
        target = tokens.ids
        if isinstance(self.layout, SegmentsLayout):  # nothing to learn after the first end token
            after_end = F.pad((target == self.layout.end_id).long().cumsum(1)[:, :-1], (1, 0)) > 0
            target = target.masked_fill(after_end, -100)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100)
        return loss, {"ce": loss.detach()}

    def forward_passes(self) -> int:
        return self.layout.num_tokens

    def decode_schedule(self, full: Condition, batch: int, sampler: SamplerConfig) -> Decode:
        """One token per step: the prefix first, then each sampled token's embedding."""
        prefix, pooled = self.cond_embed(full)
        N = self.num_to_generate(sampler)
        ids = torch.zeros(batch, N, dtype=torch.long, device=self.device)
        return Decode(self.transformer, prefix, self.positions[: self.prefix_len + N], self._mask(), N, self._token_step, self._sampled,
                      batch, cond=self.adaln_cond(pooled), inputs=self._add_targets, state={"ids": ids})

    def _token_step(self, d: Decode, n: int, h: torch.Tensor) -> torch.Tensor | None:
        ids = d.state["ids"]
        ids[:, n] = self._next_ids(d.guide(self.head(h[:, -1]).float()), ids[:, :n], d.sampler, d.rng)
        return self.tok_embed(ids[:, n : n + 1]) if n + 1 < d.steps else None

    def _sampled(self, d: Decode, n: int) -> Tokens:
        ids = d.state["ids"]
        return self._partial(ids, n) if n < self.layout.num_tokens else Tokens(self.layout, ids=ids)

    def num_to_generate(self, sampler: SamplerConfig) -> int:
        """Tokens to sample: all, or ``sampler.token_budget`` of a truncatable 1D sequence (FlexTok)."""
        N, k = self.layout.num_tokens, sampler.token_budget
        if k == 0 or k >= N:
            return N
        if not isinstance(self.layout, SequenceLayout):
            raise ValueError(f"token_budget={k} needs a truncatable 1D sequence (a FlexTok tokenizer); this model's layout is {self.layout}: use token_budget=0")
        return k

    def _partial(self, ids: torch.Tensor, n: int) -> Tokens:
        """What the first ``n`` sampled tokens are: a decodable prefix of a 1D sequence, else the full layout."""
        if isinstance(self.layout, SequenceLayout):
            return Tokens(self.layout.truncate(n), ids=ids[:, :n].clone())
        out = ids.clone()
        if isinstance(self.layout, SegmentsLayout):
            out[:, n:] = self.layout.end_id  # not sampled yet: nothing to paint
        return Tokens(self.layout, ids=out)

    def _next_ids(self, logits: torch.Tensor, prev: torch.Tensor, sampler: SamplerConfig, rng: torch.Generator | None) -> torch.Tensor:
        """Sample the next token; a segments sequence needs at least one segment and stays ended once ended."""
        if not isinstance(self.layout, SegmentsLayout):
            return sample_logits(logits, sampler, rng)
        end = self.layout.end_id
        if prev.shape[1] == 0:
            logits = logits.clone()
            logits[:, end] = float("-inf")
        nxt = sample_logits(logits, sampler, rng)
        ended = (prev == end).any(1) if prev.shape[1] else torch.zeros_like(nxt, dtype=torch.bool)
        return torch.where(ended, torch.full_like(nxt, end), nxt)


_TINY = dict(dim=192, depth=6, heads=6)
_RASTER = dict(target_pos_embed=True)


def _register() -> None:
    register_preset("raster-tiny", RasterGenerator, tags=("tiny",), transformer=dict(_TINY), **_RASTER, cond="text", text_vocab=shapes_text_vocab)
    register_preset("raster-tiny-class", RasterGenerator, tags=("tiny",), transformer=dict(_TINY), **_RASTER, cond="class", num_classes=10)
    # the same model on 1D tokenizers: FlexTok sequences (flextok-tiny) and subobject segments (subobject-tiny)
    register_preset("raster-tiny-flextok", RasterGenerator, tags=("tiny",), transformer=dict(_TINY), **_RASTER, cond="text", text_vocab=shapes_text_vocab,
                    vocab_size=1000, layout={"type": "sequence", "length": 32}, token_dim=4)
    register_preset("raster-tiny-subobject", RasterGenerator, tags=("tiny",), transformer=dict(_TINY), **_RASTER, cond="text", text_vocab=shapes_text_vocab,
                    vocab_size=15361, layout={"type": "segments", "max_segments": 8, "end_id": 15360}, token_dim=5)
    # LlamaGen reference sizes (class-conditional ImageNet, 16x16 tokens of a 16384-code VQ).
    ref = dict(cond="class", num_classes=1000, vocab_size=16384, layout={"type": "grid", "h": 16, "w": 16}, image_size=256, token_dim=8, **_RASTER)
    register_preset("llamagen-b", RasterGenerator, tags=("reference",), transformer=dict(dim=768, depth=12, heads=12), **ref)
    register_preset("llamagen-l", RasterGenerator, tags=("reference",), transformer=dict(dim=1024, depth=24, heads=16), **ref)


_register()
