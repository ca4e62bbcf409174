"""The arena: one prompt (or class label) and one seed, every selected model side by side, judged.

Each model runs at its own recommended sampler settings (its ``sampler.json``), one sample, one
after the other, so the tiles compare paradigms, not tuning. Text-to-image models get the prompt,
video models the prompt's first object moving the chosen way, class-conditional models the class
label. A shapes-world result is scored by the compositional judge (per object: colour, shape,
size, position; per clip: colour, shape, direction). No gradio here: unit-tested directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from mmgen.app import grammar
from mmgen.app import handlers as H
from mmgen.app.models import InputError, ModelInfo, ModelRegistry

__all__ = ["Tile", "ArenaRun", "run_arena", "record", "leaderboard", "default_models"]


@dataclass
class Tile:
    """One model's place in the arena: what it was asked, how far it is, what it made and the verdict."""

    model: str
    paradigm: str
    experimental: bool
    video: bool
    condition: str  # the prompt or class it was given, as shown
    status: str = "waiting"  # waiting | running | done | error
    step: int = 0
    total: int = 0
    preview: np.ndarray | None = None  # (H,W,3) uint8: the partial result, then the final image (a clip: its first frame)
    frames: np.ndarray | None = None  # (T,H,W,3) uint8: the final clip
    passes: str = ""  # "6 forward passes"
    seconds: float = 0.0
    verdict: list[tuple[str, dict[str, bool]]] = field(default_factory=list)  # (object, attribute -> right) per object
    whole: bool | None = None  # None: no judge for this world
    error: str = ""
    media: str = ""  # the final picture or clip as the page embeds it (set once by the view)


@dataclass
class ArenaRun:
    """The state of one arena click: every tile, and which one is running."""

    tiles: list[Tile]
    current: int = -1

    @property
    def done(self) -> bool:
        return all(t.status in ("done", "error") for t in self.tiles)

    @property
    def status(self) -> str:
        if self.done:
            ok = [t for t in self.tiles if t.status == "done"]
            judged = [t for t in ok if t.whole is not None]
            right = sum(bool(t.whole) for t in judged)
            return f"done: {len(ok)} of {len(self.tiles)} models in {sum(t.seconds for t in ok):.1f}s; judge: {right} of {len(judged)} right"
        t = self.tiles[self.current]
        return f"{self.current + 1}/{len(self.tiles)} {t.model}: step {t.step}/{t.total or '?'}"


def default_models(registry: ModelRegistry) -> list[str]:
    """'Same prompt, all paradigms': every usable model of the folder (images, then videos, then class-conditional; experimental last)."""
    return [m.name for m in sorted(registry.list(), key=lambda m: (m.experimental, m.cond != "text", m.video)) if m.ok]


def _condition(info: ModelInfo, prompt: str, motion: str, label: int) -> dict[str, Any]:
    if info.cond == "class":
        return {"label": label}
    if info.cond == "text":
        return {"prompt": grammar.video_prompt_for(prompt, motion) if info.video and info.grammar else prompt}
    return {}


def _shown(info: ModelInfo, cond: dict[str, Any]) -> str:
    if "label" in cond:
        return f"class {cond['label']}: {grammar.class_names(info)[cond['label']]}"
    return cond.get("prompt", "unconditional")


def _check(registry: ModelRegistry, names: list[str], prompt: str, motion: str, label: Any, seed: Any) -> tuple[list[ModelInfo], int, int]:
    """Errors that concern every tile, found before any model runs (one message, not one per tile)."""
    if not names:
        raise InputError("choose at least one model for the arena")
    infos = [registry.info(n) for n in names]
    seed = H._number("seed", seed, integer=True, lo=0, hi=2**32 - 1)
    texts = [i for i in infos if i.cond == "text"]
    if texts and not prompt.strip():
        raise InputError("the prompt is empty: describe the picture, e.g. 'a large red circle at the top left'")
    if any(i.grammar and not i.video for i in texts):
        grammar.check_prompt(prompt, video=False)
    if any(i.grammar and i.video for i in texts):
        grammar.video_prompt_for(prompt, motion)
    classes = [i for i in infos if i.cond == "class"]
    label = H._number("class label", label, integer=True, lo=0, hi=min(i.num_classes for i in classes) - 1) if classes else 0
    return infos, seed, label


