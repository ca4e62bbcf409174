"""Dataclass configs with typed ``key=value`` overrides and YAML recipes.

One way to configure everything: a dataclass holds the defaults, a recipe file (YAML) and
command-line ``key=value`` strings override them. Values are converted to the field's declared
type, and an unknown key is an error that lists the allowed ones (never silently ignored).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

__all__ = ["from_dict", "to_dict", "merge_dicts", "fix_floats", "parse_scalar", "parse_leaves", "parse_overrides", "apply_overrides", "load_recipe", "convert", "check_finite"]


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def fix_floats(node: Any) -> Any:
    """``"3e-4"`` -> 3e-4, recursively: YAML 1.1 (PyYAML) reads exponent floats without a dot as strings."""
    if isinstance(node, dict):
        return {k: fix_floats(v) for k, v in node.items()}
    if isinstance(node, str) and _EXP_FLOAT.fullmatch(node.strip()):
        return float(node)
    return node


def parse_scalar(text: str) -> Any:
    """Parse a command-line value: YAML syntax, so ``3``, ``1e-3``, ``true``, ``[1,2]`` all work."""
    try:
        return fix_floats(yaml.safe_load(text))
    except yaml.YAMLError:
        return text


def parse_leaves(node: Any) -> Any:
    """Apply :func:`parse_scalar` to every string leaf of a nested mapping (untyped free-form fields)."""
    if isinstance(node, dict):
        return {k: parse_leaves(v) for k, v in node.items()}
    return parse_scalar(node) if isinstance(node, str) else node


def convert(value: Any, tp: Any, name: str = "value") -> Any:
    """Convert ``value`` to type ``tp`` (dataclass, Optional, tuple, list, Literal, scalars)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(value, a, name)
            except (TypeError, ValueError) as e:  # try the next member of the union
                errors.append(str(e))
        raise ValueError(f"{name}={value!r} matches none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{name}={value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{name} expects a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = parse_scalar(value)
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(convert(v, args[0], name) for v in value)
            if args and len(args) != len(value):
                raise ValueError(f"{name} expects {len(args)} items, got {value!r}")
            return tuple(convert(v, a, name) for v, a in zip(value, args or [Any] * len(value)))
        return [convert(v, args[0] if args else Any, name) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{name} expects a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{name} expects a boolean, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{name} expects an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            value = parse_scalar(value)
        if not isinstance(value, int):
            raise ValueError(f"{name} expects an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            value = parse_scalar(value)
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} expects a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name}={value!r} is not a finite number")
        return float(value)
    if tp is str:
        return str(value)
    return value


def check_finite(node: Any, name: str = "value") -> None:
    """Raise if any number in a nested mapping/list is NaN or infinite (YAML's ``.nan``, ``nan``, ``inf``)."""
    if isinstance(node, dict):
        for k, v in node.items():
            check_finite(v, f"{name}.{k}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            check_finite(v, f"{name}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ValueError(f"{name}={node} is not a finite number")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from a (possibly nested) dict; unknown keys are an error, so is NaN/inf anywhere."""
    check_finite(data, cls.__name__)
    types_ = _field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        raise KeyError(f"unknown {cls.__name__} keys {sorted(unknown)}; allowed: {sorted(types_)}")
    kwargs = {k: convert(v, types_[k], f"{cls.__name__}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> JSON-friendly dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["a.b=3", "c=[1,2]"]`` -> nested ``{"a": {"b": "3"}, "c": "[1,2]"}`` (strings; typed later)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r} sets a field inside a non-mapping")
        node[parts[-1]] = value
    return out


def merge_dicts(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``extra`` wins, nested mappings are merged."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(cfg: T, overrides: dict[str, Any] | list[str]) -> T:
    """Return a copy of dataclass ``cfg`` with overrides applied and type-checked."""
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(list(overrides))
    return from_dict(type(cfg), merge_dicts(to_dict(cfg), overrides))


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Load a YAML (or JSON) recipe into a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} must be a mapping at top level")
    return data
