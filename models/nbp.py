"""Next-block prediction (NBP, Ren et al. 2025): semi-autoregressive video generation.

The ``(t, h, w)`` video tokens are cut into equal blocks of ``bt x bh x bw`` tokens (``block``:
``token`` = 1x1x1, ``row`` = 1x1xw, ``frame`` = 1xhxw, or ``"TxHxW"``), ordered block by block.
Attention is bidirectional inside a block and causal across blocks (``BlockCausal``); every
token of block ``k`` predicts its counterpart (same place in the block) of block ``k+1``, and a
block of learned queries after the condition prefix predicts block 0. Sampling emits one whole
block per forward pass through the KV cache: ``K`` passes instead of ``N`` tokens. ``block=token``
is plain next-token prediction on the same backbone (the token-by-token baseline).

Tokens of one block are sampled independently. After the first frame the clip is (nearly) a
function of what came before, but the first frame itself (where is the object, how big) is not,
and independent sampling of its tokens can draw parts of different objects. ``first_frame=tokens``
therefore generates latent frame 0 (an image, under a causal tokenizer) token by token, then the
queries predict the first block of frame 1 and the rest goes block by block:
``h*w + K - K_0`` passes (``K_0`` blocks per frame).

Positions are M-RoPE ``(P + t, P + y, P + x)`` (prefix 1D); a query sits one block-time earlier
than the token it predicts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from mmgen.data.shapes_text import shapes_text_vocab
from mmgen.models.base import Condition, Generator, GeneratorConfig
from mmgen.models.decoding import Decode, run_in_groups
from mmgen.nn.losses import head_cross_entropy
from mmgen.nn.masks import BlockCausal
from mmgen.nn.transformer import Transformer
from mmgen.registry import register_preset
from mmgen.sampler import CATEGORICAL_FIELDS, DECODING_FIELDS, GUIDANCE_FIELDS, SamplerConfig, sample_logits
from mmgen.tokens import FramesLayout, Tokens

__all__ = ["NBPConfig", "NBPGenerator", "parse_block", "block_order", "frame_positions", "check_clip_length"]

_NAMED = ("token", "row", "frame")


@dataclass
class NBPConfig(GeneratorConfig):
    layout: dict = field(default_factory=lambda: {"type": "frames", "t": 5, "h": 4, "w": 4})
    frames: int = 8  # clip length (pixels) the layout's t latent frames decode to
    text_context: int = 10
    block: str = "frame"  # token | row | frame | "TxHxW" (each must divide the layout's t, h, w)
    first_frame: Literal["blocks", "tokens"] = "blocks"  # tokens: latent frame 0 token by token (see module doc)


def parse_block(block: str, layout: FramesLayout) -> tuple[int, int, int]:
    """``"row"`` -> ``(1, 1, w)`` etc.; ``"1x2x4"`` -> ``(1, 2, 4)``; checked to tile the layout."""
    named = {"token": (1, 1, 1), "row": (1, 1, layout.w), "frame": (1, layout.h, layout.w)}
    if block in named:
        return named[block]
    try:
        bt, bh, bw = (int(v) for v in block.lower().split("x"))
    except ValueError:
        raise ValueError(f"block={block!r}: use one of {list(_NAMED)} or 'TxHxW' (e.g. '1x2x4')") from None
    if min(bt, bh, bw) < 1 or layout.t % bt or layout.h % bh or layout.w % bw:
        raise ValueError(f"block {bt}x{bh}x{bw} must tile the token layout {layout.t}x{layout.h}x{layout.w}")
    return bt, bh, bw


def block_order(layout: FramesLayout, block: tuple[int, int, int]) -> torch.Tensor:
    """Permutation ``perm (N,)`` with ``ids[:, perm]`` in block order (blocks raster over (t,h,w), raster inside)."""
    bt, bh, bw = block
    idx = torch.arange(layout.num_tokens, device="cpu").reshape(layout.t // bt, bt, layout.h // bh, bh, layout.w // bw, bw)
    return idx.permute(0, 2, 4, 1, 3, 5).reshape(-1)


def check_clip_length(gen: Generator, tokenizer) -> None:
    """The generator's ``frames`` must be what the tokenizer turns into the layout's latent frames."""
    latent = getattr(tokenizer, "latent_frames", None)
    if latent is None:
        raise ValueError(f"{type(gen).__name__} generates video: bind a video tokenizer (e.g. video-vq3d-tiny), got {type(tokenizer).__name__}")
    if latent(gen.config.frames) != gen.layout.t:
        raise ValueError(f"frames={gen.config.frames} become {latent(gen.config.frames)} latent frames with this tokenizer, "
                         f"but the layout has t={gen.layout.t}; set the generator's frames to the tokenizer's ({tokenizer.config.frames})")


def frame_positions(prefix: int, layout: FramesLayout) -> torch.Tensor:
    """``(N, 3)`` M-RoPE coordinates ``(P + t, P + y, P + x)`` of the video tokens in ``(t, h, w)`` order."""
    t, y, x = torch.meshgrid(*(torch.arange(n, device="cpu") for n in (layout.t, layout.h, layout.w)), indexing="ij")
    return (torch.stack([t, y, x], -1).reshape(-1, 3) + prefix).float()


class NBPGenerator(Generator):
    config_class = NBPConfig
    sampler_fields = DECODING_FIELDS + GUIDANCE_FIELDS + CATEGORICAL_FIELDS

    def __init__(self, config: NBPConfig) -> None:
        super().__init__(config)
        lay = self.layout
        if not isinstance(lay, FramesLayout):
            raise ValueError(f"NBP generates video: it needs a frames layout (t, h, w), got {lay}")
        if self.config.first_frame not in ("blocks", "tokens"):
            raise ValueError(f"first_frame={self.config.first_frame!r}; allowed: 'blocks', 'tokens'")
        self.block = parse_block(self.config.block, lay)
        bt, bh, bw = self.block
        self.L = bt * bh * bw  # tokens per block
        self.K = lay.num_tokens // self.L
        self.token_first = self.config.first_frame == "tokens" and self.L > 1
        if self.token_first and bt != 1:
            raise ValueError(f"first_frame=tokens needs blocks inside one frame (1xHxW), got {self.config.block}")
        self.K0 = lay.frame_tokens // self.L if self.token_first else 0  # blocks of frame 0 emitted token by token
        dim = self.config.transformer.dim
        self.tok_embed = nn.Embedding(self.config.vocab_size, dim)
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        self.queries = nn.Parameter(torch.randn(self.L, dim) * 0.02)  # one learned query per place in a block
        self.transformer = Transformer(self.config.transformer)
        self.head = nn.Linear(dim, self.config.vocab_size, bias=False)
        nn.init.zeros_(self.head.weight)
        P, L = self.prefix_len, self.L
        perm = block_order(lay, self.block)
        self.register_buffer("perm", perm, persistent=False)
        tok_pos = frame_positions(P, lay)[perm]  # block order
        first = self.K0 * L  # tokens before the queries
        q_pos = tok_pos[first : first + L] - torch.tensor([float(bt), 0.0, 0.0], device="cpu")
        prefix_pos = torch.arange(P, device="cpu")[:, None].expand(P, 3).float()
        seq = [prefix_pos, tok_pos[:first], q_pos, tok_pos[first : lay.num_tokens - L]]
        self.register_buffer("positions", torch.cat(seq), persistent=False)

    def bind_tokenizer(self, tokenizer) -> "NBPGenerator":
        super().bind_tokenizer(tokenizer)
        check_clip_length(self, tokenizer)
        return self

    def block_sizes(self) -> tuple[int, ...]:
        """Sizes of the attention blocks after the prefix (the mask is ``BlockCausal(sizes, prefix=P)``)."""
        return (1,) * (self.K0 * self.L) + (self.L,) * (self.K - self.K0)

    def _mask(self) -> BlockCausal:
        return BlockCausal(self.block_sizes(), prefix=self.prefix_len)

    def forward_passes(self, latent_frames: int | None = None) -> int:
        """Forward passes to sample ``latent_frames`` (default: all) latent frames."""
        K = self._blocks_for(latent_frames)
        return self.K0 * self.L + K - self.K0 if self.token_first else K

    def _blocks_for(self, latent_frames: int | None) -> int:
        lay, bt = self.layout, self.block[0]
        t = lay.t if latent_frames is None else latent_frames
        if not 1 <= t <= lay.t or t % bt:
            raise ValueError(f"this model generates 1..{lay.t} latent frames in steps of {bt}; got {t}")
        return t * lay.frame_tokens // self.L

    # ----- teacher forcing
    def _inputs(self, ids_b: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """The training sequence: prefix, [frame-0 tokens], queries, blocks (block order ids)."""
        B, first, L = ids_b.shape[0], self.K0 * self.L, self.L
        emb = self.tok_embed(ids_b)
        q = self.queries.expand(B, -1, -1)
        return torch.cat([prefix, emb[:, :first], q, emb[:, first : ids_b.shape[1] - L]], dim=1)

    def _outputs(self, h: torch.Tensor) -> torch.Tensor:
        """Select the slots that predict tokens 0..N-1 (block order) from the transformer output."""
        P, first = self.prefix_len, self.K0 * self.L
        if not first:
            return h[:, P:]
        return torch.cat([h[:, P - 1 : P + first - 1], h[:, P + first :]], dim=1)

    def logits(self, tokens: Tokens, cond: Condition, cached: bool = False) -> torch.Tensor:
        """Teacher-forced logits ``(B, N, V)`` in block order (row ``n`` predicts ``ids[:, perm[n]]``).

        ``cached=True`` runs the same sequence one block (or frame-0 token) at a time through the KV
        cache, exactly as sampling does (a test of cache equivalence).
        """
        return self.head(self._hidden(tokens, cond, cached))

    def _hidden(self, tokens: Tokens, cond: Condition, cached: bool = False) -> torch.Tensor:
        """The final hidden states the head reads in ``logits`` (the training loss runs the head chunked)."""
        if tokens.ids is None or tokens.layout != self.layout:
            raise ValueError(f"expected discrete tokens with layout {self.layout}, got {tokens.layout}")
        prefix, _ = self.cond_embed(cond)
        x = self._inputs(tokens.ids[:, self.perm], prefix)
        if not cached:
            return self._outputs(self.transformer(x, self.positions, self._mask()))
        return self._outputs(run_in_groups(self.transformer, x, self.positions, self._mask(), (self.prefix_len, *self.block_sizes())))

    def forward(self, tokens: Tokens, cond: Condition) -> tuple[torch.Tensor, dict]:
        cond = self.training_condition(cond)
        loss, per = head_cross_entropy(self._hidden(tokens, cond), self.head, tokens.ids[:, self.perm])
        f = self.layout.frame_tokens  # first latent frame vs the rest: where a video model struggles
        first = per[:, self.perm < f].mean()
        return loss, {"ce": loss.detach(), "ce_frame0": first, "ce_rest": per[:, self.perm >= f].mean() if self.layout.t > 1 else first}

    # ----- sampling
    def decode_schedule(self, full: Condition, batch: int, sampler: SamplerConfig, latent_frames: int) -> Decode:
        """One block per step (frame 0 token by token with ``first_frame=tokens``); the queries predict block 0."""
        K, L = self._blocks_for(latent_frames), self.L
        prefix, _ = self.cond_embed(full)
        first = prefix if self.K0 else torch.cat([prefix, self.queries.expand(full.batch_size, -1, -1)], 1)
        state = {"ids": torch.zeros(batch, self.layout.num_tokens, dtype=torch.long, device=self.device), "done": 0, "N": K * L,
                 "layout": self.layout.with_frames(K * L // self.layout.frame_tokens)}
        return Decode(self.transformer, first, self.positions, self._mask(), self.forward_passes(latent_frames), self._block_step,
                      self._sampled, batch, state=state)

    def _block_step(self, d: Decode, k: int, h: torch.Tensor) -> torch.Tensor | None:
        done, first = d.state["done"], self.K0 * self.L
        n_new = 1 if done < first else self.L
        new = sample_logits(d.guide(self.head(h[:, -n_new:]).float()), d.sampler, d.rng)
        d.state["ids"][:, done : done + n_new] = new
        d.state["done"] = done = done + n_new
        if done >= d.state["N"]:
            return None
        x = self.tok_embed(new)
        if done == first:  # frame 0 is complete: its last token and the queries go in together
            x = torch.cat([x, self.queries.expand(d.batch, -1, -1)], 1)
        return x

    def _sampled(self, d: Decode, k: int) -> Tokens:
        layout = d.state["layout"]
        return Tokens(layout, ids=self._natural(d.state["ids"])[:, : layout.num_tokens])

    def _natural(self, ids_b: torch.Tensor) -> torch.Tensor:
        """Block order -> ``(t, h, w)`` order."""
        out = torch.empty_like(ids_b)
        out[:, self.perm] = ids_b
        return out


_TINY = dict(dim=192, depth=6, heads=6)


def _register() -> None:
    text = dict(cond="text", text_vocab=shapes_text_vocab, text_context=10, transformer=dict(_TINY))
    register_preset("nbp-tiny", NBPGenerator, tags=("tiny",), block="frame", **text)
    register_preset("video-raster-tiny", NBPGenerator, tags=("tiny",), block="token", **text)
    # Reference sizes of the paper's released configs (UCF-101: class-conditional, 17 frames at 128 px through
    # MAGVIT-v2 (4x time, 8x space: 5x16x16 tokens, 64k codes), blocks of one 16-token row).
    ref = dict(cond="class", num_classes=101, vocab_size=64000, image_size=128, layout={"type": "frames", "t": 5, "h": 16, "w": 16}, block="row")
    for name, (d, depth, heads) in {"nbp-700m": (1536, 24, 16), "nbp-1.2b": (2048, 24, 32), "nbp-3b": (3072, 32, 32)}.items():
        register_preset(name, NBPGenerator, tags=("reference",), transformer=dict(dim=d, depth=depth, heads=heads), **ref)


_register()
