"""Training-checkpoint I/O: exact-resume state written atomically, never pickled.

Layout of ``<out>/checkpoints/``::

    step_0000500/            one folder per checkpoint, swapped in atomically (mmgen.modeling.atomic_dir)
        model.safetensors    live weights
        ema.safetensors      EMA weights (when EMA is on)
        optimizer.safetensors + the non-tensor optimizer parts inside trainer_state.json
        rng.safetensors      torch CPU/CUDA, numpy and python RNG states of every rank
        trainer_state.json   step, data position, config, format version
    latest                   JSON pointer to the newest folder, replaced atomically
"""
from __future__ import annotations

import json
import random
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mmgen.fs import writing
from mmgen.modeling import atomic_dir, write_json_atomic
from mmgen.state_check import first_nonfinite

__all__ = ["TrainingState", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints",
           "load_latest_intact", "rng_state", "set_rng_state", "step_dir_name"]

FORMAT_VERSION = 1
LATEST = "latest"
STATE_JSON = "trainer_state.json"
_STEP_RE = re.compile(r"^step_(\d+)$")


@dataclass
class TrainingState:
    """Everything needed to continue a run bit-exactly."""

    step: int
    samples_seen: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: list[dict[str, torch.Tensor]]  # one entry per rank
    ema: dict[str, torch.Tensor] | None = None
    ema_updates: int = 0
    meta: dict[str, Any] = field(default_factory=dict)  # config, world size, ... (JSON)


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