def run_arena(registry: ModelRegistry, names: list[str], prompt: str, motion: str = "right", label: Any = 0, seed: Any = 0,
              limits: H.Limits | None = None, min_interval: float = 0.2) -> Iterator[ArenaRun]:
    """Run every model in ``names`` on the same condition and seed; yield the arena after each update.

    Raises:
        InputError: a problem with the shared input (prompt, seed, class label, no model chosen).
    """
    prompt = (prompt or "").strip()
    infos, seed, label = _check(registry, list(names or []), prompt, motion, label, seed)
    run = ArenaRun([Tile(i.name, i.paradigm, i.experimental, i.video, _shown(i, _condition(i, prompt, motion, label))) for i in infos])
    yield run
    for k, info in enumerate(infos):
        run.current, tile = k, run.tiles[k]
        tile.status = "running"
        yield run
        try:
            for _ in _run_tile(registry, info, tile, _condition(info, prompt, motion, label), seed, limits, min_interval):
                yield run
        except InputError as e:
            tile.status, tile.error = "error", H.user_message(e)
        except Exception as e:  # a broken checkpoint: this tile says so, the others still run
            tile.status, tile.error = "error", H.user_message(f"generation failed: {e}")
        yield run


def _run_tile(registry: ModelRegistry, info: ModelInfo, tile: Tile, cond: dict[str, Any], seed: int, limits: H.Limits | None,
              min_interval: float) -> Iterator[None]:
    rec = H.page_defaults(info)
    req = H.Request(info.name, cond.get("prompt", ""), "", cond.get("label"), seed, 1, rec["cfg_scale"], rec["cfg_schedule"], rec["temperature"],
                    rec["top_k"], rec["top_p"], rec["flow_steps"], rec["token_budget"], info.frames or None)
    for up in H.generate(registry, req, video=info.video, limits=limits, min_interval=min_interval, image_interval=min_interval):
        if not up.final:
            tile.step, tile.total = up.step, up.total
        if up.images is not None:
            tile.preview = up.images[0, 0] if up.images.ndim == 5 else up.images[0]
        if up.final:
            tile.seconds = up.settings["seconds"]  # the sampling call itself, as the CLI would time it
            if info.video:
                tile.frames = up.images[0]
            tile.passes = _passes(registry, info, up.settings)
            _judge(info, tile, cond.get("prompt"))
            tile.status = "done"
        yield None


def _passes(registry: ModelRegistry, info: ModelInfo, settings: dict) -> str:
    """Transformer forward passes per sample (xAR: per entity, plus its flow-head steps)."""
    gen = registry.get(info.name).generator
    passes = f"{gen.forward_passes()} forward passes"
    return passes + (f" (each + {settings['sampler']['flow_steps']} flow-head steps)" if info.flow else "")


def _judge(info: ModelInfo, tile: Tile, prompt: str | None) -> None:
    """The shapes judge's verdict, per object (image) or per clip (video); nothing for other worlds."""
    if not info.grammar or prompt is None:
        return
    if info.video:
        from mmgen.eval.video_judge import judge_video

        r = judge_video(tile.frames, prompt)
        tile.verdict = [(f"{r.found.get('color') or '?'} {r.found.get('shape') or '?'}", {**r.attributes, "one object": r.count})]
        tile.whole = r.whole
        return
    from mmgen.eval.judge import judge

    r = judge(tile.preview, prompt)
    words = prompt.split(" and ")
    tile.verdict = [(w.removeprefix("a ").split(" at the")[0], o) for w, o in zip(words, r.objects)]
    tile.whole = r.whole


def record(board: dict | None, run: ArenaRun) -> dict:
    """The session's leaderboard with one more arena run: per model, runs, judged, right and time."""
    board = {k: dict(v) for k, v in (board or {}).items()}
    for t in run.tiles:
        if t.status != "done":
            continue
        row = board.setdefault(t.model, {"paradigm": t.paradigm, "runs": 0, "judged": 0, "right": 0, "seconds": 0.0})
        row["runs"] += 1
        row["seconds"] += t.seconds
        if t.whole is not None:
            row["judged"] += 1
            row["right"] += int(t.whole)
    return board


def leaderboard(board: dict | None) -> list[dict[str, Any]]:
    """Rows, best first: judged accuracy (unjudged last), then mean time."""
    rows = [{"model": k, "paradigm": v["paradigm"], "runs": v["runs"], "accuracy": v["right"] / v["judged"] if v["judged"] else None,
             "judged": v["judged"], "mean_seconds": v["seconds"] / max(v["runs"], 1)} for k, v in (board or {}).items()]
    return sorted(rows, key=lambda r: (r["accuracy"] is None, -(r["accuracy"] or 0), r["mean_seconds"]))
