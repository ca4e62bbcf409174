"""Every generator paradigm on the same data, backbone and step budget, in one table.

``mmgen bench compare --world shapes --budget 2000`` trains each paradigm that applies to the
world with identical training settings (batch, lr schedule, steps, seed) and an identical
transformer (dim/depth/heads), on frozen pre-trained tokenizers, then measures FID, accuracy
(shapes judge or digits classifier), parameters, training time, sampling speed and forward passes
per sample. What differs between rows is the paradigm, nothing else that can be held equal.
``--world shapes-video`` does the same for text-to-video: token by token, NBP and the Emu3-style
one-vocabulary sequence on one frozen video tokenizer, scored by the video judge and frame FID.

A paradigm is one :class:`Paradigm` entry (preset + tokenizer + overrides per world); a later
paradigm (RAR, xAR, NBP, FlexTok, ...) joins the comparison with one :func:`register_paradigm`.
"""
from __future__ import annotations

import datetime
import json
import math
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml

from mmgen.sampler import SamplerConfig

__all__ = ["Backbone", "Paradigm", "WorldSetup", "PARADIGMS", "WORLDS", "register_paradigm", "resolve_paradigms",
           "run_comparison", "time_pipeline", "fid_column"]

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "train" / "recipes"


# ---------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class WorldSetup:
    """How one paradigm runs on one world.

    Args:
        model: registered generator preset (its conditioning must suit the world).
        tokenizer: a trained tokenizer folder, or a tokenizer recipe ``*.yaml`` (trained first, once
            per output folder, with ``tokenizer_overrides``). Relative paths are from the repo root.
        overrides: extra ``key=value`` recipe overrides this paradigm needs (never the shared
            backbone or training settings, which the comparison sets for everyone).
    """

    model: str
    tokenizer: str
    overrides: tuple[str, ...] = ()
    tokenizer_overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Paradigm:
    name: str  # what --paradigms takes
    title: str  # what the table shows
    worlds: Mapping[str, WorldSetup]


@dataclass(frozen=True)
class World:
    data: Mapping[str, Any]  # build_dataset kwargs, same for every paradigm
    ema_decay: float  # the world's recipes' EMA (digits is small: faster EMA)
    metric: str  # "judge" (shapes prompts), "digits" (classifier of real digits) or "video" (video judge)


WORLDS: dict[str, World] = {
    "shapes": World({"spec": "shapes", "size": 32, "seed": 1}, 0.998, "judge"),
    "digits": World({"spec": "digits", "size": 32, "seed": 1}, 0.99, "digits"),
    "shapes-video": World({"spec": "shapes-video:frames=8", "size": 32, "seed": 1}, 0.998, "video"),
}

PARADIGMS: dict[str, Paradigm] = {}


def register_paradigm(p: Paradigm) -> Paradigm:
    """Add (or replace) a paradigm entry; unknown worlds are an error."""
    bad = sorted(set(p.worlds) - set(WORLDS))
    if bad:
        raise ValueError(f"paradigm {p.name!r}: unknown worlds {bad}; known: {sorted(WORLDS)}")
    PARADIGMS[p.name] = p
    return p


register_paradigm(Paradigm("raster", "raster next-token (LlamaGen)", {
    "shapes": WorldSetup("raster-tiny", "checkpoints/shapes-raster/tokenizer"),
    "digits": WorldSetup("raster-tiny-class", "checkpoints/digits-raster/tokenizer"),
}))
register_paradigm(Paradigm("rar", "RAR random order annealed to raster", {
    "shapes": WorldSetup("rar-tiny", "checkpoints/shapes-raster/tokenizer"),
    "digits": WorldSetup("rar-tiny-class", "checkpoints/digits-raster/tokenizer"),
}))
register_paradigm(Paradigm("xar", "xAR next-token, flow matching", {
    "shapes": WorldSetup("xar-tiny", "checkpoints/shapes-xar/tokenizer"),
}))
register_paradigm(Paradigm("subobject", "raster over subobject segments", {
    "shapes": WorldSetup("raster-tiny-subobject", "checkpoints/shapes-subobject/tokenizer"),
}))
register_paradigm(Paradigm("flextok", "raster over FlexTok 1D tokens", {
    "shapes": WorldSetup("raster-tiny-flextok", "checkpoints/shapes-flextok/tokenizer"),
}))
register_paradigm(Paradigm("var", "VAR next-scale", {
    "shapes": WorldSetup("var-tiny", "checkpoints/shapes-var/tokenizer"),
    "digits": WorldSetup("var-tiny-class", "checkpoints/digits-var/tokenizer"),
}))
# Video: the shipped per-frame FSQ tokenizer for all three; only the sequence format and the blocks differ.
_VIDEO_TOKENIZER = "checkpoints/shapes-video-nbp/tokenizer"
register_paradigm(Paradigm("video-raster", "token by token (video raster)", {
    "shapes-video": WorldSetup("video-raster-tiny", _VIDEO_TOKENIZER),
}))
register_paradigm(Paradigm("nbp", "NBP next-frame-block", {
    "shapes-video": WorldSetup("nbp-tiny", _VIDEO_TOKENIZER, ("model_args.block=frame", "model_args.first_frame=tokens")),
}))
register_paradigm(Paradigm("unified", "Emu3-style one-vocabulary sequence", {  # the same clips, as text+EOL/EOF sequences
    "shapes-video": WorldSetup("emu3-tiny", _VIDEO_TOKENIZER, ("data.spec=shapes-unified:frames=8,tasks=t2v",)),
}))