# ----------------------------------------------------------------------------- RNG as tensors
def rng_state(device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """This process's RNG states as fixed-shape tensors (safetensors- and all_gather-friendly)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    out = {
        "torch_cpu": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([gauss], dtype=torch.float64),
        "python_state": torch.tensor(internal, dtype=torch.int64),
        "python_meta": torch.tensor([version, gauss_next is not None], dtype=torch.int64),
        "python_gauss": torch.tensor([gauss_next or 0.0], dtype=torch.float64),
    }
    if device is not None and device.type == "cuda":
        out["torch_cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch_cpu"].to(torch.uint8))
    pos, has_gauss = state["numpy_pos"].tolist()
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(state["numpy_gauss"].item())))
    version, has_next = state["python_meta"].tolist()
    gauss_next = float(state["python_gauss"].item()) if has_next else None
    random.setstate((int(version), tuple(int(v) for v in state["python_state"].tolist()), gauss_next))
    if device is not None and device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"].to(torch.uint8), device)


# ----------------------------------------------------------------------------- optimizer (de)flattening
def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    extra: dict[str, dict[str, Any]] = {}
    for idx, entries in sd["state"].items():
        for k, v in entries.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{k}"] = v.detach().to("cpu", copy=True).contiguous()
            else:
                extra.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "state_extra": extra}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, v in tensors.items():
        _, idx, k = name.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    for idx, entries in meta.get("state_extra", {}).items():
        state.setdefault(int(idx), {}).update(entries)
    groups = []
    for g in meta["param_groups"]:  # JSON turned tuples (betas) into lists
        groups.append({k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()})
    return {"state": state, "param_groups": groups}


def _cpu_copy(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Copies, so tied weights become separate tensors (safetensors refuses shared storage).
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in sd.items()}


# ----------------------------------------------------------------------------- save / load
def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as ``(step, folder)``, oldest first."""
    root = Path(root)
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = _STEP_RE.match(p.name)
            if m and (p / STATE_JSON).is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The folder named by ``latest``; falls back to the highest complete one if the pointer is stale."""
    root = Path(root)
    try:
        name = json.loads((root / LATEST).read_text())["dir"]
        if (root / name / STATE_JSON).is_file():
            return root / name
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def save_checkpoint(root: str | Path, state: TrainingState, keep_last: int = 2) -> Path:
    """Write ``root/step_XXXXXXX`` atomically, move ``latest`` to it, keep the newest ``keep_last``.

    Raises:
        OSError: naming the folder, when it cannot be written (disk full, read-only); the
            previous checkpoints are left as they were.
    """
    root = Path(root)
    with writing(root / step_dir_name(state.step), "checkpoint"):
        return _save_checkpoint(root, state, keep_last)


def _save_checkpoint(root: Path, state: TrainingState, keep_last: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".step_*"):  # leftovers of a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)
    path = root / step_dir_name(state.step)
    opt_tensors, opt_meta = _flatten_optimizer(state.optimizer)
    rng = {f"rank{r}.{k}": v.contiguous() for r, d in enumerate(state.rng) for k, v in d.items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "step": state.step,
        "samples_seen": state.samples_seen,
        "num_ranks": len(state.rng),
        "ema_updates": state.ema_updates,
        "has_ema": state.ema is not None,
        "optimizer": opt_meta,
        **state.meta,
    }
    with atomic_dir(path) as tmp:
        save_file(_cpu_copy(state.model), str(tmp / "model.safetensors"))
        if state.ema is not None:
            save_file(_cpu_copy(state.ema), str(tmp / "ema.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng, str(tmp / "rng.safetensors"))
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=2))  # written last: marks completeness
    write_json_atomic(root / LATEST, {"step": state.step, "dir": path.name})
    if keep_last > 0:
        for _, old in list_checkpoints(root)[:-keep_last]:
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> TrainingState:
    """Read a checkpoint folder written by :func:`save_checkpoint` (safetensors + JSON only)."""
    path = Path(path)
    state_file = path / STATE_JSON
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint: {STATE_JSON} is missing")
    try:
        meta = json.loads(state_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint {path} is corrupt: {STATE_JSON} is unreadable ({e})") from e
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{state_file}: format_version={meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    try:
        model = load_file(str(path / "model.safetensors"), device=map_location)
        ema = load_file(str(path / "ema.safetensors"), device=map_location) if meta["has_ema"] else None
        opt = _unflatten_optimizer(load_file(str(path / "optimizer.safetensors"), device=map_location), meta.pop("optimizer"))
        flat_rng = load_file(str(path / "rng.safetensors"))
    except Exception as e:  # safetensors raises several error types for corrupt/missing files
        raise ValueError(f"checkpoint {path} is incomplete or corrupt: {e}") from e
    bad = first_nonfinite(model) or (first_nonfinite(ema) if ema is not None else None)
    if bad is not None:
        raise ValueError(f"checkpoint {path} holds non-finite weights (NaN/inf), e.g. in tensor {bad!r}")
    rng: list[dict[str, torch.Tensor]] = [{} for _ in range(meta["num_ranks"])]
    for name, v in flat_rng.items():
        r, k = name.split(".", 1)
        rng[int(r.removeprefix("rank"))][k] = v
    return TrainingState(step=meta["step"], samples_seen=meta["samples_seen"], model=model, optimizer=opt,
                         rng=rng, ema=ema, ema_updates=meta["ema_updates"], meta=meta)


def load_latest_intact(root: str | Path, map_location: str = "cpu") -> tuple[Path, TrainingState] | None:
    """Load the newest checkpoint under ``root`` that reads back intact; None if there is none.

    A corrupt newest checkpoint (a disk error, a truncated copy) must not end a run that has an
    older good one: it is skipped with a warning naming both. All corrupt is an error.

    Raises:
        ValueError: checkpoints exist but none of them is intact.
    """
    root = Path(root)
    newest = latest_checkpoint(root)
    if newest is None:
        return None
    candidates = [newest] + [p for _, p in reversed(list_checkpoints(root)) if p != newest]
    errors = []
    for path in candidates:
        try:
            state = load_checkpoint(path, map_location)
        except (ValueError, OSError) as e:
            errors.append(f"{path.name}: {e}")
            print(f"[mmgen] warning: skipping corrupt checkpoint {path}: {e}", file=sys.stderr)
            continue
        if path != newest:
            print(f"[mmgen] warning: resuming from {path.name}, the newest intact checkpoint "
                  f"(newer ones are corrupt: {[p.name for p in candidates[:candidates.index(path)]]})", file=sys.stderr)
        return path, state
    raise ValueError(f"no intact checkpoint under {root}: {'; '.join(errors)}")
