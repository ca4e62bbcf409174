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
    assert main(["train", "tokenizer", "--recipe", "train/recipes/shapes_vq.yaml", "--out", str(tok_out), "train.steps=3", "train.batch_size=4", "train.log_every=1", "train.ckpt_every=3", "train.progress=false"]) == 0
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
    assert 0.0 <= res["one_object_accuracy"] <= 1.0 and 0.0 <= res["two_object_accuracy"] <= 1.0
    assert "whole-prompt accuracy" in capsys.readouterr().out


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
