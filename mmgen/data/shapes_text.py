"""The shapes worlds' words: the compact text vocabulary and the caption grammars (image and video).

They belong to the world that defines the captions (:mod:`mmgen.data.shapes`,
:mod:`mmgen.data.video`); :mod:`mmgen.text` only knows how to tokenize and constrain text.
"""
from __future__ import annotations

from mmgen.data import shapes
from mmgen.data.video import DIRECTIONS
from mmgen.text import WordGrammar, compact_vocab

__all__ = ["shapes_text_vocab", "shapes_caption_grammar", "video_caption_grammar"]


def shapes_text_vocab() -> list[int]:
    """Compact vocabulary of the ``shapes`` worlds' caption grammar (image and video)."""
    words = list(shapes.vocabulary()) + ["moving", "left", "right", "up", "down", "handwritten", "digit"]
    words += [str(d) for d in range(10)]
    return compact_vocab(words)


def _object_grammar(tag: str, end: str, more: str | None) -> WordGrammar:
    """``a SIZE COLOUR SHAPE at the POSITION`` from state ``start{tag}`` to ``end`` (optionally ``and`` -> ``more``)."""
    s = lambda name: f"{name}{tag}"  # noqa: E731
    g: WordGrammar = {
        s("start"): [("a", s("size"))],
        s("size"): [(w, s("color")) for w in shapes.SIZES],
        s("color"): [(w, s("shape")) for w in shapes.COLORS],
        s("shape"): [(w, s("at")) for w in shapes.SHAPES],
        s("at"): [("at", s("the"))],
        s("the"): [("the", s("pos"))],
        s("pos"): [("top", s("accept_side")), ("bottom", s("accept_side")), ("left", end), ("center", end), ("right", end)],
        s("accept_side"): [("left", end), ("right", end)],
    }
    if more is not None:
        g[s("accept_side")].append(("and", more))
    return g


def shapes_caption_grammar(max_objects: int = 2) -> WordGrammar:
    """The ``shapes`` caption grammar with 1..``max_objects`` (1 or 2) objects."""
    if max_objects not in (1, 2):
        raise ValueError(f"max_objects must be 1 or 2, got {max_objects}")
    if max_objects == 1:
        g = _object_grammar("", "accept", None)
        g["accept"] = []
        return g
    g = _object_grammar("", "accept_one", None)
    g["accept_one"] = [("and", "start2")]
    g["accept_side"].append(("and", "start2"))
    g.update(_object_grammar("2", "accept_two", None))
    g["accept_two"] = []
    return g


def video_caption_grammar() -> WordGrammar:
    """``a COLOUR SHAPE moving DIRECTION`` (the ``shapes-video`` captions)."""
    return {"start": [("a", "color")], "color": [(w, "shape") for w in shapes.COLORS], "shape": [(w, "moving") for w in shapes.SHAPES],
            "moving": [("moving", "dir")], "dir": [(w, "accept") for w in DIRECTIONS], "accept": []}
