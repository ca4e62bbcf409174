"""Offline BPE text tokenizer (open_clip's, whose vocabulary ships inside the package).

Knows no world: a world's vocabulary and caption grammar live with the world
(:mod:`mmgen.data.shapes_text` for the shapes worlds).

Captions become ``[sot] + bpe + [eot]`` padded to the model's text context (``decode`` inverts it). A prompt longer than
the context is an error, never silently truncated. A model trained on a closed-domain world may use
a *compact vocabulary*: the subset of BPE ids it was trained on, remapped to ``0..V-1``, so a
tiny model does not carry a 49k-row embedding table; a word outside it is a clear error.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Sequence

import torch

__all__ = ["TextTokenizer", "short_text", "bpe", "compact_vocab", "WordGrammar", "GrammarConstraint"]

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


def short_text(text: str, limit: int = 80) -> str:
    """``text`` as is, or its start and its length when it is long (error messages never repeat a 10k-char prompt)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


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
                raise ValueError(f"prompt {short_text(text)!r} uses words outside this model's text vocabulary: {words}")
            ids = [self._remap[i] for i in ids]
        ids = [self.sot, *ids, self.eot]
        if len(ids) > self.context_len:
            raise ValueError(
                f"prompt {short_text(text)!r} is {len(ids)} tokens long (with start/end), but the model's text context "
                f"holds {self.context_len}; shorten the prompt"
            )
        return ids + [self.pad] * (self.context_len - len(ids))

    def __call__(self, texts: Sequence[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        return torch.tensor([self.encode(t) for t in texts], dtype=torch.long)

    def bpe_ids(self, word: str) -> list[int]:
        """This tokenizer's ids of one word (no start/end token)."""
        return self.encode(word)[1 : len(bpe().encode(word)) + 1]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Ids -> text: stops at the end token, drops start/pad tokens."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        out: list[int] = []
        for i in ids:
            if i == self.eot:
                break
            if i in (self.sot, self.pad):
                continue
            if self._remap is not None:
                if not _N_SPECIAL <= i < self.vocab_size:
                    raise ValueError(f"id {i} is not a word of this {self.vocab_size}-id text vocabulary")
                i = self.vocab[i - _N_SPECIAL]
            out.append(int(i))
        return " ".join(bpe().decode(out).split())


# ---------------------------------------------------------------- constrained decoding
WordGrammar = dict  # state -> list of (word, next state); states named "accept*" may end the text


class GrammarConstraint:
    """Which token ids may come next, from a word-level finite-state grammar.

    Words become their BPE ids (``cyan`` is two tokens), so a decoder that only ever picks allowed
    ids writes a sentence of the grammar; the end token is allowed only in accepting states.

    Args:
        tokenizer: the model's text tokenizer.
        grammar: ``{state: [(word, next_state), ...]}``; the start state is ``"start"``, states whose
            name starts with ``"accept"`` may end the text.
    """

    def __init__(self, tokenizer: TextTokenizer, grammar: WordGrammar) -> None:
        self.tokenizer, self.grammar = tokenizer, grammar
        self.words = {w: tuple(tokenizer.bpe_ids(w)) for arcs in grammar.values() for w, _ in arcs}
        for state, arcs in grammar.items():
            for w, nxt in arcs:
                if nxt not in grammar and not nxt.startswith("accept"):
                    raise ValueError(f"grammar state {state!r}: word {w!r} leads to unknown state {nxt!r}")
                clash = [v for v, _ in arcs if v != w and self.words[v][: len(self.words[w])] == self.words[w]]
                if clash:
                    raise ValueError(f"grammar state {state!r}: the tokens of {w!r} begin {clash}; decoding would be ambiguous")

    def start(self) -> tuple[str, tuple[int, ...]]:
        """Decoder state: (grammar state, ids of the word being written)."""
        return ("start", ())

    def allowed(self, state: tuple[str, tuple[int, ...]]) -> list[int]:
        name, partial = state
        out = {self.words[w][len(partial)] for w, _ in self.grammar.get(name, []) if self.words[w][: len(partial)] == partial}
        if not partial and name.startswith("accept"):
            out.add(self.tokenizer.eot)
        return sorted(out)

    def step(self, state: tuple[str, tuple[int, ...]], token: int) -> tuple[str, tuple[int, ...]]:
        """Advance by one id; raises ValueError for an id the grammar does not allow here."""
        name, partial = state
        if token not in self.allowed(state):
            raise ValueError(f"token {token} is not allowed after {self.tokenizer.decode(list(partial)) or name!r}")
        if token == self.tokenizer.eot:
            return ("end", ())
        partial = partial + (token,)
        for w, nxt in self.grammar.get(name, []):
            if self.words[w] == partial:
                return (nxt, ())
        return (name, partial)

    def max_tokens(self) -> int:
        """Longest sentence in ids (the grammar must be acyclic)."""
        memo: dict[str, int] = {}

        def longest(state: str, depth: int = 0) -> int:
            if depth > 64:
                raise ValueError("grammar has a cycle: captions could be endless")
            if state not in memo:
                memo[state] = max([len(self.words[w]) + longest(n, depth + 1) for w, n in self.grammar.get(state, [])], default=0)
            return memo[state]

        return longest("start")
