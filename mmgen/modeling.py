"""Config-carrying modules with safetensors save/load (diffusers' ModelMixin idea, smaller).

A ``ConfigModule`` is built from one dataclass config. ``save_pretrained(dir)`` writes
``config.json`` (class name + config) and ``model.safetensors`` atomically;
``load_module(dir)`` rebuilds the right class from the JSON and loads the weights without
unpickling anything.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmgen.config import from_dict, to_dict
from mmgen.state_check import check_state_dict

__all__ = ["ConfigModule", "load_module", "module_class", "atomic_dir", "write_json_atomic", "count_params"]

_CLASSES: dict[str, type["ConfigModule"]] = {}
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def module_class(name: str) -> type["ConfigModule"]:
    """Look up a ConfigModule subclass by its class name (as stored in config.json)."""
    _import_all()
    if name not in _CLASSES:
        raise KeyError(f"unknown module class {name!r}; known: {sorted(_CLASSES)}")
    return _CLASSES[name]


def _import_all() -> None:
    # Importing the subpackages registers their classes.
    import mmgen.models  # noqa: F401
    import mmgen.tokenizers_vis  # noqa: F401


class ConfigModule(nn.Module):
    """An ``nn.Module`` fully described by ``self.config`` (a dataclass of ``config_class``)."""

    config_class: ClassVar[type]
    kind: ClassVar[str] = "module"  # "tokenizer" | "generator"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls

    def __init__(self, config: Any) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = from_dict(self.config_class, config)
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} expects {self.config_class.__name__}, got {type(config).__name__}")
        self.config = copy.deepcopy(config)  # subclasses may complete their own copy; the caller's config stays as given

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def config_dict(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "kind": self.kind, "config": to_dict(self.config)}

    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None, extra: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``path`` atomically.

        Args:
            dtype: store floating tensors in this dtype (e.g. ``torch.float16`` for small shipped files).
            extra: additional JSON-serializable metadata merged into config.json.
        """
        path = Path(path)
        with atomic_dir(path) as tmp:
            self.write_files(tmp, dtype, extra)
        return path

    def write_files(self, folder: Path, dtype: torch.dtype | None = None, extra: dict[str, Any] | None = None) -> None:
        """Write config.json + model.safetensors into an existing (temporary) folder."""
        folder.mkdir(parents=True, exist_ok=True)
        meta = self.config_dict() | (extra or {})
        (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        state = {}
        for k, v in self.state_dict().items():
            v = v.detach().cpu()
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            state[k] = v.contiguous().clone()  # safetensors refuses tensors that share storage (tied weights)
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"class": type(self).__name__})

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "ConfigModule":
        module = load_module(path, map_location)
        if not isinstance(module, cls):
            raise TypeError(f"{path} holds a {type(module).__name__}, not a {cls.__name__}")
        return module


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint folder: {CONFIG_NAME} is missing")
    try:
        return json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file} is not valid JSON: {e}") from e


def count_params(weights: str | Path) -> int:
    """Parameter count of a safetensors file from its header alone (8-byte length + JSON): no tensor is read."""
    import math
    import struct

    with Path(weights).open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100_000_000:
            raise ValueError(f"{weights}: safetensors header of {n} bytes is implausibly large")
        header = json.loads(f.read(n))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> ConfigModule:
    """Rebuild a ConfigModule from a checkpoint folder (no pickle involved)."""
    path = Path(path)
    meta = read_config(path)
    if "class" not in meta or "config" not in meta:
        raise ValueError(f"{path / CONFIG_NAME} lacks 'class'/'config' entries")
    cls = module_class(meta["class"])
    module = cls(from_dict(cls.config_class, meta["config"]))
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing")
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as e:  # safetensors raises several error types for corrupt files
        raise ValueError(f"{weights} is corrupt or not a safetensors file: {e}") from e
    ref = module.state_dict()
    check_state_dict(ref, state, str(weights))
    state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()}
    module.load_state_dict(state, strict=True)
    return module.eval()


class atomic_dir:
    """Context manager: write into a temp folder beside ``path``, then swap it in.

    A crash mid-write leaves the previous checkpoint intact (never a half-written folder).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        umask = os.umask(0)
        os.umask(umask)
        for root, _dirs, files in os.walk(self.tmp):  # mkdtemp/safetensors create private modes
            os.chmod(root, 0o777 & ~umask)
            for f in files:
                os.chmod(os.path.join(root, f), 0o666 & ~umask)
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: str | Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
