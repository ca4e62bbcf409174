"""Emu3-style unified model: one vocabulary, one causal transformer, tasks as sequence formats.

Vocabulary: the compact BPE text ids ``[0, T)``, then the visual codes ``[T, T + V)``, then six
special tokens: begin/end of image (BOI/EOI), of video (BOV/EOV), end of line (EOL) and end of
frame (EOF). A visual span writes every row of codes followed by EOL, a video also closes every
frame with EOF. Tasks are formats of one sequence (text is the fixed ``text_context`` segment
``[sot] words [eot] pad...``)::

    t2i  text  BOI (codes EOL)*h EOI                 caption -> image
    t2v  text  BOV ((codes EOL)*h EOF)*t EOV         caption -> video
    i2t  BOI (codes EOL)*h EOI  text                 image -> caption

Training is the plain next-token loss over the mixed sequences (pad targets skipped); captions
are dropped to the empty prompt with ``cond_dropout`` so classifier-free guidance has its
unconditional branch (a negative prompt simply replaces it). Decoding is constrained to the
layout: every special token is forced where the layout puts it and only visual codes may be
sampled inside a span, so every sample decodes; captions can be held to a word grammar
(:class:`mmgen.text.GrammarConstraint`). Positions are M-RoPE: text 1D, codes ``(t, y, x)``
offset by where their span starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mmgen.data.shapes_text import shapes_caption_grammar, shapes_text_vocab
from mmgen.models.base import Condition, Generator, GeneratorConfig, corrupt_context
from mmgen.models.decoding import Decode, decode, run_in_groups
from mmgen.models.nbp import check_clip_length
from mmgen.nn.masks import Causal
from mmgen.nn.transformer import Transformer
from mmgen.registry import register_preset
from mmgen.sampler import CATEGORICAL_FIELDS, DECODING_FIELDS, GUIDANCE_FIELDS, SamplerConfig, sample_logits
from mmgen.text import GrammarConstraint
from mmgen.tokens import FramesLayout, Tokens

__all__ = ["UnifiedConfig", "UnifiedGenerator", "TaskBatch", "SPECIALS", "TASKS"]

SPECIALS = ("boi", "eoi", "bov", "eov", "eol", "eof")
TASKS = ("t2i", "t2v", "i2t")
CODE, TEXT = -1, -2  # template placeholders


@dataclass
class UnifiedConfig(GeneratorConfig):
    layout: dict = field(default_factory=lambda: {"type": "frames", "t": 5, "h": 4, "w": 4})
    frames: int = 8  # clip length (pixels) the layout's t latent frames decode to
    text_context: int = 24
    # Teacher forcing of caption -> image on a corrupted context: a fraction ~ U(0, context_noise) of each image's input
    # codes are random (targets clean), so an object's codes must come from the caption, not from the codes before them
    # (the raster models' binding fix). Images only: a video frame is meant to follow the frames before it.
    context_noise: float = 0.0


@dataclass
class TaskBatch:
    """A mixed training batch: ``task -> (visual Tokens, text ids (B, text_context))``."""

    groups: dict[str, tuple[Tokens, torch.Tensor]]

    @property
    def batch_size(self) -> int:
        return sum(t.batch_size for t, _ in self.groups.values())


class UnifiedGenerator(Generator):
    config_class = UnifiedConfig
    sampler_fields = DECODING_FIELDS + GUIDANCE_FIELDS + CATEGORICAL_FIELDS
    embeds_condition = False  # text ids live in the one vocabulary below

    def __init__(self, config: UnifiedConfig) -> None:
        super().__init__(config)
        if self.config.cond != "text":
            raise ValueError(f"the unified model reads text in its own sequence: cond must be 'text', got {self.config.cond!r}")
        if not isinstance(self.layout, FramesLayout):
            raise ValueError(f"the unified model needs a frames layout (t, h, w) from a video tokenizer, got {self.layout}")
        if not 0.0 <= self.config.context_noise < 1.0:
            raise ValueError(f"context_noise is the largest fraction of corrupted input codes, in [0, 1); got {self.config.context_noise}")
        self.text = self.cond_embed.text_tokenizer
        self.code_offset = self.text.vocab_size
        self.special_offset = self.code_offset + self.config.vocab_size
        self.total_vocab = self.special_offset + len(SPECIALS)
        dim = self.config.transformer.dim
        self.embed = nn.Embedding(self.total_vocab, dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.transformer = Transformer(self.config.transformer)
        self.head = nn.Linear(dim, self.total_vocab, bias=False)
        nn.init.zeros_(self.head.weight)
        self._templates: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def bind_tokenizer(self, tokenizer) -> "UnifiedGenerator":
        super().bind_tokenizer(tokenizer)
        check_clip_length(self, tokenizer)
        return self

    def special(self, name: str) -> int:
        return self.special_offset + SPECIALS.index(name)

    # ----- sequence formats
    def _span(self, kind: str, k: int, origin: int) -> tuple[list[int], list[tuple[int, int, int]], int]:
        """Template ids and positions of a visual span of ``k`` latent frames; returns the next free position."""
        h, w = self.layout.h, self.layout.w
        o = origin + 1
        ids, pos = [self.special("boi" if kind == "image" else "bov")], [(origin,) * 3]
        for t in range(k):
            for y in range(h):
                ids += [CODE] * w + [self.special("eol")]
                pos += [(o + t, o + y, o + x) for x in range(w + 1)]
            if kind == "video":
                ids.append(self.special("eof"))
                pos.append((o + t, o + h, o))
        end = o + max(k, h + 1, w + 1)
        ids.append(self.special("eoi" if kind == "image" else "eov"))
        pos.append((end,) * 3)
        return ids, pos, end + 1

    def template(self, task: str, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids (S,), positions (S, 3))`` of a task's sequence; ``CODE``/``TEXT`` mark the slots to fill."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; allowed: {list(TASKS)}")
        if (task, k) not in self._templates:
            C, kind = self.config.text_context, "video" if task == "t2v" else "image"
            if task == "i2t":
                ids, pos, nxt = self._span(kind, k, 0)
                ids, pos = ids + [TEXT] * C, pos + [(nxt + i,) * 3 for i in range(C)]
            else:
                ids, pos, _ = self._span(kind, k, C)
                ids, pos = [TEXT] * C + ids, [(i,) * 3 for i in range(C)] + pos
            self._templates[(task, k)] = (torch.tensor(ids, device="cpu"), torch.tensor(pos, device="cpu").float())
        return self._templates[(task, k)]

    def build(self, task: str, codes: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill a task template: ``codes (B, k*h*w)`` visual ids, ``text (B, C)`` -> ``(ids (B, S), positions)``."""
        k = codes.shape[1] // self.layout.frame_tokens
        tmpl, pos = self.template(task, k)
        tmpl = tmpl.to(codes.device)
        ids = tmpl.expand(codes.shape[0], -1).clone()
        ids[:, tmpl == CODE] = codes + self.code_offset
        ids[:, tmpl == TEXT] = text.to(codes.device)
        return ids, pos

    # ----- training
    def prepare_batch(self, batch: dict) -> tuple[TaskBatch, Condition]:
        """``{pixels (B,3,T,H,W), caption, task?}`` -> per-task (tokens, text); no ``task``: videos are t2v, images t2i."""
        pixels = batch["pixels"].to(self.device)
        tasks = batch.get("task") or (["t2v"] * len(pixels) if pixels.ndim == 5 and pixels.shape[2] > 1 else ["t2i"] * len(pixels))
        text = self.make_condition(prompts=batch["caption"]).text
        groups = {}
        for task in TASKS:
            sel = [i for i, t in enumerate(tasks) if t == task]
            if not sel:
                continue
            px = pixels[sel]
            if task != "t2v" and px.ndim == 5:
                px = px[:, :, 0]  # an image task reads frame 0
            with torch.no_grad():
                groups[task] = (self.tokenizer.encode(px), text[sel])
        return TaskBatch(groups), Condition(len(tasks), text=text)

    def _as_batch(self, tokens: TaskBatch | Tokens, cond: Condition) -> TaskBatch:
        if isinstance(tokens, TaskBatch):
            return tokens
        if tokens.ids is None or not isinstance(tokens.layout, FramesLayout):
            raise ValueError(f"expected discrete video/image tokens, got {tokens.layout}")
        return TaskBatch({"t2v" if tokens.layout.t > 1 else "t2i": (tokens, cond.text)})

    def _run(self, ids: torch.Tensor, pos: torch.Tensor, cached: bool) -> torch.Tensor:
        x = self.embed(ids)
        if not cached:
            return self.transformer(x, pos, Causal())
        return run_in_groups(self.transformer, x, pos, Causal(), [1] * x.shape[1])

    def logits(self, tokens: TaskBatch | Tokens, cond: Condition, cached: bool = False) -> torch.Tensor:
        """Teacher-forced next-token logits of every group, flattened and concatenated ``(sum B*(S-1), V)``.

        ``cached=True`` feeds the sequences one token at a time through the KV cache (equivalence test).
        """
        out = []
        for task, (toks, text) in self._as_batch(tokens, cond).groups.items():
            ids, pos = self.build(task, toks.ids, text)
            out.append(self.head(self._run(ids[:, :-1], pos[:-1], cached)).flatten(0, 1))
        return torch.cat(out)

    def forward(self, tokens: TaskBatch | Tokens, cond: Condition) -> tuple[torch.Tensor, dict]:
        total, count, logs = 0.0, 0, {}
        for task, (toks, text) in self._as_batch(tokens, cond).groups.items():
            if self.training and task != "i2t":  # the empty caption: CFG's unconditional branch
                text = self.cond_embed.drop(Condition(len(text), text=text), self.config.cond_dropout).text
            ids, pos = self.build(task, toks.ids, text)
            text_slot = (self.template(task, toks.layout.t)[0][1:] == TEXT).to(ids.device)
            target = ids[:, 1:].masked_fill(text_slot & (ids[:, 1:] == self.text.pad), -100)  # no loss on padding
            inputs = ids
            if self.training and self.config.context_noise and task == "t2i":
                inputs = self.build(task, corrupt_context(toks.ids, self.config.context_noise, self.config.vocab_size), text)[0]
            logits = self.head(self._run(inputs[:, :-1], pos[:-1], False))
            ce = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=-100, reduction="sum")
            n = int((target != -100).sum())
            total, count = total + ce, count + n
            logs[f"ce_{task}"] = ce.detach() / max(n, 1)
        loss = total / max(count, 1)
        return loss, {"ce": loss.detach(), **logs}

    # ----- generation
    def forward_passes(self, latent_frames: int | None = None) -> int:
        """Sampled codes = forward passes (forced special tokens ride along with the next pass)."""
        return (self.layout.t if latent_frames is None else latent_frames) * self.layout.frame_tokens

    def decode_schedule(self, full: Condition, batch: int, sampler: SamplerConfig, latent_frames: int, task: str | None = None) -> Decode:
        """Caption -> video (``t2v``, default) or image (``t2i``, the default for one latent frame).

        One code per step; the special tokens the layout puts after a code (EOL, EOF, ...) are
        forced: they ride along with the next pass, so a step is one sampled code.
        """
        k = latent_frames
        task = task or ("t2i" if k == 1 else "t2v")
        if task not in ("t2i", "t2v") or (task == "t2i" and k != 1):
            raise ValueError(f"generate makes images (t2i, 1 latent frame) or videos (t2v); got task={task!r}, {k} latent frames")
        N = k * self.layout.frame_tokens
        ids, pos = self.build(task, torch.zeros(full.batch_size, N, dtype=torch.long, device=self.device), full.text)
        slots = (self.template(task, k)[0] == CODE).nonzero().flatten().tolist()
        state = {"ids": ids, "slots": slots, "codes": torch.zeros(batch, N, dtype=torch.long, device=self.device), "layout": self.layout.with_frames(k)}
        return Decode(self.transformer, self.embed(ids[:, : slots[0]]), pos, Causal(), N, self._code_step, self._sampled, batch, state=state)

    def _code_step(self, d: Decode, n: int, h: torch.Tensor) -> torch.Tensor | None:
        lo, ids, slots = self.code_offset, d.state["ids"], d.state["slots"]
        logits = self.head(h[:, -1])[:, lo : lo + self.config.vocab_size].float()  # only codes inside a span
        code = sample_logits(d.guide(logits), d.sampler, d.rng)
        d.state["codes"][:, n] = code
        ids[:, slots[n]] = d.double(code + lo)
        return None if n + 1 == d.steps else self.embed(ids[: d.batch, slots[n] : slots[n + 1]])

    def _sampled(self, d: Decode, n: int) -> Tokens:
        return Tokens(d.state["layout"], ids=d.state["codes"].clone())

    @torch.no_grad()
    def caption(self, images: Tokens, sampler: SamplerConfig | None = None, constraint: GrammarConstraint | None | bool = True) -> list[str]:
        """Image tokens (one latent frame) -> captions; greedy by default (the same decode loop, one text token per step).

        Args:
            constraint: a :class:`GrammarConstraint`; ``True`` = the ``shapes`` caption grammar; ``False``/None = any text.
        """
        sampler = self.check_sampler(sampler or SamplerConfig(top_k=1), DECODING_FIELDS + CATEGORICAL_FIELDS)
        if images.ids is None or images.layout != self.layout.with_frames(1):
            raise ValueError(f"caption needs the tokens of one image ({self.layout.with_frames(1)}), got {images.layout}")
        if constraint is True:
            constraint = GrammarConstraint(self.text, shapes_caption_grammar(2))
        C, B, tt = self.config.text_context, images.batch_size, self.text
        if constraint and constraint.max_tokens() + 2 > C:
            raise ValueError(f"the grammar's captions need {constraint.max_tokens() + 2} text positions, the model has {C}")
        text = torch.full((B, C), tt.pad, dtype=torch.long, device=self.device)
        text[:, 0] = tt.sot
        ids, pos = self.build("i2t", images.ids.to(self.device), text)
        s0 = ids.shape[1] - C  # the sot slot
        state = {"ids": ids, "s0": s0, "constraint": constraint, "states": [constraint.start() if constraint else None for _ in range(B)],
                 "ended": torch.zeros(B, dtype=torch.bool, device=self.device)}
        d = Decode(self.transformer, self.embed(ids[:, : s0 + 1]), pos, Causal(), C - 1, self._text_step, self._captions, B, state=state)
        return decode(d, sampler)

    def _text_step(self, d: Decode, k: int, h: torch.Tensor) -> torch.Tensor | None:
        """Text token ``j = k + 1`` of the caption: held to the grammar per row; padding after the end."""
        tt, st = self.text, d.state
        ids, s0, constraint, states, ended = st["ids"], st["s0"], st["constraint"], st["states"], st["ended"]
        j, C = k + 1, self.config.text_context
        logits = self.head(h[:, -1])[:, : tt.vocab_size].float()  # only text after the image
        allow = torch.zeros_like(logits, dtype=torch.bool)
        for b, state in enumerate(states):
            if state is None:
                allow[b, tt.sot + 1 :] = True
                allow[b, tt.pad] = False
            elif state[0] != "end":
                allow[b, constraint.allowed(state)] = True
        allow[ended] = True  # finished rows: whatever, replaced by pad below
        nxt = sample_logits(logits.masked_fill(~allow, float("-inf")), d.sampler, d.rng)
        nxt = torch.where(ended, torch.full_like(nxt, tt.pad), nxt)
        if j == C - 1:
            nxt = torch.where(ended, nxt, torch.full_like(nxt, tt.eot))  # context full: close the caption
        for b in range(len(states)):
            if not ended[b] and states[b] is not None and j < C - 1:
                states[b] = constraint.step(states[b], int(nxt[b]))
        ended |= nxt == tt.eot
        ids[:, s0 + j] = nxt
        return None if bool(ended.all()) or j == C - 1 else self.embed(ids[:, s0 + j : s0 + j + 1])

    def _captions(self, d: Decode, k: int) -> list[str]:
        return [self.text.decode(row) for row in d.state["ids"][:, d.state["s0"] :].tolist()]


def _register() -> None:
    register_preset("emu3-tiny", UnifiedGenerator, tags=("tiny",), cond="text", text_vocab=shapes_text_vocab, text_context=24,
                    transformer=dict(dim=192, depth=6, heads=6))


_register()
