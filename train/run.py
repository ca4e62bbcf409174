"""Recipe -> training run, for a tokenizer or a generator (what ``mmgen train ...`` calls).

A recipe is a YAML mapping (see :class:`Recipe`); ``key=value`` overrides address it with
dots (``train.steps=100``, ``model_args.depth=4``, ``data.spec=digits``). ``train.*`` is typed
by :class:`TrainConfig`, ``model_args.*`` by the preset's config dataclass; unknown keys are
errors listing the allowed ones. The resolved recipe is saved as ``<out>/recipe.yaml``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
from torch import nn

from mmgen.config import fix_floats, from_dict, load_recipe, merge_dicts, parse_leaves, parse_overrides, to_dict
from mmgen.fs import writing
from mmgen.train import distributed as D
from mmgen.train.state import latest_checkpoint
from mmgen.train.trainer import TrainConfig, Trainer, seed_everything

__all__ = ["Recipe", "resolve_recipe", "train"]

KINDS = ("tokenizer", "generator")
# Bookkeeping fields that may change between a run and its resume (they do not alter the trajectory).
_RESUME_MAY_CHANGE = {"out", "train.out_dir", "train.steps", "train.max_time_min", "train.log_every",
                      "train.ckpt_every", "train.keep_last", "train.num_workers", "train.progress",
                      "train.tensorboard", "train.image_every"}


@dataclass
class Recipe:
    model: str  # a registered preset name
    model_args: dict[str, Any] = field(default_factory=dict)  # typed later by the preset's config class
    tokenizer: str | None = None  # generator recipes: folder of a trained tokenizer
    init: str | None = None  # start from this trained model folder's weights (fine-tuning); same architecture
    init_only: list[str] | None = None  # with init: load only the parameters under these name prefixes (e.g. ["enc."]);
    # the rest keep their fresh init, so a part of another size (a bigger decoder) can start beside trained ones
    freeze: list[str] | None = None  # parameters under these name prefixes do not train (e.g. a trained encoder)
    data: dict[str, Any] = field(default_factory=dict)  # {spec: ..., **build_dataset kwargs}
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str | None = None


def resolve_recipe(recipe: str | Path | dict[str, Any] | Recipe, overrides: Sequence[str] = ()) -> Recipe:
    """Load ``recipe`` (path, dict or Recipe) and apply typed ``key=value`` overrides."""
    if isinstance(recipe, Recipe):
        data = to_dict(recipe)
    elif isinstance(recipe, dict):
        data = dict(recipe)
    else:
        data = load_recipe(recipe)
    extra = parse_overrides(list(overrides))
    for key in ("model_args", "data"):
        if isinstance(extra.get(key), dict):
            extra[key] = parse_leaves(extra[key])
    merged = fix_floats(merge_dicts(data, extra))
    if "model" not in merged:
        raise ValueError(f"recipe needs a 'model' (a preset name); got keys {sorted(merged)}")
    return from_dict(Recipe, merged)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k in ("train", "data", "model_args") and not prefix:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _check_resume(saved_path: Path, recipe: Recipe) -> None:
    saved = _flatten(yaml.safe_load(saved_path.read_text()) or {})
    now = _flatten(to_dict(recipe))
    diff = {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now))
            if k not in _RESUME_MAY_CHANGE and saved.get(k) != now.get(k)}
    if diff:
        raise ValueError(f"cannot resume: recipe differs from {saved_path} (saved, now): {diff}")


def _matching(names, prefixes: list[str], what: str) -> set[str]:
    """The names under ``prefixes``; a prefix that matches nothing is an error (a typo would silently do nothing)."""
    names = list(names)
    for pre in prefixes:
        if not any(n.startswith(pre) for n in names):
            roots = sorted({n.split(".")[0] for n in names})
            raise ValueError(f"{what} prefix {pre!r} matches no parameter; top-level names: {roots}")
    return {n for n in names if any(n.startswith(pre) for pre in prefixes)}


def _init_weights(model: nn.Module, init: str | None, only: list[str] | None = None) -> None:
    """Load the weights of the model folder ``init`` (a fine-tune's starting point); shapes must match.

    ``only``: load just the tensors under these name prefixes (each must exist with the same shape in both).
    """
    if not init:
        if only:
            raise ValueError("init_only needs init=FOLDER")
        return
    from mmgen.modeling import load_module

    src = load_module(init)
    if type(src) is not type(model):
        raise ValueError(f"init={init} holds a {type(src).__name__}, the recipe builds a {type(model).__name__}")
    state = src.state_dict()
    if only:
        own = model.state_dict()
        keys = _matching(own, only, "init_only")
        bad = sorted(k for k in keys if k not in state or state[k].shape != own[k].shape)
        if bad:
            raise ValueError(f"init={init} lacks or has other shapes for {len(bad)} tensors under init_only, e.g. {bad[:3]}")
        model.load_state_dict({k: state[k] for k in keys}, strict=False)
        return
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"init={init} does not fit the recipe's model: {str(e).splitlines()[0]}") from None


def _freeze(model: nn.Module, prefixes: list[str] | None) -> None:
    """``requires_grad_(False)`` on the parameters under ``prefixes`` (the optimizer skips them, EMA shares them)."""
    if not prefixes:
        return
    params = dict(model.named_parameters())
    for name in _matching(params, prefixes, "freeze"):
        params[name].requires_grad_(False)


def _tokenizer_parts(r: Recipe):
    import mmgen

    model = mmgen.create_tokenizer(r.model, **r.model_args)
    has_forward = type(model).forward is not nn.Module.forward
    if not has_forward and D.env_info().enabled:
        raise TypeError(f"{type(model).__name__} must implement forward(pixels, step=0) returning loss(...): "
                        "under DDP the wrapper's forward is what runs")

    def loss_fn(m, batch, step: int):
        if has_forward:
            return m(batch["pixels"], step=step)  # forward == loss, so DDP's hooks run
        return m.loss(batch["pixels"], step=step)  # single process only

    _init_weights(model, r.init, r.init_only)
    _freeze(model, r.freeze)
    return model, loss_fn, None  # None: the Trainer's default export (EMA weights if on)


def _generator_parts(r: Recipe, device):
    import mmgen
    from mmgen.modeling import load_module
    from mmgen.models.base import takes_progress, tokenizer_overrides

    if not r.tokenizer:
        raise ValueError("a generator recipe needs 'tokenizer: <folder of a trained tokenizer>'")
    tok = load_module(r.tokenizer).to(device).eval().requires_grad_(False)
    derived = tokenizer_overrides(tok)
    clash = sorted(set(derived) & set(r.model_args))
    if clash:
        raise ValueError(f"model_args {clash} are determined by the tokenizer at {r.tokenizer}; remove them")
    gen = mmgen.create_generator(r.model, **derived, **r.model_args)
    _init_weights(gen, r.init, r.init_only)
    _freeze(gen, r.freeze)
    gen.bind_tokenizer(tok)

    # generators whose loss depends on training progress (RAR's order annealing) get step / steps
    wants_progress = takes_progress(gen)

    def loss_fn(m, batch, step: int):
        tokens, cond = D.unwrap(m).prepare_batch(batch)
        if wants_progress:
            return m(tokens, cond, progress=step / r.train.steps)
        return m(tokens, cond)

    def export_fn(model, ema_model, path: Path, step: int) -> None:
        from mmgen.pipeline import save_pipeline

        save_pipeline(path, ema_model if ema_model is not None else model, tok)

    return gen, loss_fn, export_fn


def train(kind: str, recipe: str | Path | dict[str, Any] | Recipe, overrides: Sequence[str] = (), out: str | Path | None = None,
          resume: bool = False, dataset_factory: Callable[..., Any] | None = None,
          collate_fn: Callable | None = None) -> Path:
    """Train a tokenizer or a generator from a recipe; returns the exported model folder ``<out>/model``.

    Args:
        dataset_factory: ``factory(spec, **data_rest)`` replacing ``mmgen.data.build_dataset``
            (tests, custom data); ``collate_fn`` defaults to ``mmgen.data.collate`` only with the
            built-in factory, torch's default collate otherwise.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
    r = resolve_recipe(recipe, overrides)
    out_dir = out if out is not None else r.out
    if out_dir is None:
        raise ValueError("no output folder: set 'out' in the recipe, pass out=..., or override out=PATH")
    out_dir = Path(out_dir)
    r = dataclasses.replace(r, out=str(out_dir), train=dataclasses.replace(r.train, out_dir=str(out_dir)))
    if "spec" not in r.data:
        raise ValueError(f"recipe data needs a 'spec' (dataset name); got {r.data}")
    if latest_checkpoint(out_dir / "checkpoints") is not None and not resume:
        raise FileExistsError(f"{out_dir} already holds a run; pass resume=True or choose another out")
    recipe_file = out_dir / "recipe.yaml"
    if resume and recipe_file.is_file():
        _check_resume(recipe_file, r)
    if D.env_info().is_main:
        with writing(recipe_file, "the resolved recipe"):
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = recipe_file.with_name(".recipe.yaml.tmp")
            tmp.write_text(yaml.safe_dump(to_dict(r), sort_keys=False))
            tmp.replace(recipe_file)

    seed_everything(r.train.seed)  # same initial weights on every rank
    device = D.default_device()
    model, loss_fn, export_fn = _tokenizer_parts(r) if kind == "tokenizer" else _generator_parts(r, device)
    if dataset_factory is None:
        from mmgen.data import build_dataset, collate

        dataset_factory, collate_fn = build_dataset, collate_fn or collate
    data = dict(r.data)
    dataset = dataset_factory(data.pop("spec"), **data)
    kw = {} if export_fn is None else {"export_fn": export_fn}
    trainer = Trainer(r.train, model, loss_fn, dataset, collate_fn=collate_fn, resume=resume, device=device, **kw)
    trainer.fit()
    return out_dir / "model"
