"""Write ``metrics.json`` and the model card ``README.md`` of every shipped checkpoint.

The numbers are collected from the benchmark records in ``bench/results/`` that name the
checkpoint (judge accuracy, FID, digits accuracy, caption accuracy), each with its sample count
and file, so a card only repeats what a benchmark measured. Records of weights that were since
replaced live in ``bench/results/superseded/`` (kept for RESULTS.md's history) and are skipped. Run from the repository root:

    python scripts/model_cards.py            # all of checkpoints/*
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmgen import SHIPPED
from mmgen.model_card import METRICS_FILE, model_card

RESULTS = SHIPPED.parent / "bench" / "results"
SUPERSEDED = "superseded"  # records of checkpoints that were replaced since


def _records(data) -> list[dict]:
    rows = data.get("rows") if isinstance(data, dict) else data
    return [r for r in (rows if isinstance(rows, list) else [data]) if isinstance(r, dict)]


def _checkpoint(rec: dict) -> str:
    samples = rec.get("samples") if isinstance(rec.get("samples"), dict) else {}
    return str(rec.get("checkpoint") or samples.get("checkpoint") or "")


def _metric(rec: dict, source: str) -> dict | None:
    """One record -> one card row, or None if it is not a quality measurement of a checkpoint."""
    n, note = rec.get("n"), f"`bench/results/{source}`"
    if "fid" in rec:
        ref = rec.get("reference", {}).get("spec", "?")
        return {"name": f"FID against `{ref}` (lower is better)", "value": rec["fid"], "n": n, "note": f"{rec.get('n_ref', '?')} reference images; {note}"}
    if "exact" in rec and "valid" in rec:
        objects = f", {rec['objects']}-object images" if "objects" in rec else ""
        return {"name": f"captions: exact match with the prompt{objects}", "value": rec["exact"], "n": n, "note": note}
    if "direction" in rec and "whole" in rec:
        return {"name": "video judge: whole-prompt accuracy (colour, shape, direction)", "value": rec["whole"], "n": n, "note": note}
    if "whole" in rec and "objects" in rec:
        if "whole_per_stream" in rec:
            streams = ", ".join(f"{w:.3f}" for w in rec["whole_per_stream"])
            note = f"{len(rec['whole_per_stream'])} fresh prompt streams ({streams}); {note}"
        return {"name": f"shapes judge: whole-prompt accuracy, {rec['objects']}-object prompts", "value": rec["whole"], "n": n, "note": note}
    if "accuracy" in rec:
        return {"name": "digits: accuracy of a classifier of real digits", "value": rec["accuracy"], "n": n, "note": note}
    return None


def collect(name: str) -> list[dict]:
    rows = []
    for f in sorted(RESULTS.rglob("*.json")):
        if SUPERSEDED in f.relative_to(RESULTS).parts:
            continue
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for rec in _records(data):
            if _checkpoint(rec).rstrip("/").endswith(f"checkpoints/{name}") and (row := _metric(rec, f.relative_to(RESULTS).as_posix())):
                rows.append(row)
                if "frame_consistency" in rec:  # a video judge record: the per-frame column next to the clip's
                    rows.append({**row, "name": "video judge: per-frame consistency (frames with the prompt's colour and shape)",
                                 "value": rec["frame_consistency"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", help="checkpoint folders (default: every shipped one)")
    args = ap.parse_args()
    folders = [Path(f) for f in args.folders] or sorted(p for p in SHIPPED.iterdir() if (p / "config.json").is_file())
    for folder in folders:
        rows = collect(folder.name)
        if rows:
            (folder / METRICS_FILE).write_text(json.dumps({"source": "bench/results/ (see bench/RESULTS.md)", "metrics": rows}, indent=2) + "\n")
        (folder / "README.md").write_text(model_card(folder, name=f"checkpoints/{folder.name}"))
        print(f"{folder}: {len(rows)} measurement(s), README.md written")


if __name__ == "__main__":
    main()
