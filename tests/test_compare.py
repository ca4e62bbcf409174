"""``mmgen bench compare`` at CI size: one row per paradigm, every column, equal budgets and backbones."""
import json
import math

import pytest

from mmgen.bench import compare
from mmgen.bench.compare import PARADIGMS, Backbone, Paradigm, WorldSetup, resolve_paradigms, run_comparison
from mmgen.cli import main

TINY = ["--budget", "3", "--dim", "64", "--depth", "2", "--heads", "2", "--batch-size", "8", "--n-eval", "8",
        "--n-ref", "16", "--speed-batch", "4", "--quiet"]
COLUMNS = ("paradigm", "title", "model", "tokenizer", "tokens_per_image", "backbone", "params", "params_backbone", "steps",
           "batch_size", "train_s", "final_loss", "forward_passes", "fid", "fid_n", "images_per_s")


def _check_rows(rows, names, steps, backbone, acc_keys):
    assert [r["paradigm"] for r in rows] == names
    for r in rows:
        missing = [k for k in (*COLUMNS, *acc_keys) if k not in r]
        assert not missing, missing
        numbers = [r[k] for k in ("params", "params_backbone", "train_s", "final_loss", "images_per_s", "fid", *acc_keys)]
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers), r
        assert r["forward_passes"] >= 1 and r["params"] > r["params_backbone"] > 0
    assert {r["steps"] for r in rows} == {steps}
    assert all(r["backbone"] == backbone for r in rows)


@pytest.fixture(autouse=True)
def _fid_cache(tmp_path_factory, monkeypatch):
    """FID reference statistics go to a per-session folder, not the user's cache."""
    monkeypatch.setenv("MMGEN_CACHE", str(tmp_path_factory.getbasetemp() / "mmgen-cache"))


def test_cli_compare_shapes_all_paradigms(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["bench", "compare", "--world", "shapes", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "compare.json").read_text())
    names = [p.name for p in PARADIGMS.values() if "shapes" in p.worlds]
    _check_rows(data["rows"], names, 3, {"dim": 64, "depth": 2, "heads": 2}, ("judge_1obj", "judge_2obj"))
    assert data["meta"]["budget"] == 3 and data["meta"]["command"].startswith("mmgen bench compare --world shapes --budget 3")
    md = (out / "compare.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(names) and "FID" in table[0] and "passes/sample" in table[0]
    assert all(len(line.split("|")) == len(table[0].split("|")) for line in table)
    assert table[1] in printed and table[-1] in printed
    from PIL import Image  # the charts: real PNGs, big enough to read

    for png in ("compare_loss.png", "compare_quality_speed.png"):
        w, h = Image.open(out / png).size
        assert w >= 600 and h >= 400
    assert "compare_loss.png" in md
    # a rerun with another budget refuses to mix it with the runs already there
    assert main(["bench", "compare", "--world", "shapes", "--out", str(out), *TINY, "--budget", "4"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_compare_shapes_video(tmp_path, capsys):
    """Token by token, NBP and the one-vocabulary sequence on the shipped video tokenizer, one table."""
    out = tmp_path / "cmp"
    assert main(["bench", "compare", "--world", "shapes-video", "--out", str(out), *TINY]) == 0
    rows = json.loads((out / "compare.json").read_text())["rows"]
    names = [p.name for p in PARADIGMS.values() if "shapes-video" in p.worlds]
    assert names == ["video-raster", "nbp", "unified"]
    for r in rows:  # the video columns replace the image ones
        r["images_per_s"] = r.pop("videos_per_s")
        assert r["frames_per_s"] == pytest.approx(8 * r["images_per_s"])
    _check_rows(rows, names, 3, {"dim": 64, "depth": 2, "heads": 2}, ("judge_video", "judge_direction", "judge_color"))
    assert {r["tokens_per_image"] for r in rows} == {128} and {r["fid_n"] for r in rows} == {8 * 8}  # frame FID
    passes = {r["paradigm"]: r["forward_passes"] for r in rows}
    assert passes["nbp"] < passes["video-raster"] == 128  # NBP: 16 tokens of frame 0 one by one, then 7 frame blocks
    assert passes["nbp"] == 16 + 7
    table = [line for line in (out / "compare.md").read_text().splitlines() if line.startswith("| ")]
    assert "frame FID" in table[0] and "clips/s" in table[0] and len(table) == 4 and table[2] in capsys.readouterr().out


def test_digits_with_a_tokenizer_trained_from_a_recipe(tmp_path, monkeypatch):
    tok = WorldSetup("raster-tiny-class", "digits_vq.yaml",
                     tokenizer_overrides=("train.steps=2", "train.batch_size=4", "train.log_every=1", "train.ckpt_every=2"))
    monkeypatch.setitem(PARADIGMS, "raster-newtok", Paradigm("raster-newtok", "raster, fresh VQ", {"digits": tok}))
    backbone = Backbone(dim=32, depth=1, heads=2)
    rows = run_comparison("digits", 2, ["raster-newtok"], backbone, n_eval=10, n_ref=16, out_dir=tmp_path, batch_size=4,
                          speed_batch=2, repeats=1, progress=False)
    _check_rows(rows, ["raster-newtok"], 2, {"dim": 32, "depth": 1, "heads": 2}, ("digits_acc",))
    assert rows[0]["fid_n"] == 10 and (tmp_path / "tokenizers" / "digits_vq" / "model" / "config.json").is_file()
    assert "digits acc" in (tmp_path / "compare.md").read_text()


@pytest.mark.parametrize("names,msg", [
    (["raster", "nope"], "unknown paradigm 'nope'; available for shapes: raster"),
    (["nbp"], "paradigm 'nbp' does not apply to world 'shapes' (it runs on: shapes-video)"),
])
def test_unknown_or_misplaced_paradigm_is_a_clear_error(tmp_path, capsys, names, msg):
    assert main(["bench", "compare", "--out", str(tmp_path), "--paradigms", ",".join(names), *TINY]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing trained before the error


def test_registry_errors(monkeypatch, tmp_path):
    monkeypatch.setitem(PARADIGMS, "shapes-only", Paradigm("shapes-only", "x", {"shapes": WorldSetup("raster-tiny", "checkpoints/none")}))
    with pytest.raises(ValueError, match="does not apply to world 'digits'"):
        resolve_paradigms("digits", ["shapes-only"])
    with pytest.raises(ValueError, match="unknown world"):
        resolve_paradigms("mnist")
    with pytest.raises(ValueError, match="unknown worlds"):
        compare.register_paradigm(Paradigm("bad", "x", {"mnist": WorldSetup("raster-tiny", "x")}))
    with pytest.raises(FileNotFoundError, match="checkpoints/none"):
        run_comparison("shapes", 1, ["shapes-only"], out_dir=tmp_path)
    with pytest.raises(ValueError, match="divisible"):
        Backbone(dim=30, depth=1, heads=4)
