"""The README's first command: a captioned grid from a shipped model plus its judge score."""
from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["quickstart", "captioned_grid"]


def captioned_grid(images: torch.Tensor, captions: list[str], marks: list[bool] | None = None, cols: int = 4, cell: int = 128) -> Image.Image:
    """Upscaled images with their prompt underneath (green/red frame = judge says right/wrong)."""
    font = ImageFont.load_default()
    text_h = 52
    rows = (len(images) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (cell + 8), rows * (cell + text_h + 8)), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for i, (img, cap) in enumerate(zip(images, captions)):
        x, y = (i % cols) * (cell + 8) + 4, (i // cols) * (cell + text_h + 8) + 4
        pil = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((cell, cell), Image.NEAREST)
        canvas.paste(pil, (x, y))
        if marks is not None:
            draw.rectangle([x - 2, y - 2, x + cell + 1, y + cell + 1], outline=(0, 200, 0) if marks[i] else (220, 0, 0), width=2)
        draw.multiline_text((x, y + cell + 3), "\n".join(textwrap.wrap(cap, 24)[:4]), fill=(230, 230, 230), font=font, spacing=1)
    return canvas


def quickstart(ckpt: str | Path, out: str | Path = "out/quickstart.png", n: int = 100) -> dict:
    import mmgen
    from mmgen.eval.generation import judge_pipeline
    from mmgen.eval.judge import judge

    pipe = mmgen.load(ckpt)  # a missing folder: FileNotFoundError naming it
    ckpt = pipe.path
    sampler = pipe.sampler  # the folder's sampler.json, read by the pipeline
    info = pipe.describe()
    print(f"model {ckpt.name}: {info['generator']} on {info['tokenizer']}, {info['params'] / 1e6:.2f}M params, {info['forward_passes']} forward passes per image")
    t0 = time.perf_counter()
    one = judge_pipeline(pipe, n=n, objects=1, sampler=sampler)
    two = judge_pipeline(pipe, n=n, objects=2, sampler=sampler)
    seconds = time.perf_counter() - t0
    k = 8
    images = torch.cat([one["images"][:k], two["images"][:k]])
    prompts = one["prompts"][:k] + two["prompts"][:k]
    marks = [judge(img.permute(1, 2, 0).numpy(), p).whole for img, p in zip(images, prompts)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    captioned_grid(images, prompts, marks).save(out)
    result = {
        "checkpoint": str(ckpt.resolve()),
        "one_object_accuracy": one["whole"],
        "two_object_accuracy": two["whole"],
        "prompts_per_setting": n,
        "images_per_second": 2 * n / seconds,
        "sampler": one["sampler"],
        "grid": str(out),
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out} (16 samples with their prompts; green frame = judged correct)")
    print(f"shapes judge, whole-prompt accuracy on {n} fresh prompts each: one object {one['whole']:.3f}, two objects {two['whole']:.3f} ({2 * n / seconds:.1f} images/s)")
    return result
