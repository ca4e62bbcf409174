"""The ``mmgen`` command line end to end on tiny checkpoints: train -> sample -> eval."""
import json

import pytest
import torch
from PIL import Image

import mmgen
from mmgen.cli import main
from mmgen.models.base import tokenizer_overrides
from mmgen.pipeline import save_pipeline

SMALL = dict(transformer=dict(dim=32, depth=1, heads=2))


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "raster"
    tok = mmgen.create_tokenizer("vq-tiny")
    gen = mmgen.create_generator("raster-tiny", **tokenizer_overrides(tok), **SMALL)
    save_pipeline(path, gen, tok)
    return path


@pytest.fixture(scope="module")
def class_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "var"
    tok = mmgen.create_tokenizer("msvq-tiny")
    gen = mmgen.create_generator("var-tiny-class", **tokenizer_overrides(tok), **SMALL)
    save_pipeline(path, gen, tok)
    return path


def test_sample_cli_writes_grid_images_and_settings(text_ckpt, tmp_path):
    out = tmp_path / "grid.png"
    rc = main(["sample", "--ckpt", str(text_ckpt), "--prompt", "a large red circle at the top left", "--n", "4", "--seed", "0", "--out", str(out), "--top-k", "20", "--cfg", "2.5"])
    assert rc == 0
    assert Image.open(out).size[0] > 64
    singles = sorted((tmp_path / "grid").glob("*.png"))
    assert len(singles) == 4 and Image.open(singles[0]).size == (32, 32)
    meta = json.loads((tmp_path / "grid.json").read_text())
    assert meta["sampler"]["seed"] == 0 and meta["sampler"]["top_k"] == 20 and meta["sampler"]["cfg_scale"] == 2.5
    assert meta["prompts"] == ["a large red circle at the top left"] * 4
    # same seed -> identical pictures
    main(["sample", "--ckpt", str(text_ckpt), "--prompt", "a large red circle at the top left", "--n", "4", "--seed", "0", "--out", str(tmp_path / "again.png"), "--top-k", "20", "--cfg", "2.5"])
    assert (tmp_path / "again" / "0003.png").read_bytes() == singles[3].read_bytes()


def test_sample_cli_label_model(class_ckpt, tmp_path):
    rc = main(["sample", "--ckpt", str(class_ckpt), "--label", "3", "--label", "7", "--n", "2", "--out", str(tmp_path / "d.png")])
    assert rc == 0
    meta = json.loads((tmp_path / "d.json").read_text())
    assert meta["labels"] == [3, 3, 7, 7] and meta["num_images"] == 4


@pytest.mark.parametrize("args,msg", [
    (["--top-p", "1.5"], "top_p must be in"),
    (["--cfg", "-1"], "cfg_scale must be >= 0"),
    (["--n", "100000"], "--n must be in"),
])
def test_sample_cli_bad_values_are_clear_errors(text_ckpt, tmp_path, capsys, args, msg):
    rc = main(["sample", "--ckpt", str(text_ckpt), "--prompt", "a small red circle at the top", "--out", str(tmp_path / "x.png"), *args])
    assert rc == 2
    assert msg in capsys.readouterr().err


