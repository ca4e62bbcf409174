"""Charts for reports: curves on one chart (training losses, accuracies), labelled scatter plots.

matplotlib with the non-interactive Agg backend (no display needed); each function writes one
PNG and returns its path.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

__all__ = ["curves_png", "scatter_png", "read_losses"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def read_losses(metrics: str | Path) -> tuple[list[int], list[float]]:
    """(steps, losses) from a run's ``metrics.jsonl``; empty lists when it does not exist."""
    path = Path(metrics)
    if not path.is_file():
        return [], []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["step"] for r in rows], [r["loss"] for r in rows]


def curves_png(curves: dict[str, tuple[Sequence[int], Sequence[float]]], out: str | Path, title: str = "",
               ylabel: str = "training loss", xlabel: str = "optimizer step", log_y: bool | None = None) -> Path:
    """One line per name; ``log_y=None`` uses a log scale when every value is positive (losses span decades)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    positive = True
    for name, (steps, values) in curves.items():
        if len(steps):
            ax.plot(steps, values, label=name, linewidth=1.4)
            positive &= min(values) > 0
    if log_y or (log_y is None and positive):
        ax.set_yscale("log")
    ax.legend()
    return _finish(plt, fig, ax, out, xlabel, ylabel, title)


def scatter_png(points: dict[str, tuple[float, float]], out: str | Path, xlabel: str, ylabel: str,
                title: str = "", log_x: bool = True) -> Path:
    """Labelled points ``name -> (x, y)``; points with a missing coordinate are left out."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=120)
    shown = {n: (x, y) for n, (x, y) in points.items() if x is not None and y is not None}
    for name, (x, y) in shown.items():
        ax.scatter([x], [y], s=40)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
    if log_x and shown and all(x > 0 for x, _ in shown.values()):
        ax.set_xscale("log")
    ax.margins(0.2)
    return _finish(plt, fig, ax, out, xlabel, ylabel, title)


def _finish(plt, fig, ax, out: str | Path, xlabel: str, ylabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
