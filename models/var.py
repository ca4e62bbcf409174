"""VAR next-scale generator: one AR step per scale, block-causal attention, one forward per scale.

Training input (teacher forcing): ``[condition prefix] + [start tokens of scale 0] + [for every
later scale, the accumulated quantized feature map so far, downsampled to that scale]`` — the
multi-scale tokenizer computes the latter (``ids_to_var_input``). Inside a scale attention is
bidirectional, across scales causal (``BlockCausal``). The condition also modulates every block
through AdaLN, as in VAR. Sampling runs one forward per scale with the KV cache and the VAR-style
CFG schedule (guidance grows linearly with the scale index by default).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mmgen.data.shapes_text import shapes_text_vocab
from mmgen.models.base import CondEmbedder, Condition, Generator, GeneratorConfig
from mmgen.models.decoding import Decode
from mmgen.nn.losses import head_cross_entropy
from mmgen.nn.masks import BlockCausal
from mmgen.nn.transformer import Transformer
from mmgen.registry import register_preset
from mmgen.sampler import CATEGORICAL_FIELDS, DECODING_FIELDS, GUIDANCE_FIELDS, SamplerConfig, sample_logits
from mmgen.tokens import ScalesLayout, Tokens

__all__ = ["VARConfig", "VARGenerator", "PooledOnlyCondEmbedder", "scale_positions", "var_official_transformer", "VAR_OFFICIAL"]


@dataclass
class VARConfig(GeneratorConfig):
    layout: dict = field(default_factory=lambda: {"type": "scales", "scales": [1, 2, 3, 4, 6, 8]})
    # Options of the published VAR (mmgen.convert), with the transformer's rope="none":
    class_prefix: bool = True  # False: no prefix slot; the condition enters the start tokens and the AdaLN only
    abs_pos_embed: bool = False  # learned embedding per token slot (VAR's pos_1LC)
    head_bias: bool = False


class PooledOnlyCondEmbedder(CondEmbedder):
    """A condition without prefix slots: only its pooled vector is used (VAR's class embedding)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__(cfg)
        self.prefix_len = 0

    def forward(self, cond: Condition) -> tuple[torch.Tensor, torch.Tensor]:
        prefix, pooled = super().forward(cond)
        return prefix[:, :0], pooled


def scale_positions(prefix: int, scales: tuple[int, ...]) -> torch.Tensor:
    """M-RoPE coordinates: prefix 1D; scale ``k`` tokens at ``(P+k, P+y, P+x)`` with ``(y, x)`` the
    token's centre in final-grid units, so every scale shares one spatial frame."""
    final = scales[-1]
    cpu = torch.device("cpu")  # computed on CPU even under a meta-device context
    parts = [torch.arange(prefix, device=cpu)[:, None].expand(prefix, 3).float()]
    for k, s in enumerate(scales):
        c = (torch.arange(s, device=cpu).float() + 0.5) * final / s - 0.5
        y, x = torch.meshgrid(c, c, indexing="ij")
        parts.append(torch.stack([torch.full_like(y, prefix + k), prefix + y, prefix + x], -1).reshape(-1, 3))
    return torch.cat(parts)


class VARGenerator(Generator):
    config_class = VARConfig
    sampler_fields = DECODING_FIELDS + GUIDANCE_FIELDS + CATEGORICAL_FIELDS

    def __init__(self, config: VARConfig) -> None:
        super().__init__(config)
        tconfig = self.config.transformer  # the generator's own copy (the base copies the config)
        if tconfig.adaln_dim not in (0, tconfig.dim):
            raise ValueError(f"VAR's AdaLN condition has the model width {tconfig.dim}; got adaln_dim={tconfig.adaln_dim}")
        tconfig.adaln_dim = tconfig.dim  # the condition always modulates VAR's blocks
        if not isinstance(self.layout, ScalesLayout):
            raise ValueError(f"the VAR generator needs a scales layout, got {self.layout}")
        dim, scales = self.config.transformer.dim, self.layout.scales
        if not self.config.class_prefix:
            if self.config.cond == "text":
                raise ValueError("class_prefix=False pools the condition into one vector: use cond='class' or 'none'")
            self.cond_embed = PooledOnlyCondEmbedder(self.config)
        if self.config.abs_pos_embed:
            self.pos_embed = nn.Parameter(torch.randn(self.layout.num_tokens, dim) * 0.02)
        self.word_embed = nn.Linear(self.config.token_dim, dim)
        self.start = nn.Parameter(torch.randn(1, scales[0] ** 2, dim) * 0.02)
        self.level_embed = nn.Embedding(len(scales), dim)
        nn.init.normal_(self.level_embed.weight, std=0.02)
        self.transformer = Transformer(self.config.transformer)
        self.head = nn.Linear(dim, self.config.vocab_size, bias=self.config.head_bias)
        nn.init.zeros_(self.head.weight)
        P = self.cond_embed.prefix_len
        self.register_buffer("positions", scale_positions(P, scales), persistent=False)
        levels = torch.repeat_interleave(torch.arange(len(scales), device="cpu"), torch.tensor(self.layout.group_sizes, device="cpu"))
        self.register_buffer("levels", levels, persistent=False)

    def _mask(self) -> BlockCausal:
        return BlockCausal(self.layout.group_sizes, prefix=self.prefix_len)

    def _scale_inputs(self, var_input: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """Start tokens (+ pooled condition) followed by the embedded next-scale inputs, plus level embeddings."""
        B = pooled.shape[0]
        sos = self.start.expand(B, -1, -1) + pooled[:, None]
        x = torch.cat([sos, self.word_embed(var_input)], dim=1)
        return x + self.level_embed(self.levels[: x.shape[1]])

    def logits(self, tokens: Tokens, cond: Condition) -> torch.Tensor:
        """Teacher-forced logits ``(B, N, V)`` of all scales in one forward (block-causal)."""
        return self.logits_from_input(self._var_input(tokens), cond)

    def _var_input(self, tokens: Tokens) -> torch.Tensor:
        if tokens.ids is None or tokens.layout != self.layout:
            raise ValueError(f"expected discrete tokens with layout {self.layout}, got {tokens.layout}")
        with torch.no_grad():
            return self.tokenizer.ids_to_var_input(tokens.ids)

    def logits_from_input(self, var_input: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Teacher-forced logits from the tokenizer's next-scale inputs ``(B, N - scales[0]^2, token_dim)``."""
        return self.head(self._hidden(var_input, cond))

    def _hidden(self, var_input: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Final hidden states ``(B, N, dim)`` of the token slots (the prefix needs no logits)."""
        prefix, pooled = self.cond_embed(cond)
        x = torch.cat([prefix, self._scale_inputs(var_input, pooled)], dim=1)
        h = self.transformer(self._slot_inputs(x, 0), self.positions[: x.shape[1]], self._mask(), cond=pooled)
        return h[:, -self.layout.num_tokens :]

    def _slot_inputs(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Slots ``start..`` plus their absolute embeddings, for models with ``abs_pos_embed`` (token slots only: the prefix has none)."""
        if not self.config.abs_pos_embed:
            return x
        lo, hi = max(start, self.prefix_len), start + x.shape[1]
        return x + F.pad(self.pos_embed[lo - self.prefix_len : hi - self.prefix_len], (0, 0, lo - start, 0))

    def forward(self, tokens: Tokens, cond: Condition) -> tuple[torch.Tensor, dict]:
        """Mean cross-entropy over all scales; the per-token losses it is computed from give the per-scale logs.

        The head and the loss run chunked (``head_cross_entropy``) outside autocast: the
        ``(B, N, V)`` logits are never materialised.
        """
        cond = self.training_condition(cond)
        loss, per_tok = head_cross_entropy(self._hidden(self._var_input(tokens), cond), self.head, tokens.ids)
        logs = {"ce": loss.detach()}  # per scale: where the model struggles
        logs |= {f"ce_s{s}": part.mean() for s, part in zip(self.layout.scales, self.layout.split(per_tok))}
        return loss, logs

    def forward_passes(self) -> int:
        return len(self.layout.scales)

    def decode_schedule(self, full: Condition, batch: int, sampler: SamplerConfig) -> Decode:
        """One scale per step: the prefix and scale 0's start tokens, then the tokenizer's next-scale input."""
        prefix, pooled = self.cond_embed(full)
        sos = self.start.expand(full.batch_size, -1, -1) + pooled[:, None] + self.level_embed.weight[0]
        state = {"f_hat": self.tokenizer.empty_fhat(batch, self.device), "ids": []}
        return Decode(self.transformer, torch.cat([prefix, sos], dim=1), self.positions, self._mask(), len(self.layout.scales),
                      self._scale_step, self._sampled, batch, cond=self.adaln_cond(pooled), inputs=self._slot_inputs, state=state)

    def _scale_step(self, d: Decode, k: int, h: torch.Tensor) -> torch.Tensor | None:
        s = self.layout.scales[k]
        ids = sample_logits(self.head(d.guide(h[:, -s * s :])), d.sampler, d.rng)  # the head is linear: guide the hidden states (half the head's work)
        d.state["ids"].append(ids)
        d.state["f_hat"], nxt = self.tokenizer.next_scale_input(k, d.state["f_hat"], ids)
        return None if nxt is None else self.word_embed(nxt) + self.level_embed.weight[k + 1]

    def _sampled(self, d: Decode, k: int) -> Tokens:
        layout = self.layout if k == len(self.layout.scales) else ScalesLayout(self.layout.scales[:k])
        return Tokens(layout, ids=torch.cat(d.state["ids"], dim=1))


def _register() -> None:
    tiny = dict(dim=192, depth=6, heads=6)
    register_preset("var-tiny", VARGenerator, tags=("tiny",), transformer=dict(tiny), cond="text", text_vocab=shapes_text_vocab)
    register_preset("var-tiny-class", VARGenerator, tags=("tiny",), transformer=dict(tiny), cond="class", num_classes=10)
    # mmgen's own architecture at VAR's reference sizes (depth d, width 64*d, heads d, VAR's 4096-code VQVAE, 10 scales to 16x16)
    ref = dict(cond="class", num_classes=1000, vocab_size=4096, token_dim=32, image_size=256,
               layout={"type": "scales", "scales": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]})
    for d in (16, 20, 24):
        register_preset(f"var-mmgen-d{d}", VARGenerator, tags=("reference",), transformer=dict(dim=64 * d, depth=d, heads=d, mlp_ratio=4.0), **ref)
    # the published VAR-d16..d30 (FoundationVision/VAR): their weights load with `mmgen convert --family var`
    for d in (16, 20, 24, 30):
        register_preset(f"var-d{d}", VARGenerator, tags=("reference", "official"), transformer=var_official_transformer(d), **ref, **VAR_OFFICIAL)


VAR_OFFICIAL = dict(class_prefix=False, abs_pos_embed=True, head_bias=True, cond_dropout=0.1)


def var_official_transformer(depth: int, dim: int | None = None, heads: int | None = None, mlp_ratio: float = 4.0, norm_eps: float = 1e-6,
                             drop_path: float | None = None) -> dict:
    """VAR's block (``models/basic_var.py``): LayerNorm, tanh-GELU MLP, l2-normalised q/k, per-block AdaLN; no RoPE."""
    dim = dim or 64 * depth
    return dict(dim=dim, depth=depth, heads=heads or depth, mlp_ratio=mlp_ratio, mlp_hidden=round(dim * mlp_ratio), norm="layernorm", norm_eps=norm_eps,
                mlp="gelu-tanh", mlp_bias=True, qkv_bias="qv", proj_bias=True, qk_norm="l2", rope="none", adaln_dim=dim,
                drop_path=0.1 * depth / 24 if drop_path is None else drop_path)

_register()
