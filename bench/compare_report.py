"""The report of ``mmgen bench compare``: ``compare.json``, ``compare.md`` (table + protocol) and two charts.

Everything here reads the rows and the run's ``meta`` only (``meta["metric"]`` picks the accuracy
and speed columns: shapes judge, digits classifier or the video judge), so the report can be
rebuilt from ``compare.json`` without re-running anything.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mmgen.modeling import write_json_atomic

__all__ = ["markdown_table", "markdown_report", "write_plots", "write_report"]

# metric -> (accuracy columns, speed column); a column is (header, row key, decimals)
_ACCURACY = {
    "judge": [("judge 1-obj ↑", "judge_1obj", 3), ("judge 2-obj ↑", "judge_2obj", 3)],
    "digits": [("digits acc ↑", "digits_acc", 3)],
    "video": [("judge whole ↑", "judge_video", 3), ("motion ↑", "judge_direction", 3)],
}
_SPEED = {
    "judge": [("sampling img/s", "images_per_s", 1)],
    "digits": [("sampling img/s", "images_per_s", 1)],
    "video": [("clips/s", "videos_per_s", 2), ("frames/s", "frames_per_s", 1)],
}
_HEADLINE = {"judge": ("judge_1obj", "judge accuracy, one-object prompts"), "digits": ("digits_acc", "digits accuracy"),
             "video": ("judge_video", "video judge, whole-prompt accuracy")}


def _fmt(v: Any, digits: int) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown_table(rows: Sequence[dict[str, Any]], metric: str) -> str:
    """The comparison as one markdown table (accuracy and speed columns follow the world's metric)."""
    fid = "frame FID ↓" if metric == "video" else "FID ↓"
    tokens = "tokens/clip" if metric == "video" else "tokens"
    cols = [("paradigm", "title", 0), ("tokenizer", "tokenizer_class", 0), (tokens, "tokens_per_image", 0),
            ("params (M)", "params_M", 2), ("steps", "steps", 0), (fid, "fid", 1), *_ACCURACY[metric],
            ("train (s)", "train_s", 1), *_SPEED[metric], ("passes/sample", "forward_passes", 0)]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        r = {**r, "params_M": r["params"] / 1e6}
        lines.append("| " + " | ".join(_fmt(r.get(k), d) for _, k, d in cols) + " |")
    return "\n".join(lines)


def markdown_report(meta: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    b, t, s, f = meta["backbone"], meta["train"], meta["sampler"], meta["fid"]
    video = meta["metric"] == "video"
    shipped = all(r["tokenizer"].startswith("checkpoints/") for r in rows)
    tok_note = ("Tokenizers are the shipped pre-trained ones (`checkpoints/`), frozen: only the generators are trained here."
                if shipped else "Tokenizers are trained first (folders in compare.json), then frozen while the generators train.")
    what = "frames of the sampled clips" if video else "samples per paradigm (the accuracy columns' images)"
    fid_note = (f"{'Frame FID' if video else 'FID'}: {rows[0]['fid_n'] if rows else 0} {what} against "
                f"up to {f['n_ref']} {'frames' if video else 'images'} of the `{meta['world']}` training split, Inception weights sha256 "
                f"{str(f.get('weights_sha256'))[:12]}. Few samples bias FID upwards: compare rows of this table only.")
    speed = f"speed is the best of several batches of {meta['speed_batch']} {'clips' if video else 'images'}, tokenizer decoding included"
    return "\n".join([
        f"## Paradigm comparison on `{meta['world']}` ({meta['budget']} steps)", "",
        f"Command: `{meta['command'] or 'run_comparison(...)'}` ({meta['date']}, {meta['machine']}).", "",
        f"Every row: the same data ({meta['data']}), transformer {b['dim']} wide × {b['depth']} layers × {b['heads']} heads, "
        f"batch {t['batch_size']}, lr {t['lr']} (warmup {t['warmup_steps']}, cosine), {t['steps']} optimizer steps, "
        f"EMA {t['ema_decay']}, seed {t['seed']}. {tok_note} Params count the whole generator (embeddings and heads differ by paradigm). "
        f"Sampling: cfg {s['cfg_scale']}, temperature {s['temperature']}, top-k {s['top_k']}, KV cache; "
        f"accuracy on {meta['n_eval']} fresh prompts (or labels) per column; {speed}. Train time is the training loop only.",
        "", fid_note, "", markdown_table(rows, meta["metric"]), "",
        "Plots beside this table: `compare_loss.png` (training loss of every paradigm) and "
        "`compare_quality_speed.png` (accuracy against sampling speed, FID in the labels).", ""])


def write_plots(out_dir: str | Path, meta: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[Path]:
    """``compare_loss.png`` (every paradigm's loss curve) and ``compare_quality_speed.png``."""
    from mmgen.eval.plots import curves_png, read_losses, scatter_png

    out = Path(out_dir)
    metric = meta["metric"]
    curves = {r["paradigm"]: read_losses(out / "runs" / r["paradigm"] / "metrics.jsonl") for r in rows}
    acc, label = _HEADLINE[metric]
    (xlabel, speed, _), *_ = _SPEED[metric]
    points = {f"{r['paradigm']} (FID {_fmt(r.get('fid'), 1)})": (r.get(speed), r.get(acc)) for r in rows}
    return [curves_png(curves, out / "compare_loss.png", f"{meta['world']}: training loss, {meta['budget']} steps",
                       ylabel="training loss (each paradigm's own objective)"),
            scatter_png(points, out / "compare_quality_speed.png", f"{xlabel} (batch {meta['speed_batch']})",
                        label, f"{meta['world']}: quality vs speed")]


def write_report(out_dir: str | Path, meta: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    """``compare.json`` (everything), ``compare.md`` (the table with how it was made) and the plots."""
    out = Path(out_dir)
    write_json_atomic(out / "compare.json", {"meta": meta, "rows": list(rows)})
    (out / "compare.md").write_text(markdown_report(meta, rows))
    write_plots(out, meta, rows)
