"""The words a model understands, in view: prompt chips, example prompts, grammar errors, class names.

The shapes worlds' vocabulary is read from their caption grammars (``mmgen.text``'s names, which
follow the grammars wherever they live), so the chips, the examples and the error messages can
never disagree with what the models were trained on. No gradio here: unit-tested directly.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from mmgen.app.models import InputError, ModelInfo

__all__ = ["image_words", "video_words", "check_prompt", "example_prompts", "video_example_prompts", "thumbnail", "class_names",
           "video_prompt_for", "IMAGE_PATTERN", "VIDEO_PATTERN"]

IMAGE_PATTERN = "a SIZE COLOUR SHAPE at the POSITION (optionally: and a SIZE COLOUR SHAPE at the POSITION)"
VIDEO_PATTERN = "a COLOUR SHAPE moving DIRECTION"
_SLOT = {"size": "size", "color": "colour", "shape": "shape", "pos": "position", "dir": "direction", "at": "'at'", "the": "'the'",
         "start": "'a'", "moving": "'moving'", "accept_side": "side (or the end)", "accept_one": "'and' (or the end)"}


def _grammar(video: bool) -> dict:
    from mmgen.data.shapes_text import shapes_caption_grammar, video_caption_grammar

    return video_caption_grammar() if video else shapes_caption_grammar(2)


def _words(grammar: dict, state: str) -> list[str]:
    return [w for w, _ in grammar[state]]


@lru_cache(maxsize=1)
def image_words() -> dict[str, list[str]]:
    """Slot -> allowed words of the image grammar (positions spelled out: 'top left', 'center', ...)."""
    g = _grammar(False)
    sides = [w for w in _words(g, "accept_side") if w != "and"]
    pos = {w: nxt for w, nxt in g["pos"]}
    rows = [w for w, nxt in pos.items() if nxt == "accept_side"]  # top, bottom: alone or with a side
    middle = [w for w in pos if w not in rows]
    grid = [f"{rows[0]} {sides[0]}", rows[0], f"{rows[0]} {sides[1]}", *middle, f"{rows[1]} {sides[0]}", rows[1], f"{rows[1]} {sides[1]}"]
    return {"size": _words(g, "size"), "colour": _words(g, "color"), "shape": _words(g, "shape"), "position": grid}


@lru_cache(maxsize=1)
def video_words() -> dict[str, list[str]]:
    """Slot -> allowed words of the video grammar."""
    g = _grammar(True)
    return {"colour": _words(g, "color"), "shape": _words(g, "shape"), "direction": _words(g, "dir")}


def _slot(state: str) -> str:
    return _SLOT.get(state.rstrip("0123456789"), state)


def _walk(text: str, grammar: dict) -> str | None:
    """None if ``text`` is a sentence of ``grammar``, else why not, naming the allowed words."""
    state, said = "start", []
    for word in text.lower().split():
        arcs = dict(grammar.get(state, []))
        if word not in arcs:
            allowed = ", ".join(dict.fromkeys(arcs)) or "nothing (the prompt is complete)"
            where = f"after '{' '.join(said)}'" if said else "at the start"
            what = _slot(state) if arcs else "end"
            return f"'{word}' does not fit {where}; the {what} can be: {allowed}" if arcs else f"'{word}' comes after a complete prompt; remove it"
        said.append(word)
        state = arcs[word]
    if not state.startswith("accept"):
        return f"the prompt stops early: after '{' '.join(said)}' comes the {_slot(state)}: {', '.join(dict.fromkeys(_words(grammar, state)))}"
    return None


def check_prompt(text: str, video: bool) -> None:
    """InputError unless ``text`` follows the shapes grammar (image) or the motion grammar (video)."""
    problem = _walk(text, _grammar(video))
    if problem is None:
        return
    if video and _walk(text, _grammar(False)) is None:
        raise InputError(f"this is an image prompt; a video prompt says how the object moves: '{VIDEO_PATTERN}', "
                         f"with DIRECTION one of {', '.join(video_words()['direction'])} (e.g. 'a red circle moving right')")
    pattern = VIDEO_PATTERN if video else IMAGE_PATTERN
    raise InputError(f"{problem}. Prompts read '{pattern}'")


def video_prompt_for(prompt: str, direction: str) -> str:
    """The arena's video prompt: a video prompt as it is, else the image prompt's first object (colour and shape) moving ``direction``."""
    if _walk(prompt, _grammar(True)) is None:
        return " ".join(prompt.split())
    words = video_words()
    if direction not in words["direction"]:
        raise InputError(f"the motion must be one of {', '.join(words['direction'])}, got {direction!r}")
    said = prompt.lower().split()
    colour = next((w for w in said if w in words["colour"]), None)
    shape = next((w for w in said if w in words["shape"]), None)
    if colour is None or shape is None:
        raise InputError(f"the prompt needs a colour ({', '.join(words['colour'])}) and a shape ({', '.join(words['shape'])}) for the video models")
    return f"a {colour} {shape} moving {direction}"


def example_prompts(n_one: int = 4, n_two: int = 2, seed: int = 7) -> list[str]:
    """Example prompts from the ``shapes`` caption grammar (one- and two-object scenes)."""
    from mmgen.eval.generation import shapes_prompts

    return shapes_prompts(n_one, 1, seed) + shapes_prompts(n_two, 2, seed)


def video_example_prompts(n: int = 4, seed: int = 7) -> list[str]:
    """Examples in the motion grammar ('a red circle moving right')."""
    words, rng = video_words(), np.random.default_rng(seed)
    return [f"a {rng.choice(words['colour'])} {rng.choice(words['shape'])} moving {rng.choice(words['direction'])}" for _ in range(n)]


def thumbnail(prompt: str, size: int = 48) -> np.ndarray:
    """What the prompt asks for, drawn by the shapes world itself (uint8 HWC); a video prompt shows its object at the center."""
    from mmgen.data import shapes

    if _walk(prompt, _grammar(False)) is None:
        objects = shapes.parse_caption(prompt)
    else:
        _, colour, shape, _, _ = prompt.lower().split()
        objects = [shapes.ShapeObject(colour, shape, "large", "center")]
    return shapes.render(objects, size=size)


def class_names(info: ModelInfo) -> list[str]:
    """What each class label means: digits, the shapes world's colour x shape, ImageNet's 1000 names, else the number."""
    n = info.num_classes
    if n == 10:
        return [f"digit {i}" for i in range(10)]
    if n == 1000:
        return _imagenet_names()
    words = image_words()
    if n == len(words["colour"]) * len(words["shape"]):
        return [f"{c} {s}" for c in words["colour"] for s in words["shape"]]
    return [str(i) for i in range(n)]


@lru_cache(maxsize=1)
def _imagenet_names() -> list[str]:
    """The 1000 ImageNet class names, offline: torchvision carries them in its weights' metadata."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
