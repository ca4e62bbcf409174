"""Which checkpoints the demo offers, what each one is, and one shared loaded copy of each.

The page only ever names a model by the key this module found while scanning ``models_dir``; a
key is looked up here, never joined onto a path, so nothing typed in the page reaches the
filesystem. Scanning reads only JSON and the safetensors header (no torch), so listing is instant
even for big checkpoints; weights load on first use, once, under a lock, and are shared by every
request.
"""
from __future__ import annotations

import json
import re
import struct
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mmgen import SHIPPED
from mmgen.modeling import count_params, module_class
from mmgen.pipeline import recommended_sampler, sampler_fields
from mmgen.sampler import SamplerConfig

__all__ = ["ModelInfo", "ModelRegistry", "InputError", "scan", "describe_folder", "without_paths"]
PREFERRED = ("shapes-var", "shapes-video-nbp")  # selected when the page opens: the quickstart's model and the fastest video model
MAX_DEPTH = 3  # models_dir/run/model/config.json is the deepest layout a training run writes

PARADIGMS = {  # generator class -> what the picker calls it (the README's names)
    "VARGenerator": "VAR next-scale",
    "RasterGenerator": "raster next-token",
    "RARGenerator": "RAR random-order next-token",
    "XARGenerator": "xAR next-entity (flow head)",
    "NBPGenerator": "NBP next-block",
    "UnifiedGenerator": "Emu3-style unified",
}
_PATH = re.compile(r"(?<![\w.:/])(?:[A-Za-z]:)?[/\\](?:[\w.\-]+[/\\])+([\w.\-]+)")


def without_paths(text: str) -> str:
    """A message for the page: every absolute path shortened to its last part (the page never shows where files live)."""
    return _PATH.sub(lambda m: m.group(1), text)


class InputError(ValueError):
    """Bad input from the page: shown to the user as is, never a crash."""