def test_sample_cli_prompt_errors(text_ckpt, class_ckpt, tmp_path, capsys):
    assert main(["sample", "--ckpt", str(text_ckpt), "--prompt", "a red circle " * 10, "--out", str(tmp_path / "x.png")]) == 2
    assert "text context holds" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(class_ckpt), "--prompt", "a red circle", "--out", str(tmp_path / "x.png")]) == 2
    assert "class-conditional" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(tmp_path / "missing"), "--prompt", "a red circle", "--out", str(tmp_path / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_cli_tokenizer_then_generator_then_sample(tmp_path):
    tok_out, gen_out = tmp_path / "tok", tmp_path / "gen"
    assert main(["train", "tokenizer", "--recipe", "train/recipes/shapes_vq.yaml", "--out", str(tok_out),
                 "train.steps=3", "train.batch_size=4", "train.log_every=1", "train.ckpt_every=3", "train.progress=false"]) == 0
    assert (tok_out / "model" / "model.safetensors").is_file()
    assert main(["train", "generator", "--recipe", "train/recipes/shapes_raster.yaml", "--out", str(gen_out), f"tokenizer={tok_out / 'model'}",
                 "train.steps=2", "train.batch_size=4", "train.log_every=1", "train.ckpt_every=2", "train.progress=false",
                 "model_args.transformer.dim=32", "model_args.transformer.depth=1", "model_args.transformer.heads=2"]) == 0
    pipe = mmgen.load(gen_out / "model")
    images = pipe(prompt="a small green square at the bottom", n=2)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    lines = (gen_out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]


def test_quickstart_writes_captioned_grid_and_scores(text_ckpt, tmp_path, capsys):
    out = tmp_path / "qs.png"
    assert main(["quickstart", "--ckpt", str(text_ckpt), "--out", str(out), "--n", "8"]) == 0
    grid = Image.open(out)
    assert grid.size[0] >= 4 * 128 and grid.size[1] >= 4 * 128  # 16 upscaled cells with captions
    res = json.loads(out.with_suffix(".json").read_text())
    printed = capsys.readouterr().out  # the printed scores are the recorded ones, on the n prompts asked for
    assert f"accuracy on 8 fresh prompts each: one object {res['one_object_accuracy']:.3f}, two objects {res['two_object_accuracy']:.3f}" in printed


def test_sample_cli_token_budget(text_ckpt, tmp_path, capsys):
    """A FlexTok model samples only the first k tokens; a grid model refuses a budget, naming why."""
    path = tmp_path / "flex"
    tok = mmgen.create_tokenizer("flextok-tiny")
    save_pipeline(path, mmgen.create_generator("raster-tiny-flextok", **tokenizer_overrides(tok), **SMALL), tok)
    out = tmp_path / "f.png"
    assert main(["sample", "--ckpt", str(path), "--prompt", "a small red circle at the top", "--n", "2",
                 "--token-budget", "3", "--out", str(out)]) == 0
    meta = json.loads((tmp_path / "f.json").read_text())
    assert meta["sampler"]["token_budget"] == 3 and Image.open(tmp_path / "f" / "0001.png").size == (32, 32)
    assert main(["sample", "--ckpt", str(text_ckpt), "--prompt", "a small red circle at the top", "--n", "1",
                 "--token-budget", "3", "--out", str(tmp_path / "g.png")]) == 2
    assert "needs a truncatable 1D sequence" in capsys.readouterr().err


# --- flags from SamplerConfig, recommended settings, errors ------------------------------------

def test_help_imports_no_torch():
    """`mmgen --help` stays fast because no subcommand's heavy imports run (timing lives in bench, not here)."""
    import subprocess
    import sys

    code = "import sys\nfrom mmgen.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "sample" in out and out.strip().endswith("False")


def test_every_sampler_field_has_a_flag_and_unset_flags_stay_none():
    from dataclasses import fields

    from mmgen.cli import build_parser
    from mmgen.sample.cli import sampler_from_args
    from mmgen.sampler import SamplerConfig

    args = build_parser().parse_args(["sample", "--ckpt", "x", "--cfg-power", "3", "--static-cache", "--no-cache",
                                      "--flow-solver", "euler-maruyama", "--cfg-scale", "2"])
    assert all(hasattr(args, f.name) for f in fields(SamplerConfig))
    s = sampler_from_args(args, SamplerConfig(temperature=0.7, top_k=5))
    assert (s.cfg_power, s.static_cache, s.use_cache, s.flow_solver, s.cfg_scale) == (3.0, True, False, "euler-maruyama", 2.0)
    assert (s.temperature, s.top_k) == (0.7, 5)  # not given: the base (recommended) values


def test_sample_cli_keeps_the_checkpoints_recommended_settings(text_ckpt, tmp_path):
    import shutil

    ckpt = tmp_path / "rec"
    shutil.copytree(text_ckpt, ckpt)
    (ckpt / "sampler.json").write_text(json.dumps({"temperature": 0.7, "top_k": 5, "cfg_scale": 3.0}))
    assert main(["sample", "--ckpt", str(ckpt), "--prompt", "a small red circle at the top", "--n", "1", "--cfg", "2", "--out", str(tmp_path / "r.png")]) == 0
    s = json.loads((tmp_path / "r.json").read_text())["sampler"]
    assert (s["temperature"], s["top_k"], s["cfg_scale"]) == (0.7, 5, 2.0)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("args, msg", [
    (["--cfg", "nan"], "--cfg/--cfg-scale: must be a finite number, got 'nan'"),
    (["--cfg", "inf"], "must be a finite number, got 'inf'"),
    (["--temperature=-inf"], "--temperature: must be a finite number"),
    (["--cfg-power", "nan"], "--cfg-power: must be a finite number"),
    (["--fps", "nan"], "--fps: must be a finite number"),
    (["--top-p", "abc"], "must be a number, got 'abc'"),
])
def test_nan_and_inf_flags_are_one_line_errors(text_ckpt, tmp_path, capsys, args, msg):
    with pytest.raises(SystemExit) as e:
        main(["sample", "--ckpt", str(text_ckpt), "--prompt", "a small red circle at the top", "--out", str(tmp_path / "x.png"), *args])
    assert e.value.code == 2 and msg in _one_line(capsys)


@pytest.mark.parametrize("device, msg", [("foo", "--device 'foo' is not a device"), ("cuda", "CUDA is not available"), ("cuda:7", "CUDA")])
def test_bad_device_is_a_one_line_error(text_ckpt, tmp_path, capsys, device, msg):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that CUDA device")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["sample", "--ckpt", str(text_ckpt), "--prompt", "a red circle", "--device", device, "--out", str(tmp_path / "x.png")]) == 2
    assert msg in _one_line(capsys)


def test_empty_and_huge_prompts_are_short_one_line_errors(text_ckpt, tmp_path, capsys):
    assert main(["sample", "--ckpt", str(text_ckpt), "--prompt", "  ", "--out", str(tmp_path / "x.png")]) == 2
    assert "the prompt is empty" in _one_line(capsys)
    huge = "a red circle " * 800
    assert main(["sample", "--ckpt", str(text_ckpt), "--prompt", huge, "--out", str(tmp_path / "x.png")]) == 2
    err = _one_line(capsys)
    assert "text context holds" in err and f"({len(huge)} characters)" in err and len(err) < 400


def test_unwritable_output_is_a_one_line_error(text_ckpt, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    base = ["sample", "--ckpt", str(text_ckpt), "--prompt", "a small red circle at the top", "--n", "1"]
    assert main([*base, "--out", str(tmp_path / "file" / "x.png")]) == 2
    assert "cannot write the samples to" in _one_line(capsys)
    import errno

    import mmgen.sample.cli as sample_cli

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sample_cli, "save_image", full)  # a full disk, without filling one
    assert main([*base, "--out", str(tmp_path / "ok.png")]) == 2
    assert "No space left on device" in _one_line(capsys)


def test_read_only_output_folder(text_ckpt, tmp_path, capsys):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    assert main(["sample", "--ckpt", str(text_ckpt), "--prompt", "a small red circle at the top", "--n", "1", "--out", str(ro / "x.png")]) == 2
    assert "Permission denied" in _one_line(capsys)


def test_debug_shows_the_traceback(text_ckpt, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="the prompt is empty"):
        main(["--debug", "sample", "--ckpt", str(text_ckpt), "--prompt", "", "--out", str(tmp_path / "x.png")])
    monkeypatch.setenv("MMGEN_DEBUG", "1")
    with pytest.raises(ValueError, match="the prompt is empty"):
        main(["sample", "--ckpt", str(text_ckpt), "--prompt", "", "--out", str(tmp_path / "x.png")])


def test_progress_bar_follows_the_generator_callback(text_ckpt, tmp_path, capsys):
    assert main(["sample", "--ckpt", str(text_ckpt), "--prompt", "a small red circle at the top", "--n", "1", "--progress", "--out", str(tmp_path / "p.png")]) == 0
    err = capsys.readouterr().err
    assert "sampling" in err and "64/64" in err  # one step per token of the 8x8 grid
    assert main(["sample", "--ckpt", str(text_ckpt), "--prompt", "a small red circle at the top", "--n", "1", "--no-progress", "--out", str(tmp_path / "q.png")]) == 0
    assert "sampling" not in capsys.readouterr().err


def test_a_hub_id_not_in_the_cache_offline_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["sample", "--ckpt", "nobody/not-a-model", "--prompt", "a red circle", "--out", str(tmp_path / "x.png")]) == 2
    assert "HF_HUB_OFFLINE" in _one_line(capsys)


