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

from mmgen.data.shapes_text import shapes_text_vocab
from mmgen.models.base import CondEmbedder, Condition, Generator, GeneratorConfig, corrupt_context
from mmgen.models.decoding import Decode
from mmgen.nn.layers import dropout, swiglu_hidden
from mmgen.nn.losses import head_cross_entropy
from mmgen.nn.masks import Causal
from mmgen.nn.transformer import Transformer
from mmgen.registry import register_preset
from mmgen.sampler import CATEGORICAL_FIELDS, DECODING_FIELDS, GUIDANCE_FIELDS, SamplerConfig, sample_logits
from mmgen.tokens import GridLayout, SegmentsLayout, SequenceLayout, Tokens

__all__ = ["RasterConfig", "RasterGenerator", "StartTokenCondEmbedder", "llamagen_official_transformer", "LLAMAGEN_SIZES", "LLAMAGEN_OFFICIAL",
           "grid_positions", "sequence_positions", "llamagen_positions"]


@dataclass
class RasterConfig(GeneratorConfig):
    target_pos_embed: bool = False  # (presets turn it on) learned embedding of the cell each slot predicts (see module doc)
    # Options of the published models (mmgen.convert): LlamaGen uses token_dropout and the
    # transformer's rope="llamagen-2d"; RAR uses the other four with rope="none" and AdaLN.
    token_dropout: float = 0.0  # dropout on the input embeddings, condition included (LlamaGen), training only
    start_token: bool = False  # a learned token before the condition prefix (RAR's cls token)
    abs_pos_embed: bool = False  # learned embedding per sequence slot; a token keeps its own cell's under any order (RAR)
    step_cond: bool = False  # AdaLN condition per slot: pooled condition + a learned slot embedding (RAR)
    head_bias: bool = False
    # Teacher forcing with a corrupted context: each training sample replaces a fraction ~ U(0, context_noise)
    # of its input tokens by random codes (the targets stay clean), so the model cannot copy a neighbour's
    # colour and must read the prompt for every cell (the discrete analogue of xAR's noisy context).
    context_noise: float = 0.0


