"""Model registry (timm's idea): named presets -> ``create_tokenizer`` / ``create_generator``.

A preset is a ConfigModule class plus default config values. ``create_*(name, **overrides)``
applies typed overrides on top. Tests are parametrized over ``list_models()``.

This module imports no model: the model packages register their presets when imported, and the
package root (``mmgen.create_*``, ``mmgen.list_models``) imports them before its first lookup.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmgen.config import apply_overrides, from_dict

__all__ = ["register_preset", "create_model", "create_tokenizer", "create_generator", "list_models", "preset_info"]


@dataclass(frozen=True)
class Preset:
    name: str
    cls: type
    defaults: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()  # e.g. ("tiny",) for CPU-test presets, ("reference",) for paper sizes

    @property
    def kind(self) -> str:
        return self.cls.kind


_PRESETS: dict[str, Preset] = {}


def register_preset(name: str, cls: type, tags: tuple[str, ...] = (), **defaults: Any) -> None:
    if name in _PRESETS:
        raise KeyError(f"preset {name!r} is already registered")
    _PRESETS[name] = Preset(name, cls, defaults, tuple(tags))


def preset_info(name: str) -> Preset:
    if name not in _PRESETS:
        hint = "" if _PRESETS else " (no presets registered yet: use mmgen.create_* / mmgen.list_models, which import the model packages)"
        raise KeyError(f"unknown model {name!r}; available: {sorted(_PRESETS)}{hint}")
    return _PRESETS[name]


def create_model(name: str, **overrides: Any):
    """Build preset ``name`` with keyword overrides (typed by the config dataclass)."""
    p = preset_info(name)
    # A default may be a zero-argument callable, resolved lazily (e.g. a vocabulary that needs open_clip).
    defaults = {k: v() if callable(v) else v for k, v in p.defaults.items()}
    cfg = from_dict(p.cls.config_class, defaults)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return p.cls(cfg)


def create_tokenizer(name: str, **overrides: Any):
    p = preset_info(name)
    if p.kind != "tokenizer":
        raise ValueError(f"{name!r} is a {p.kind}, not a tokenizer")
    return create_model(name, **overrides)


def create_generator(name: str, **overrides: Any):
    p = preset_info(name)
    if p.kind != "generator":
        raise ValueError(f"{name!r} is a {p.kind}, not a generator")
    return create_model(name, **overrides)


def list_models(kind: str | None = None, tag: str | None = None) -> list[str]:
    """Names of registered presets, optionally filtered by kind and tag."""
    return sorted(n for n, p in _PRESETS.items() if (kind is None or p.kind == kind) and (tag is None or tag in p.tags))
