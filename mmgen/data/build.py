"""One string names a dataset: ``build_dataset("shapes:objects=1")``, ``"folder:/data"``, ...

Recipes and the command line carry data as a spec string, so every entry point builds data the
same way. The built-in kinds are registered here, each importing its module only when built (this
module imports no dataset module); other code adds kinds with :func:`register_dataset`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from mmgen.config import convert

__all__ = ["build_dataset", "register_dataset", "list_datasets", "parse_spec", "collate"]


@dataclass(frozen=True)
class _Kind:
    factory: Callable[..., Any]
    options: dict[str, type] = field(default_factory=dict)  # typed key=value options after the colon
    takes_path: bool = False  # the text after the colon is a path, not options


_KINDS: dict[str, _Kind] = {}


def register_dataset(name: str, factory: Callable[..., Any], options: dict[str, type] | None = None, takes_path: bool = False) -> None:
    """Add a spec kind. ``factory(size=, seed=, split=, **options)`` (plus ``path=`` if ``takes_path``)."""
    if name in _KINDS:
        raise KeyError(f"dataset kind {name!r} is already registered")
    _KINDS[name] = _Kind(factory, dict(options or {}), takes_path)


def list_datasets() -> list[str]:
    """Registered spec kinds."""
    return sorted(_KINDS)


def parse_spec(spec: str) -> tuple[str, str]:
    """``"shapes:objects=1"`` -> ``("shapes", "objects=1")`` (split at the first colon)."""
    kind, _, rest = spec.partition(":")
    return kind.strip(), rest.strip()


def _parse_options(kind: str, text: str, allowed: dict[str, type]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"option {item!r} in {kind!r} spec must look like key=value")
        if key not in allowed:
            raise ValueError(f"unknown option {key!r} for {kind!r}; allowed: {sorted(allowed) or 'none'}")
        out[key] = convert(value.strip(), allowed[key], f"{kind}.{key}")
    return out


def build_dataset(spec: str, size: int = 32, seed: int = 0, split: str = "train", **kw: Any):
    """Build a dataset from a spec string.

    Args:
        spec: ``shapes`` / ``shapes:objects=1,length=1000``, ``digits``, ``folder:/path``,
            ``photos`` (crops of the photos scikit-image/-learn ship), ``shards:/dir`` or
            ``shards:/data/s-{000000..000009}.tar`` (local files or http(s) only), or the path
            of an existing image folder (when it is not also a kind's name).
        size: image side.
        seed: world seed.
        split: ``train`` / ``test`` (``val`` for shapes, ``all`` for digits); folders and shards
            ignore it (they are whatever they hold).
        **kw: extra keyword arguments for the dataset class (override spec options).

    Raises:
        ValueError: unknown kind (the allowed ones are listed) or option.
    """
    kind, rest = parse_spec(spec)
    kinds = list_datasets()
    if kind not in _KINDS and Path(spec).is_dir():
        kind, rest = "folder", spec
    if kind not in _KINDS:
        raise ValueError(f"unknown dataset spec {spec!r}; allowed kinds: {kinds} (e.g. 'shapes:objects=1', 'folder:/path')")
    k = _KINDS[kind]
    if k.takes_path:
        if not rest:
            raise ValueError(f"spec {spec!r} needs a path: '{kind}:/path'")
        return k.factory(path=rest, size=size, seed=seed, split=split, **kw)
    options = _parse_options(kind, rest, k.options)
    options.update(kw)
    return k.factory(size=size, seed=seed, split=split, **options)


def _shapes(size: int, seed: int, split: str, **kw: Any):
    from mmgen.data.shapes import ShapesWorld

    return ShapesWorld(size=size, seed=seed, split=split, **kw)


def _digits(size: int, seed: int, split: str, **kw: Any):
    from mmgen.data.digits import DigitsWorld

    return DigitsWorld(size=size, split=split, seed=seed, **kw)


def _photos(size: int, seed: int, split: str, **kw: Any):
    from mmgen.data.photos import PhotosWorld

    return PhotosWorld(size=size, seed=seed, split=split, **kw)


def _folder(path: str, size: int, seed: int, split: str, **kw: Any):
    from mmgen.data.folders import ImageFolderDataset

    return ImageFolderDataset(path, size=size, **kw)


def _shards(path: str, size: int, seed: int, split: str, **kw: Any):
    from mmgen.data.shards import ShardDataset

    return ShardDataset(path, size=size, seed=seed, **kw)


def _shapes_video(size: int, seed: int, split: str, **kw: Any):
    from mmgen.data.video import ShapesVideoWorld

    return ShapesVideoWorld(size=size, seed=seed, split=split, **kw)


def _shapes_unified(size: int, seed: int, split: str, **kw: Any):
    from mmgen.data.video import UnifiedWorld

    return UnifiedWorld(size=size, seed=seed, split=split, **kw)


def _shapes_frames(size: int, seed: int, split: str, **kw: Any):
    from mmgen.data.video import FramesWorld

    return FramesWorld(size=size, seed=seed, split=split, **kw)


register_dataset("shapes", _shapes, {"objects": str, "length": int})
register_dataset("shapes-video", _shapes_video, {"frames": int, "length": int, "speed": float})
register_dataset("shapes-unified", _shapes_unified, {"frames": int, "tasks": str, "objects": str, "length": int, "speed": float,
                                                     "two_fraction": float})
register_dataset("shapes-frames", _shapes_frames, {"stills": float, "objects": str, "frames": int, "length": int, "speed": float})
register_dataset("digits", _digits)
register_dataset("photos", _photos, {"length": int})
register_dataset("folder", _folder, takes_path=True)
register_dataset("shards", _shards, takes_path=True)


def collate(batch: list[dict]) -> dict:
    """Stack item dicts: ``pixels`` -> (B,...) tensor, ``label`` -> int64 (B,), ``caption`` -> list.

    Raises:
        ValueError: empty batch, or items disagree on which keys they carry.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    keys = set(batch[0])
    for n, item in enumerate(batch):
        if set(item) != keys:
            raise ValueError(f"item {n} has keys {sorted(item)} but item 0 has {sorted(keys)}")
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if key == "caption":
            out[key] = list(values)
        elif key == "label":
            out[key] = torch.as_tensor(values, dtype=torch.long)
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        else:
            out[key] = list(values)
    return out
