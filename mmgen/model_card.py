"""The README.md of a pipeline folder: what the model is, what it scored, how it was made, how to sample.

Generated from the folder's own files only (``config.json``, ``tokenizer/config.json``,
``sampler.json``, ``metrics.json``, ``REPRODUCE.md``), so a card never claims a number the folder
does not carry. ``metrics.json`` is ``{"source": ..., "metrics": [{"name", "value", "n", "note"}]}``.
The YAML header is the Hub's model-card metadata (``huggingface_hub.ModelCardData``).
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from mmgen.modeling import count_params

__all__ = ["model_card", "METRICS_FILE", "REPRODUCE_FILE", "DOC_FILES"]

METRICS_FILE = "metrics.json"
REPRODUCE_FILE = "REPRODUCE.md"
DOC_FILES = (METRICS_FILE, REPRODUCE_FILE, "tuning.json")  # travel with the weights on save/push


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _task(cfg: dict) -> tuple[str, str]:
    """(what the card says, the Hub pipeline tag)."""
    if cfg.get("frames") or cfg.get("layout", {}).get("type") == "frames":
        return "text-to-video", "text-to-video"
    return {"text": ("text-to-image", "text-to-image"), "class": ("class-conditional image generation", "unconditional-image-generation")}.get(
        cfg.get("cond", "none"), ("unconditional image generation", "unconditional-image-generation"))


def _sampling(name: str, cfg: dict, task: str, sampler: dict[str, Any]) -> str:
    cond = {"label": 0} if cfg.get("cond") == "class" else {"prompt": "a red circle moving right" if task == "text-to-video" else "a large red circle at the top left"}
    arg = ", ".join(f"{k}={v!r}" for k, v in cond.items())
    cli = ["mmgen", "sample", "--ckpt", name] + (["--label", "0"] if "label" in cond else ["--prompt", cond["prompt"]])
    cli += ["--n", "4", "--out", "samples.mp4" if task == "text-to-video" else "samples.png"]
    settings = ", ".join(f"`{k}={v}`" for k, v in sampler.items()) or "the SamplerConfig defaults"
    return "\n".join([
        "## How to sample", "",
        f"Both read the recommended settings from `sampler.json` ({settings}); any setting given overrides it.", "",
        "```python", "import mmgen", "", f'pipe = mmgen.load("{name}")  # a folder, or a Hub repo id',
        f"images = pipe({arg}, n=4, seed=0)  # uint8 " + ("(n, 3, T, H, W)" if task == "text-to-video" else "(n, 3, H, W)"),
        "```", "", "```bash", shlex.join(cli), "```", ""])


def _metrics(folder: Path) -> list[str]:
    data = _json(folder / METRICS_FILE)
    rows = data.get("metrics", [])
    if not rows:
        return ["## Measured", "", "No measurements ship with this folder (no `metrics.json`); the repository's `bench/RESULTS.md` may cover it.", ""]
    out = ["## Measured", "", "| metric | value | n | note |", "|---|---|---|---|"]
    for r in rows:
        v = r.get("value")
        out.append(f"| {r.get('name', '?')} | {round(v, 4) if isinstance(v, float) else v} | {r.get('n', '')} | {r.get('note', '')} |")
    if data.get("source"):
        out += ["", f"Source: {data['source']}."]
    return out + [""]


def _training(folder: Path, cfg: dict, tok_meta: dict) -> list[str]:
    out = ["## How it was trained", ""]
    repro = folder / REPRODUCE_FILE
    if repro.is_file():
        body = repro.read_text().strip().splitlines()
        out += ["From `REPRODUCE.md`:", ""] + (body[1:] if body and body[0].startswith("# ") else body)
    else:
        out += ["This folder carries no `REPRODUCE.md`; the model's configuration is below."]
    conf = [f"- generator `{k}`: `{json.dumps(v)}`" for k, v in cfg.items()] + [f"- tokenizer `{k}`: `{json.dumps(v)}`" for k, v in tok_meta.get("config", {}).items()]
    return out + ["", "<details><summary>configuration (config.json, tokenizer/config.json)</summary>", ""] + conf + ["", "</details>", ""]


def model_card(folder: str | Path, name: str | None = None) -> str:
    """The model card (README.md text) of the pipeline folder ``folder``; ``name``: how users refer to it."""
    from huggingface_hub import ModelCardData

    folder = Path(folder)
    name = name or folder.name
    meta = _json(folder / "config.json")
    tok_meta = _json(folder / "tokenizer" / "config.json")
    cfg = meta.get("config", {})
    task, tag = _task(cfg)
    generator, tokenizer = meta.get("class", "?"), tok_meta.get("class", "?")
    sampler = _json(folder / "sampler.json")
    weights = folder / "model.safetensors"
    params = count_params(weights) if weights.is_file() else 0
    data = ModelCardData(library_name="mmgen", pipeline_tag=tag, tags=["mmgen", "autoregressive", generator, tokenizer])
    size = f"{cfg.get('image_size', '?')}×{cfg.get('image_size', '?')}" + (f", {cfg['frames']} frames" if cfg.get("frames") else "")
    lines = [f"---\n{data.to_yaml()}\n---", f"# {name}", "",
             f"An mmgen {task} pipeline: generator `{generator}` ({params / 1e6:.2f}M parameters) over the visual tokenizer "
             f"`{tokenizer}`, {size}. Generated by `mmgen.model_card` from this folder's files.", ""]
    lines += _metrics(folder) + _training(folder, cfg, tok_meta)
    lines.append(_sampling(name, cfg, task, sampler))
    return "\n".join(lines)