@dataclass
class ModelInfo:
    """What the picker shows about one checkpoint folder (read without loading weights)."""

    name: str  # key relative to models_dir: what the page sends back
    path: Path
    shipped: bool = False
    problem: str = ""  # non-empty: the folder is unusable and this says why
    generator: str = "?"
    tokenizer: str = "?"
    params: int = 0
    image_size: int = 0
    cond: str = "none"  # text | class | none
    num_classes: int = 0
    text_context: int = 0
    layout: dict = field(default_factory=dict)
    video: bool = False
    frames: int = 0
    flow: bool = False  # continuous flow head: flow steps apply
    flextok: bool = False  # truncatable 1D tokens: a token budget applies
    recommended: SamplerConfig = field(default_factory=SamplerConfig)  # sampler.json, read by the pipeline's one reader
    sampler_fields: tuple[str, ...] = ()  # the SamplerConfig fields this generator uses
    block: str = ""  # NBP: "token" is the token-by-token baseline, else a block per pass
    grammar: bool = False  # a closed text vocabulary: the shapes worlds' caption grammar applies

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def paradigm(self) -> str:
        if self.generator == "NBPGenerator" and self.block == "token":
            return "token by token"
        name = PARADIGMS.get(self.generator, self.generator.removesuffix("Generator") or "?")
        tokens = {"sequence": " over FlexTok 1D tokens", "segments": " over subobject segments"}.get(self.layout.get("type", ""), "")
        return name + tokens

    @property
    def experimental(self) -> bool:
        """The README calls the FlexTok-style model experimental (low judge accuracy)."""
        return "flextok" in self.tokenizer.lower() or self.layout.get("type") == "sequence"

    @property
    def streaming(self) -> str:
        """How partial results arrive: per scale/block/entity (an image each) or per token."""
        kind = self.layout.get("type", "")
        if kind == "grid":
            return "token by token (progress + rows as they fill)"
        if kind == "scales":
            return "scale by scale (the image sharpens)"
        return "step by step"

    def label(self) -> str:
        if not self.ok:
            return f"{self.name} (unusable: {self.problem[:60]})"
        kind = "text-to-video" if self.video else {"text": "text-to-image", "class": "class-conditional"}.get(self.cond, "unconditional")
        tag = " · experimental" if self.experimental else ""
        return f"{self.name} · {self.paradigm} · {kind} · {self.params / 1e6:.1f}M{tag}"

    def markdown(self) -> str:
        if not self.ok:
            return f"**{self.name}** cannot be used: {self.problem}"
        cond = {"text": "text prompt", "class": f"class label 0–{self.num_classes - 1} (no prompt)", "none": "none"}.get(self.cond, self.cond)
        rows = [("paradigm", self.paradigm + (" (experimental)" if self.experimental else "")), ("tokenizer", self.tokenizer), ("size", f"{self.params / 1e6:.2f}M parameters"),
                ("output", f"{self.image_size}×{self.image_size}" + (f", {self.frames} frames" if self.video else "")),
                ("condition", cond), ("streaming", self.streaming)]
        defaults = {f.name: f.default for f in fields(SamplerConfig)}
        shown = {k: v for k, v in asdict(self.recommended).items()
                 if k in self.sampler_fields and k != "seed" and (v != defaults[k] or k in ("cfg_scale", "temperature"))}
        rows.append(("recommended sampler", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in shown.items())))
        return "\n".join([f"| model | {self.name} |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def describe_folder(path: Path, name: str, shipped: bool = False) -> ModelInfo:
    """Read config.json, tokenizer/config.json, sampler.json and the weights header; never raises."""
    info = ModelInfo(name=name, path=path, shipped=shipped)
    try:
        meta = json.loads((path / "config.json").read_text())
        cfg = meta.get("config", {})
        info.generator = str(meta.get("class", "?"))
        if meta.get("kind") != "generator":
            raise ValueError(f"config.json describes a {meta.get('kind', 'unknown')}, not a generator")
        tok = json.loads((path / "tokenizer" / "config.json").read_text())
        info.tokenizer = str(tok.get("class", "?"))
        info.params = count_params(path / "model.safetensors")
        info.image_size = int(cfg.get("image_size", 0))
        info.cond = str(cfg.get("cond", "none"))
        info.num_classes = int(cfg.get("num_classes", 0))
        info.text_context = int(cfg.get("text_context", 0))
        info.layout = dict(cfg.get("layout", {}))
        # video: a (t, h, w) layout, an explicit flag, or a frame count in the config
        info.video = bool(cfg.get("video") or "t" in info.layout or info.layout.get("type") in ("frames", "video") or cfg.get("frames"))
        info.frames = int(cfg.get("frames") or info.layout.get("t") or 0)
        info.block = str(cfg.get("block", ""))
        info.grammar = info.cond == "text" and bool(cfg.get("text_vocab"))
        info.sampler_fields = sampler_fields(module_class(info.generator))  # what the generator class declares it reads
        info.flow = "flow_steps" in info.sampler_fields  # only flow heads read the flow settings
        info.flextok = "token_budget" in info.sampler_fields and ("flextok" in info.tokenizer.lower() or info.layout.get("type") in ("1d", "flex", "sequence"))
        info.recommended = recommended_sampler(path)
    except FileNotFoundError as e:
        info.problem = f"missing {Path(e.filename).relative_to(path) if e.filename else 'file'}"
    except (ValueError, KeyError, TypeError, struct.error, OSError) as e:
        info.problem = without_paths(f"corrupt: {e}")
    return info


def scan(models_dir: str | Path) -> list[ModelInfo]:
    """Every generator folder under ``models_dir`` (depth <= 3): shipped first, experimental last, text-conditional first, then by name."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    found: list[ModelInfo] = []

    def walk(folder: Path, depth: int) -> None:
        if (folder / "config.json").is_file() or (folder / "model.safetensors").is_file():
            name = folder.relative_to(root).as_posix() if folder != root else folder.name
            shipped = folder.resolve().parent == SHIPPED
            found.append(describe_folder(folder, name, shipped))
            return  # a pipeline folder: its tokenizer/ is part of it, not another model
        if depth >= MAX_DEPTH:
            return
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            walk(sub, depth + 1)

    walk(root, 0)
    return sorted(found, key=lambda m: (not m.shipped, m.experimental, m.cond != "text", m.name))


class ModelRegistry:
    """The models of one ``models_dir`` and an LRU of loaded pipelines shared by all requests."""

    def __init__(self, models_dir: str | Path, device: str = "cpu", max_loaded: int = 4) -> None:
        self.models_dir = Path(models_dir)
        self.device = device
        self.max_loaded = max_loaded
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._infos: dict[str, ModelInfo] = {}
        self.rescan()

    def rescan(self) -> list[ModelInfo]:
        infos = scan(self.models_dir)
        with self._lock:
            self._infos = {m.name: m for m in infos}
            for gone in [k for k in self._loaded if k not in self._infos]:
                del self._loaded[gone]
        return infos

    def put(self, info: ModelInfo, pipe: Any = None) -> None:
        """Offer a model that is not a folder under ``models_dir`` (embedding code, tests), optionally already loaded."""
        with self._lock:
            self._infos[info.name] = info
            if pipe is not None:
                self._loaded[info.name] = pipe

    def list(self, video: bool | None = None) -> list[ModelInfo]:
        return [m for m in self._infos.values() if video is None or m.video == video]

    def default(self, video: bool = False) -> ModelInfo | None:
        """The model a tab starts with: a preferred shipped one, else the first usable one."""
        models = self.list(video=video)
        usable = [m for m in models if m.ok]
        return next((m for m in usable if m.name in PREFERRED), usable[0] if usable else (models[0] if models else None))

    def info(self, name: str | None) -> ModelInfo:
        if not name:
            raise InputError("choose a model (none was found in the models folder)" if not self._infos else "choose a model")
        if name not in self._infos:  # page input is only ever a key of this dict
            raise InputError(f"unknown model {name!r}; available: {', '.join(sorted(self._infos))}")
        return self._infos[name]

    def get(self, name: str):
        """The loaded pipeline for ``name`` (loaded once, then shared); InputError if unusable."""
        info = self.info(name)
        if not info.ok:
            raise InputError(f"the checkpoint {name!r} cannot be used: {info.problem}")
        with self._lock:  # one loader at a time: a model is never loaded twice
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            if not info.path.is_dir():
                raise InputError(f"the checkpoint {name!r} no longer exists in the models folder; rescan the models (Advanced)")
            from mmgen.pipeline import Pipeline

            try:
                pipe = Pipeline.from_pretrained(info.path, device=self.device)
            except Exception as e:  # corrupt weights, mismatched shapes, ... : a message, not a crash
                raise InputError(without_paths(f"the checkpoint {name!r} could not be loaded: {e}")) from e
            self._loaded[name] = pipe
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
            return pipe