def resolve_paradigms(world: str, names: Sequence[str] | None = None) -> list[Paradigm]:
    """The paradigms to compare on ``world`` (default: all that apply), with clear errors."""
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; choose from {sorted(WORLDS)}")
    applicable = [p for p in PARADIGMS.values() if world in p.worlds]
    if not names:
        if not applicable:
            raise ValueError(f"no registered paradigm applies to world {world!r}")
        return applicable
    out = []
    for name in dict.fromkeys(n.strip().lower() for n in names if n.strip()):
        if name not in PARADIGMS:
            raise ValueError(f"unknown paradigm {name!r}; available for {world}: {', '.join(p.name for p in applicable)}")
        p = PARADIGMS[name]
        if world not in p.worlds:
            raise ValueError(f"paradigm {name!r} does not apply to world {world!r} (it runs on: {', '.join(p.worlds)})")
        out.append(p)
    if not out:
        raise ValueError("--paradigms named no paradigm")
    return out


# ---------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Backbone:
    """The one transformer size every paradigm gets (the tiny presets' default)."""

    dim: int = 192
    depth: int = 6
    heads: int = 6

    def __post_init__(self) -> None:
        if min(self.dim, self.depth, self.heads) < 1 or self.dim % self.heads:
            raise ValueError(f"backbone needs positive dim/depth/heads with dim divisible by heads, got {self}")

    def overrides(self) -> list[str]:
        return [f"model_args.transformer.{k}={v}" for k, v in asdict(self).items()]


def train_settings(world: str, budget: int, batch_size: int = 32) -> dict[str, Any]:
    """Shared optimizer settings: the world recipes' values, warmup scaled to the budget."""
    if budget < 1:
        raise ValueError(f"--budget must be >= 1 optimizer step, got {budget}")
    return {"steps": budget, "batch_size": batch_size, "lr": 1.5e-3, "warmup_steps": min(150, budget // 10),
            "weight_decay": 0.05, "ema_decay": WORLDS[world].ema_decay, "seed": 0}


def _repo_path(p: str | Path) -> Path:
    p = Path(p)
    return p if p.is_absolute() else REPO / p


def _show(p: str | Path) -> str:
    p = Path(p).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def _tokenizer_dir(setup: WorldSetup, out_dir: Path, progress: bool) -> Path:
    """A folder holding a trained tokenizer: the given one, or one trained here from a recipe."""
    if not setup.tokenizer.endswith((".yaml", ".yml")):
        path = _repo_path(setup.tokenizer)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"tokenizer folder {_show(path)!r} has no config.json (a paradigm entry points to "
                                    "a missing checkpoint; train it or fix the entry)")
        return path
    from mmgen.train.run import train

    recipe = _repo_path(setup.tokenizer)
    if not recipe.is_file():
        recipe = RECIPES / setup.tokenizer
    run = out_dir / "tokenizers" / recipe.stem
    over = [*setup.tokenizer_overrides, "train.tensorboard=false", f"train.progress={str(progress).lower()}"]
    return train("tokenizer", recipe, overrides=over, out=run, resume=True)