def test_demo_with_a_missing_models_dir_fails_at_start(tmp_path, capsys):
    assert main(["demo", "--models-dir", str(tmp_path / "missing")]) == 2
    err = _one_line(capsys)
    assert "--models-dir" in err and "is not a folder" in err


def test_eval_judge_pools_prompt_streams(text_ckpt, tmp_path):
    out = tmp_path / "judge.json"
    rc = main(["eval", "judge", "--ckpt", str(text_ckpt), "--n", "3", "--objects", "2", "--prompt-seeds", "1", "2", "--json", str(out)])
    assert rc in (0, None)
    res = json.loads(out.read_text())
    assert res["n"] == 6 and res["seeds"] == [1, 2] and len(res["whole_per_stream"]) == 2
    lo, hi = res["whole_ci95"]
    assert 0.0 <= lo <= res["whole"] <= hi <= 1.0


def test_sample_cli_bf16_autocast(text_ckpt, tmp_path, monkeypatch):
    out = tmp_path / "bf16.png"
    monkeypatch.setattr("mmgen.precision.bf16_is_fast", lambda device: False)  # a CPU without bf16 units: warned, still bf16
    with pytest.warns(UserWarning, match="--precision bf16 on this cpu"):
        rc = main(["sample", "--ckpt", str(text_ckpt), "--prompt", "a large red circle at the top left", "--n", "2", "--out", str(out), "--precision", "bf16"])
    assert rc in (0, None) and out.is_file()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["precision"] == "bf16" and meta["num_images"] == 2
