"""Offline BPE text tokenizer (open_clip's, whose vocabulary ships inside the package).

Captions become ``[sot] + bpe + [eot]`` padded to the model's text context. A prompt longer than
the context is an error, never silently truncated. A model trained on a closed-domain world may use
a *compact vocabulary*: the subset of BPE ids it was trained on, remapped to ``0..V-1``, so a
tiny model does not carry a 49k-row embedding table; a word outside it is a clear error.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Sequence

import torch

__all__ = ["TextTokenizer", "bpe", "compact_vocab", "shapes_text_vocab"]

PAD, SOT, EOT = 0, 1, 2  # compact ids of the special tokens
_N_SPECIAL = 3


@lru_cache(maxsize=1)
def bpe():
    """The shared open_clip ``SimpleTokenizer`` (loads its bundled vocabulary once)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def compact_vocab(texts: Iterable[str]) -> list[int]:
    """Sorted BPE ids occurring in ``texts`` (e.g. every word of a world's caption grammar)."""
    ids: set[int] = set()
    for t in texts:
        ids.update(bpe().encode(t))
    return sorted(ids)


def shapes_text_vocab() -> list[int]:
    """Compact vocabulary of the ``shapes`` worlds' caption grammar (image and video)."""
    from mmgen.data import shapes

    words = list(shapes.vocabulary()) + ["moving", "left", "right", "up", "down", "handwritten", "digit"]
    words += [str(d) for d in range(10)]
    return compact_vocab(words)


class TextTokenizer:
    """Callable: ``list[str] -> LongTensor (B, context_len)``.

    Args:
        context_len: number of text positions the model has (sot and eot included).
        vocab: compact BPE subset; empty/None means the full open_clip vocabulary.
    """

    def __init__(self, context_len: int, vocab: Sequence[int] | None = None) -> None:
        if context_len < 2:
            raise ValueError(f"context_len must be >= 2 (sot + eot), got {context_len}")
        self.context_len = context_len
        self.vocab = list(vocab or [])
        tok = bpe()
        if self.vocab:
            self._remap = {b: i + _N_SPECIAL for i, b in enumerate(self.vocab)}
            self.pad, self.sot, self.eot = PAD, SOT, EOT
        else:
            self._remap = None
            self.pad, self.sot, self.eot = 0, tok.encoder["<start_of_text>"], tok.encoder["<end_of_text>"]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + _N_SPECIAL if self.vocab else len(bpe().encoder)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"a prompt must be a string, got {type(text).__name__}")
        ids = bpe().encode(text)
        if self._remap is not None:
            unknown = [i for i in ids if i not in self._remap]
            if unknown:
                words = sorted({bpe().decode([i]).strip() for i in unknown})
                raise ValueError(f"prompt {text!r} uses words outside this model's text vocabulary: {words}")
            ids = [self._remap[i] for i in ids]
        ids = [self.sot, *ids, self.eot]
        if len(ids) > self.context_len:
            raise ValueError(
                f"prompt {text!r} is {len(ids)} tokens long (with start/end), but the model's text context "
                f"holds {self.context_len}; shorten the prompt"
            )
        return ids + [self.pad] * (self.context_len - len(ids))

    def __call__(self, texts: Sequence[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        return torch.tensor([self.encode(t) for t in texts], dtype=torch.long)