# ---------------------------------------------------------------------------------------- measurements
def time_pipeline(pipe, sampler: SamplerConfig, repeats: int = 3, **cond: Any) -> float:
    """Best-of-``repeats`` seconds to generate one batch (``prompt=[...]`` or ``label=[...]``), after a warm-up."""
    pipe(**{k: v[:2] for k, v in cond.items()}, sampler=sampler)  # warm-up (allocations, lazy init)
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        pipe(**cond, sampler=sampler)
        best = min(best, time.perf_counter() - t0)
    return best


def fid_column(images: torch.Tensor, world: str, n_ref: int, progress: bool = True, device: str | torch.device = "cpu") -> float:
    """FID of uint8 ``(N,3,H,W)`` samples (video: frames) against ``n_ref`` images (frames) of the world's training split."""
    from mmgen.eval.fid import default_extractor, fid_against_world

    spec = WORLDS[world].data["spec"]
    return float(fid_against_world(images, spec, n_ref=n_ref, extractor=default_extractor(device), progress=progress))


def _fid_protocol(n_ref: int) -> dict[str, Any]:
    from mmgen.eval.fid import default_extractor

    return {"reference": "world train split", "n_ref": n_ref, **default_extractor().protocol}


def _train_seconds(metrics: Path, batch_size: int) -> tuple[int, float, float]:
    """(steps, seconds in the training loop, last logged loss) from a run's metrics.jsonl."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{metrics} is empty: the run logged nothing")
    seconds, prev = 0.0, 0
    for r in rows:
        seconds += (r["step"] - prev) * batch_size / r["perf/samples_per_s"]
        prev = r["step"]
    return rows[-1]["step"], seconds, rows[-1]["loss"]


def _evaluate(pipe, world: str, n_eval: int, n_ref: int, sampler: SamplerConfig, speed_batch: int, repeats: int,
              progress: bool) -> dict[str, Any]:
    from mmgen.eval.generation import digits_accuracy, judge_pipeline, shapes_prompts

    if WORLDS[world].metric == "video":
        from mmgen.eval.video_judge import judge_video_pipeline, video_prompts

        res = judge_video_pipeline(pipe, n=n_eval, sampler=sampler, progress=progress)
        clips = res["videos"]  # uint8 (n, 3, T, H, W): frame FID over every frame
        fid = fid_column(clips.transpose(1, 2).flatten(0, 1), world, n_ref, progress, pipe.generator.device)
        seconds = time_pipeline(pipe, sampler, repeats, prompt=video_prompts(speed_batch, seed=1))
        return {"judge_video": res["whole"], "judge_direction": res["direction"], "judge_color": res["color"],
                "fid": fid, "fid_n": clips.shape[0] * clips.shape[2], "videos_per_s": speed_batch / seconds,
                "frames_per_s": speed_batch * clips.shape[2] / seconds}
    if WORLDS[world].metric == "judge":
        one = judge_pipeline(pipe, n=n_eval, objects=1, sampler=sampler, progress=progress)
        two = judge_pipeline(pipe, n=n_eval, objects=2, sampler=sampler, progress=progress)
        scores = {"judge_1obj": one["whole"], "judge_2obj": two["whole"]}
        images = torch.cat([one["images"], two["images"]])  # the world draws 1 and 2 objects equally often
        cond = {"prompt": shapes_prompts(speed_batch, 2, seed=1)}
    else:
        res = digits_accuracy(pipe, per_class=max(1, math.ceil(n_eval / 10)), sampler=sampler)
        scores, images = {"digits_acc": res["accuracy"]}, res["images"]
        cond = {"label": [i % 10 for i in range(speed_batch)]}
    fid = fid_column(images, world, n_ref, progress, pipe.generator.device)
    seconds = time_pipeline(pipe, sampler, repeats, **cond)
    return {**scores, "fid": fid, "fid_n": len(images), "images_per_s": speed_batch / seconds}


# ---------------------------------------------------------------------------------------- the comparison
def _recipe(world: str, setup: WorldSetup, tokenizer: Path, train: dict[str, Any], progress: bool) -> dict[str, Any]:
    """The recipe every paradigm shares, filled in with this paradigm's preset and tokenizer."""
    return {"model": setup.model, "tokenizer": str(tokenizer), "data": dict(WORLDS[world].data),
            "train": {**train, "log_every": min(25, train["steps"]), "ckpt_every": train["steps"],
                      "tensorboard": False, "progress": progress}}


