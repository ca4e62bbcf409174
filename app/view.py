"""What the page shows, as HTML and CSS: arena tiles, the leaderboard, progress bars, the header.

Pictures are inlined as data URIs (PNG, and H.264 MP4 for clips), so the page never carries a
file path and a tile needs no file server. No gradio here.
"""
from __future__ import annotations

import base64
import html
import io
import tempfile
from pathlib import Path

import numpy as np
import torch

from mmgen.app.arena import ArenaRun, Tile
from mmgen.images import write_video

__all__ = ["CSS", "HEADER", "png_uri", "mp4_uri", "upscale", "arena_html", "leaderboard_html", "progress_html", "now_html", "error_html"]

HEADER = (
    "<b>mmgen</b>: autoregressive image and video generation. Raster, RAR, VAR, xAR, NBP and Emu3-style unified on <i>one</i> "
    "shared transformer, tokenizer contract, sampler and judge; the <b>Arena</b> runs one prompt through all of them. README:"
)
CSS = """
#mmgen-header { font-size: 0.95rem; padding: 2px 0 4px 0; }
#mmgen-header a { margin: 0 2px; }
.mmgen-pixels img, .mmgen-tile img, .mmgen-tile video, .mmgen-strip img { image-rendering: pixelated; }
.mmgen-chips .wrap { gap: 4px !important; }
.mmgen-chips label { padding: 2px 8px !important; border-radius: 999px !important; min-height: 0 !important; }
.mmgen-status { min-height: 1.6em; }
#mmgen-links { gap: 2px; flex-wrap: nowrap !important; flex: 0 0 auto !important; width: auto !important; }
#mmgen-links button { white-space: nowrap; width: auto !important; min-width: max-content !important; flex: 0 0 auto !important; }
.mmgen-strip .caption-label { display: none; }
#mmgen-links button { background: none; border: none; box-shadow: none; color: #c2410c; text-decoration: underline; padding: 0 4px; min-width: 0; }
.mmgen-examples button { justify-content: flex-start; text-align: left; font-weight: 400; }
.mmgen-examples button img { width: 32px !important; height: 32px !important; max-height: 32px !important; image-rendering: pixelated; }
.mmgen-error { color: #b42318; font-weight: 600; }
.mmgen-bar { height: 8px; background: #e4e7ec; border-radius: 4px; overflow: hidden; margin: 4px 0; }
.mmgen-bar > div { height: 100%; background: #f97316; }
.mmgen-tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(110px, 1fr)); gap: 5px; }
.mmgen-tile { border: 1px solid #d0d5dd; border-radius: 8px; padding: 4px; font-size: 11px; line-height: 1.25; overflow-wrap: anywhere; }
.mmgen-now { display: flex; gap: 10px; align-items: center; }
.mmgen-now img, .mmgen-now .mmgen-empty { width: 64px; height: 64px; image-rendering: pixelated; background: #111; flex: 0 0 64px; }
.mmgen-pixels .thumbnail-item img, .mmgen-strip .thumbnail-item img { object-fit: contain !important; }
.mmgen-now > div { flex: 1 1 auto; }
.mmgen-tile.running { border-color: #f97316; box-shadow: 0 0 0 2px #fed7aa; }
.mmgen-tile.right { border-color: #16a34a; }
.mmgen-tile.wrong { border-color: #dc2626; }
.mmgen-tile img, .mmgen-tile video { width: 96px; height: 96px; display: block; margin: 0 auto 3px auto; background: #111; }
.mmgen-tile .name { font-weight: 700; }
.mmgen-badge { display: inline-block; padding: 0 6px; border-radius: 999px; font-size: 11px; background: #eef2ff; color: #3730a3; }
.mmgen-badge.exp { background: #fef3c7; color: #92400e; }
.mmgen-ok { color: #15803d; } .mmgen-no { color: #b91c1c; }
.mmgen-board table { font-size: 13px; width: 100%; }
"""


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of an (H,W,3) or (T,H,W,3) uint8 array (tiny samples stay crisp)."""
    return image.repeat(scale, -3).repeat(scale, -2) if scale > 1 else image


def png_uri(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def mp4_uri(frames: np.ndarray, fps: int = 4) -> str:
    """(T,H,W,3) uint8 -> an H.264 MP4 data URI (``mmgen.images.write_video``; odd sides padded: H.264 needs even ones)."""
    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)))
    with tempfile.TemporaryDirectory(prefix="mmgen-") as d:
        path = write_video(torch.from_numpy(np.ascontiguousarray(frames)), Path(d) / "clip.mp4", fps=fps)
        return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def progress_html(step: int, total: int, text: str) -> str:
    pct = 100 * step // max(total, 1)
    return f"<div class='mmgen-bar' role='progressbar' aria-valuenow='{pct}'><div style='width:{pct}%'></div></div>{html.escape(text)}"


def now_html(run: ArenaRun, side: int = 64) -> str:
    """The arena's progress where the user looks: the running model's live preview beside the overall and the per-model bar."""
    k = max(run.current, 0)
    t = run.tiles[k]
    img = f"<img id='arena-now' alt='live preview' src='{png_uri(upscale(t.preview, max(1, side // t.preview.shape[0])))}'>" if t.preview is not None else \
        "<div id='arena-now' class='mmgen-empty'></div>"
    bars = progress_html(k + 1, len(run.tiles), f"model {k + 1} of {len(run.tiles)}: {t.model} ({t.paradigm})")
    bars += progress_html(t.step, t.total, f"step {t.step} of {t.total or '?'}")
    return f"<div class='mmgen-now'>{img}<div>{bars}</div></div>"


def error_html(message: str) -> str:
    return f"<span class='mmgen-error'>⚠ {html.escape(message)}</span>"


def _mark(ok: bool) -> str:
    return "<span class='mmgen-ok'>✓</span>" if ok else "<span class='mmgen-no'>✗</span>"


def _tile(t: Tile, k: int, side: int) -> str:
    state = t.status if t.status != "done" or t.whole is None else ("right" if t.whole else "wrong")
    badge = "<span class='mmgen-badge exp'>experimental</span>" if t.experimental else ""
    kind = "video" if t.video else "image"
    scale = max(1, side // t.preview.shape[0]) if t.preview is not None else 1  # 32-px samples shown crisp, big ones as they are
    if t.frames is not None:
        t.media = t.media or mp4_uri(upscale(t.frames, scale))  # encoded once, not on every update of the page
        media = f"<video controls autoplay loop muted playsinline src='{t.media}'></video>"
    elif t.status == "done":
        t.media = t.media or png_uri(upscale(t.preview, scale))
        media = f"<img alt='{html.escape(t.model)}' src='{t.media}'>"
    elif t.preview is not None:
        media = f"<img alt='{html.escape(t.model)}' src='{png_uri(upscale(t.preview, scale))}'>"
    else:
        media = "<div style='width:96px;height:96px;margin:0 auto 3px auto;background:#222'></div>"
    lines = [f"<div class='name'>{html.escape(t.model)}</div>",
             f"<span class='mmgen-badge'>{html.escape(t.paradigm)}</span> {badge}",
             f"<div>{kind}: <i>{html.escape(t.condition)}</i></div>"]
    if t.status == "running":
        lines.append(progress_html(t.step, t.total, f"step {t.step}/{t.total or '?'}"))
    elif t.status == "waiting":
        lines.append("<div>waiting…</div>")
    elif t.status == "error":
        lines.append(error_html(t.error))
    else:
        lines.append(f"<div>{t.passes} · {t.seconds:.2f}s</div>")
        for what, attrs in t.verdict:
            marks = " ".join(f"{a.replace('color', 'colour')} {_mark(ok)}" for a, ok in attrs.items())
            lines.append(f"<div class='verdict'>{html.escape(what)}: {marks}</div>")
        if t.whole is None:
            lines.append("<div>no judge for this world</div>")
    return f"<div class='mmgen-tile {state}' data-model='{html.escape(t.model)}' data-status='{t.status}' id='arena-tile-{k}'>{media}{''.join(lines)}</div>"


def arena_html(run: ArenaRun | None, side: int = 96) -> str:
    """The tiles; pictures upscaled by a whole factor towards ``side`` pixels."""
    if run is None:
        return "<div class='mmgen-tiles'></div>"
    return "<div class='mmgen-tiles'>" + "".join(_tile(t, k, side) for k, t in enumerate(run.tiles)) + "</div>"


def leaderboard_html(rows: list[dict]) -> str:
    if not rows:
        return "<div class='mmgen-board'><i>The session's leaderboard fills as you run the arena.</i></div>"
    def accuracy(r: dict) -> str:
        return "—" if r["accuracy"] is None else f"{100 * r['accuracy']:.0f}% of {r['judged']}"

    body = "".join(
        f"<tr><td>{i + 1}</td><td>{html.escape(r['model'])}</td><td>{html.escape(r['paradigm'])}</td>"
        f"<td>{accuracy(r)}</td><td>{r['mean_seconds']:.2f}s</td><td>{r['runs']}</td></tr>" for i, r in enumerate(rows))
    return ("<div class='mmgen-board'><table><thead><tr><th>#</th><th>model</th><th>paradigm</th><th>judged right</th><th>mean time</th><th>runs</th>"
            f"</tr></thead><tbody>{body}</tbody></table></div>")