class StartTokenCondEmbedder(CondEmbedder):
    """The condition prefix behind one learned start token (RAR: ``[cls, class]``); ``pooled`` is the condition's."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__(cfg)
        self.start = nn.Parameter(torch.zeros(1, 1, cfg.transformer.dim))
        nn.init.trunc_normal_(self.start, std=0.02)
        self.prefix_len += 1

    def forward(self, cond: Condition) -> tuple[torch.Tensor, torch.Tensor]:
        prefix, pooled = super().forward(cond)
        return torch.cat([self.start.expand(prefix.shape[0], -1, -1), prefix], dim=1), pooled


def grid_positions(prefix: int, h: int, w: int) -> torch.Tensor:
    """``(prefix + h*w, 3)`` M-RoPE coordinates: ``(i,i,i)`` for the prefix, ``(P, P+r, P+c)`` on the grid."""
    cpu = torch.device("cpu")  # buffers are computed on CPU even under a meta-device context
    p = torch.arange(prefix, device=cpu)[:, None].expand(prefix, 3)
    r, c = torch.meshgrid(torch.arange(h, device=cpu), torch.arange(w, device=cpu), indexing="ij")
    g = torch.stack([torch.full_like(r, prefix), prefix + r, prefix + c], -1).reshape(-1, 3)
    return torch.cat([p, g]).float()


def llamagen_positions(prefix: int, h: int, w: int) -> torch.Tensor:
    """``(prefix + h*w, 2)`` LlamaGen 2D RoPE coordinates: NaN (q, k zeroed) for the prefix, ``(row, col)`` on the grid."""
    cpu = torch.device("cpu")
    r, c = torch.meshgrid(torch.arange(h, device=cpu), torch.arange(w, device=cpu), indexing="ij")
    return torch.cat([torch.full((prefix, 2), float("nan"), device=cpu), torch.stack([r, c], -1).reshape(-1, 2).float()])


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
        cfg, tcfg = self.config, self.config.transformer
        dim = tcfg.dim
        if tcfg.adaln_dim not in (0, dim):
            raise ValueError(f"the AdaLN condition is the pooled condition of width {dim}; got adaln_dim={tcfg.adaln_dim}")
        if not 0.0 <= cfg.context_noise < 1.0:
            raise ValueError(f"context_noise is the largest fraction of corrupted input tokens, in [0, 1); got {cfg.context_noise}")
        if cfg.step_cond and not tcfg.adaln_dim:
            raise ValueError("step_cond=True modulates AdaLN blocks: set transformer.adaln_dim to the width")
        if cfg.start_token:
            if cfg.cond == "text":
                raise ValueError("start_token=True is for class or no conditioning (RAR); a text prefix would lose its bidirectional attention")
            self.cond_embed = StartTokenCondEmbedder(cfg)
        self.tok_embed = nn.Embedding(cfg.vocab_size, dim)
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        self.transformer = Transformer(tcfg)
        self.head = nn.Linear(dim, cfg.vocab_size, bias=cfg.head_bias)
        nn.init.zeros_(self.head.weight)
        if cfg.target_pos_embed:
            self.target_pos = nn.Parameter(torch.randn(self.layout.num_tokens, dim) * 0.02)
        P = self.cond_embed.prefix_len
        if cfg.abs_pos_embed:
            self.pos_embed = nn.Parameter(torch.randn(P + self.layout.num_tokens, dim) * 0.02)
        if cfg.step_cond:  # slots 0 .. P+N-2 are run (the last token is never an input)
            self.step_embed = nn.Parameter(torch.randn(P + self.layout.num_tokens - 1, dim) * 0.02)
        if tcfg.rope == "none":  # positions are slot indices: they pick the absolute embeddings
            pos = torch.arange(P + self.layout.num_tokens, device="cpu")[:, None].float()
        elif tcfg.rope == "llamagen-2d":
            if not isinstance(self.layout, GridLayout):
                raise ValueError(f"rope='llamagen-2d' needs a grid layout, got {self.layout}")
            pos = llamagen_positions(P, self.layout.h, self.layout.w)
        else:
            pos = grid_positions(P, self.layout.h, self.layout.w) if isinstance(self.layout, GridLayout) else sequence_positions(P, self.layout.num_tokens)
        self.register_buffer("positions", pos, persistent=False)

    def _mask(self) -> Causal:
        if self.config.start_token:  # RAR: plain causal, the start token does not see the condition
            return Causal()
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
        return self.head(self.hidden(tokens, cond, order))

    def hidden(self, tokens: Tokens, cond: Condition, order: torch.Tensor | None = None) -> torch.Tensor:
        """The final hidden states ``(B, N, dim)`` the head reads in ``logits`` (the training loss runs the head chunked)."""
        ids = tokens.ids
        if ids is None or tokens.layout != self.layout:
            raise ValueError(f"expected discrete tokens with layout {self.layout}, got {tokens.layout}")
        prefix, pooled = self.cond_embed(cond)
        P, N = self.prefix_len, ids.shape[1]
        pooled = self._adaln(pooled, 0, P + N - 1)
        if order is None:
            x = self._token_dropout(torch.cat([prefix, self.tok_embed(self._noisy_context(ids[:, :-1]))], dim=1))
            h = self._run(self._add_targets(x, 0), self._token_positions(0, P + N - 1), pooled)
            return h[:, P - 1 :]
        if order.shape != ids.shape:
            raise ValueError(f"order must have the tokens' shape {tuple(ids.shape)}, got {tuple(order.shape)}")
        x = self._token_dropout(torch.cat([prefix, self.tok_embed(self._noisy_context(ids.gather(1, order[:, :-1])))], dim=1))
        if self.config.target_pos_embed:
            x = x + F.pad(self.target_pos[order], (0, 0, P - 1, 0))
        grid = self.positions[P:][order[:, :-1]]  # (B, N-1, axes): each token at its own cell
        positions = torch.cat([self.positions[:P].expand(ids.shape[0], -1, -1), grid], dim=1)
        h = self._run(x, positions, pooled)
        return h[:, P - 1 :]

    def _noisy_context(self, ids: torch.Tensor) -> torch.Tensor:
        """Input ids with a per-sample fraction ~ U(0, ``context_noise``) replaced by random codes (training only)."""
        if not (self.training and self.config.context_noise):
            return ids
        if isinstance(self.layout, SegmentsLayout):  # the end token keeps its meaning and is never drawn
            return corrupt_context(ids, self.config.context_noise, self.layout.end_id, keep=ids == self.layout.end_id)
        return corrupt_context(ids, self.config.context_noise, self.config.vocab_size)

    def _token_dropout(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.config.token_dropout, self.training)

    def _with_abs_pos(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Add the absolute embeddings of the slots at ``positions`` (models with ``abs_pos_embed``)."""
        return x + self.pos_embed[positions[..., 0].long()] if self.config.abs_pos_embed else x

    def _run(self, x: torch.Tensor, positions: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The teacher-forced transformer pass over slots at ``positions``."""
        return self.transformer(self._with_abs_pos(x, positions), positions, self._mask(), cond=cond)

    def forward(self, tokens: Tokens, cond: Condition) -> tuple[torch.Tensor, dict]:
        h = self.hidden(tokens, self.training_condition(cond))  # (checks the tokens first)
        target = tokens.ids
        if isinstance(self.layout, SegmentsLayout):  # nothing to learn after the first end token
            after_end = F.pad((target == self.layout.end_id).long().cumsum(1)[:, :-1], (1, 0)) > 0
            target = target.masked_fill(after_end, -100)
        loss, _ = head_cross_entropy(h, self.head, target)
        return loss, {"ce": loss.detach()}

    def forward_passes(self) -> int:
        return self.layout.num_tokens

    def _adaln(self, pooled: torch.Tensor | None, start: int = 0, n: int = 0) -> torch.Tensor | None:
        """The AdaLN condition of slots ``start..start+n-1``: None without AdaLN, the pooled condition,
        or (``step_cond``, RAR) the pooled condition plus each slot's learned embedding ``(B, n, dim)``."""
        pooled = self.adaln_cond(pooled)
        if pooled is None or not self.config.step_cond:
            return pooled
        return pooled[:, None] + self.step_embed[start : start + n]

    def _slot_inputs(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """What slots ``start..`` add to their token embeddings: the target cell, and absolute positions if the model has them."""
        return self._with_abs_pos(self._add_targets(x, start), self.positions[start : start + x.shape[1]])

    def decode_schedule(self, full: Condition, batch: int, sampler: SamplerConfig) -> Decode:
        """One token per step: the prefix first, then each sampled token's embedding."""
        prefix, pooled = self.cond_embed(full)
        N = self.num_to_generate(sampler)
        ids = torch.zeros(batch, N, dtype=torch.long, device=self.device)
        return Decode(self.transformer, prefix, self.positions[: self.prefix_len + N], self._mask(), N, self._token_step, self._sampled,
                      batch, cond_at=lambda start, n: self._adaln(pooled, start, n),
                      inputs=self._slot_inputs, state={"ids": ids})

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
    # mmgen's own architecture at LlamaGen's reference sizes (class-conditional ImageNet, 16x16 tokens of a 16384-code VQ)
    ref = dict(cond="class", num_classes=1000, vocab_size=16384, layout={"type": "grid", "h": 16, "w": 16}, image_size=256, token_dim=8)
    register_preset("llamagen-mmgen-b", RasterGenerator, tags=("reference",), transformer=dict(dim=768, depth=12, heads=12), **ref, **_RASTER)
    register_preset("llamagen-mmgen-l", RasterGenerator, tags=("reference",), transformer=dict(dim=1024, depth=24, heads=16), **ref, **_RASTER)
    # the published LlamaGen c2i GPTs (gpt.py GPT_models), 256 px (16x16 tokens) and 384 px (24x24)
    for size, (depth, heads, dim) in LLAMAGEN_SIZES.items():
        for px in (256, 384):
            g = px // 16
            register_preset(f"llamagen-{size}" + ("-384" if px == 384 else ""), RasterGenerator, tags=("reference", "official"),
                            transformer=llamagen_official_transformer(dim, depth, heads), **LLAMAGEN_OFFICIAL,
                            **(ref | dict(layout={"type": "grid", "h": g, "w": g}, image_size=px)))


LLAMAGEN_SIZES = {"b": (12, 12, 768), "l": (24, 16, 1024), "xl": (36, 20, 1280), "xxl": (48, 24, 1536), "3b": (24, 32, 3200)}  # (n_layer, n_head, dim)
LLAMAGEN_OFFICIAL = dict(token_dropout=0.1, cond_dropout=0.1)


def llamagen_official_transformer(dim: int, depth: int, heads: int, hidden: int = 0, norm_eps: float = 1e-5, rope_base: float = 10000.0,
                                  dropout: float = 0.1, drop_path: float = 0.0) -> dict:
    """LlamaGen's block (``autoregressive/models/gpt.py``): RMSNorm, SwiGLU (hidden a multiple of 256), 2D RoPE, no biases."""
    return dict(dim=dim, depth=depth, heads=heads, mlp_ratio=4.0, mlp_multiple_of=256, mlp_hidden=hidden or swiglu_hidden(dim, 4.0, 256), norm="rmsnorm", norm_eps=norm_eps,
                qk_norm=False, rope="llamagen-2d", rope_theta=rope_base, dropout=dropout, drop_path=drop_path)

_register()