def _prepare_run(run: Path, budget: int, overwrite: bool) -> None:
    """Reuse a finished or interrupted run of the same budget; refuse to mix budgets silently."""
    saved = run / "recipe.yaml"
    if overwrite and run.exists():
        shutil.rmtree(run)
    elif saved.is_file():
        steps = (yaml.safe_load(saved.read_text()) or {}).get("train", {}).get("steps")
        if steps != budget:
            raise ValueError(f"{_show(run)} holds a run with budget {steps}, not {budget}: pass --overwrite "
                             "or choose another --out")


def run_comparison(world: str, budget: int, paradigms: Sequence[str] | None = None, backbone: Backbone = Backbone(),
                   n_eval: int = 100, n_ref: int = 5000, out_dir: str | Path | None = None, batch_size: int = 32,
                   sampler: SamplerConfig | None = None, speed_batch: int = 16, repeats: int = 3,
                   overwrite: bool = False, progress: bool = True, command: str | None = None) -> list[dict[str, Any]]:
    """Train and evaluate each paradigm; writes ``compare.json`` + ``compare.md`` after every row.

    Runs go to ``<out_dir>/runs/<paradigm>``; a rerun with the same settings reuses (or resumes)
    them, so an interrupted full comparison continues where it stopped.
    """
    import mmgen
    from mmgen.bench.compare_report import write_report
    from mmgen.nn.transformer import Transformer
    from mmgen.train.distributed import default_device
    from mmgen.train.run import train

    chosen = resolve_paradigms(world, paradigms)
    if n_eval < 2 or n_ref < 2 or speed_batch < 1:
        raise ValueError(f"need --n-eval >= 2, --n-ref >= 2 (FID) and --speed-batch >= 1, got {n_eval}, {n_ref}, {speed_batch}")
    out = Path(out_dir or f"runs/compare-{world}")
    sampler = sampler or SamplerConfig(cfg_scale=1.5, temperature=0.6)
    settings = train_settings(world, budget, batch_size)
    meta = {"world": world, "metric": WORLDS[world].metric, "budget": budget, "backbone": asdict(backbone), "train": settings,
            "data": dict(WORLDS[world].data), "sampler": asdict(sampler), "n_eval": n_eval, "fid": _fid_protocol(n_ref), "speed_batch": speed_batch,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
            "date": datetime.date.today().isoformat(), "command": command}
    rows: list[dict[str, Any]] = []
    setups = [(p, p.worlds[world]) for p in chosen]
    toks = [_tokenizer_dir(s, out, progress) for _, s in setups]  # fail on a missing tokenizer before training
    for (p, setup), tok in zip(setups, toks):
        run = out / "runs" / p.name
        _prepare_run(run, budget, overwrite)
        resumed = (run / "metrics.jsonl").is_file()
        try:
            model_dir = train("generator", _recipe(world, setup, tok, settings, progress),
                              overrides=[*setup.overrides, *backbone.overrides()], out=run, resume=True)
        except ValueError as e:
            if "cannot resume" not in str(e):
                raise
            raise ValueError(f"{e}; pass --overwrite or choose another --out") from e
        steps, train_s, loss = _train_seconds(run / "metrics.jsonl", batch_size)
        pipe = mmgen.load(model_dir, device=default_device())  # where it trained
        gen = pipe.generator
        tcfg = gen.config.transformer
        row = {"paradigm": p.name, "title": p.title, "model": setup.model, "tokenizer": _show(tok),
               "tokenizer_class": type(pipe.tokenizer).__name__, "tokens_per_image": gen.layout.num_tokens,
               "backbone": {"dim": tcfg.dim, "depth": tcfg.depth, "heads": tcfg.heads},
               "params": gen.num_params(), "params_backbone": sum(q.numel() for m in gen.modules() if isinstance(m, Transformer) for q in m.parameters()),
               "steps": steps, "batch_size": batch_size, "train_s": train_s, "reused_run": resumed, "final_loss": loss,
               "forward_passes": gen.forward_passes(), "run": _show(run)}
        own = gen.restrict_sampler(sampler)  # the shared settings this paradigm reads (no temperature for xAR)
        row.update(_evaluate(pipe, world, n_eval, n_ref, own, speed_batch, repeats, progress))
        rows.append(row)
        write_report(out, meta, rows)
    return rows
