"""Bad inputs end in one clear line (and exit status 2 from the CLI), never a traceback or a silent run.

Also the data-spec security rule: a recipe is data, never code (no ``pipe:`` shard URLs).
"""
from __future__ import annotations

import errno
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from mmgen.cli import main
from mmgen.config import check_finite, from_dict, load_recipe
from mmgen.data import ShapesWorld, ShardDataset, build_dataset, pack
from mmgen.data.shards import check_shard_url, resolve_shards
from mmgen.eval.generation import judge_pipeline, shapes_prompts
from mmgen.modeling import ConfigModule, load_module
from mmgen.train import TrainConfig, Trainer, TrainingDiverged, resolve_recipe
from mmgen.train import state as state_mod

torch.set_num_threads(1)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run ``mmgen ARGV`` in-process; returns (exit status, stderr)."""
    rc = main(argv)
    return rc, capsys.readouterr().err


def one_line_error(rc: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("mmgen: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ----------------------------------------------------------------------------- data specs are never code
@pytest.mark.parametrize("template", [
    "shards:pipe:touch {marker} #://x",  # the exploit from issue 16: '://' used to pass the check
    "shards:pipe:touch {marker}",
    "shards:pipe:touch {marker}-{{0..1}}.tar",  # brace-expanded into two commands
])
def test_pipe_shard_urls_are_refused_and_never_run(tmp_path, template):
    marker = tmp_path / "pwned"
    spec = template.format(marker=marker)
    with pytest.raises(ValueError, match="refused: only local paths and http/https"):
        next(iter(build_dataset(spec)))  # reading the first sample is what would run the command
    assert not list(tmp_path.iterdir()), "the shell command ran"


def test_pipe_urls_in_a_recipe_override_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "vq-tiny", "data": {"spec": "shapes"}, "train": {"steps": 1, "progress": False}}))
    rc, err = run_cli(["train", "tokenizer", "--recipe", str(recipe), "--out", str(tmp_path / "run"),
                       f"data.spec=shards:pipe:touch {marker} #://x"], capsys)
    one_line_error(rc, err, "pipe:touch", "refused")
    assert not marker.exists()


@pytest.mark.parametrize("url", ["pipe:cat x.tar", "-", "file:///tmp/x.tar", "s3://bucket/x.tar", "gs://b/x.tar",
                                 "hf://datasets/x", "sftp://host/x.tar"])
def test_only_local_files_and_plain_http_are_allowed(url):
    with pytest.raises(ValueError, match="refused"):
        check_shard_url(url)
    with pytest.raises(ValueError, match="refused"):
        resolve_shards([url])


def test_http_urls_and_local_paths_pass(tmp_path):
    for url in ("http://example.invalid/s-000.tar", "https://example.invalid/s-000.tar", str(tmp_path / "a:b.tar")):
        check_shard_url(url)
    assert ShardDataset(["https://example.invalid/s-000.tar"]).urls == ["https://example.invalid/s-000.tar"]  # not fetched yet


# ----------------------------------------------------------------------------- NaN / inf in recipes and overrides
@pytest.mark.parametrize("override", ["train.lr=nan", "train.lr=.inf", "train.lr=-inf", "train.betas=[0.9,.nan]",
                                      "model_args.beta=.nan", "train.max_time_min=inf"])
def test_nonfinite_overrides_are_refused(override):
    with pytest.raises(ValueError, match="not a finite number"):
        resolve_recipe({"model": "vq-tiny", "data": {"spec": "shapes"}}, [override])


def test_nonfinite_recipe_values_are_refused(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: vq-tiny\ndata: {spec: shapes}\ntrain: {lr: .nan}\n")
    assert load_recipe(recipe)["train"]["lr"] != load_recipe(recipe)["train"]["lr"]  # YAML does read a NaN here
    rc, err = run_cli(["train", "tokenizer", "--recipe", str(recipe), "--out", str(tmp_path / "run")], capsys)
    one_line_error(rc, err, "train.lr=nan", "not a finite number")
    with pytest.raises(ValueError, match=r"x\.y\[1\]=inf"):
        check_finite({"y": [1.0, float("inf")]}, "x")
    with pytest.raises(ValueError, match="TrainConfig.grad_clip"):
        from_dict(TrainConfig, {"grad_clip": float("-inf")})


# ----------------------------------------------------------------------------- checkpoints that do not fit
@dataclass
class TwoLayerConfig:
    hidden: int = 4


class TwoLayer(ConfigModule):
    config_class = TwoLayerConfig
    kind = "tokenizer"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.inp = nn.Linear(3, self.config.hidden)
        self.out = nn.Linear(self.config.hidden, 3)


def test_config_that_does_not_match_the_weights_names_the_tensor(tmp_path):
    path = TwoLayer(TwoLayerConfig()).save_pretrained(tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["hidden"] = 5
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"tensor 'inp.weight' has shape \(4, 3\) in the weights, \(5, 3\) in the model") as e:
        load_module(path)
    assert "\n" not in str(e.value)
    state = load_file(str(path / "model.safetensors"))
    del state["out.bias"]
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"1 missing \(e.g. 'out.bias'\)"):
        load_module(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_weights_are_refused_at_load(tmp_path, bad):
    path = TwoLayer(TwoLayerConfig()).save_pretrained(tmp_path / "m")
    state = load_file(str(path / "model.safetensors"))
    state["out.weight"][1, 2] = bad
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"non-finite weights.*'out.weight'"):
        load_module(path)


# ----------------------------------------------------------------------------- training: divergence, disk full
def _cfg(out: Path, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(steps=4, batch_size=2, warmup_steps=1, log_every=1, ckpt_every=2, out_dir=str(out),
                                 progress=False, tensorboard=False), **kw})


def _loss(model, batch):
    loss = (model.out(model.inp(batch["pixels"].mean((2, 3)))) - 1).pow(2).mean()
    return loss, {}


def _world():
    return ShapesWorld(size=16)


def test_divergence_is_one_line_from_the_cli(tmp_path, capsys, monkeypatch):
    def diverging(model, batch):
        loss, logs = _loss(model, batch)
        return loss * float("nan"), logs

    with pytest.raises(TrainingDiverged) as e:
        Trainer(_cfg(tmp_path / "run"), TwoLayer(TwoLayerConfig()), diverging, _world()).fit()
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
    import mmgen.train.run as run_mod

    monkeypatch.setattr(run_mod, "train", lambda *a, **kw: (_ for _ in ()).throw(e.value))
    rc, err = run_cli(["train", "tokenizer", "--recipe", "unused.yaml"], capsys)
    one_line_error(rc, err, "training diverged at step 1", "loss=nan")


def test_disk_full_while_checkpointing_names_the_folder(tmp_path, monkeypatch):
    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state_mod, "save_file", full)
    with pytest.raises(OSError, match=r"cannot write checkpoint to .*checkpoints/step_0000002: No space left") as e:
        Trainer(_cfg(tmp_path / "run"), TwoLayer(TwoLayerConfig()), _loss, _world()).fit()
    assert e.value.errno == errno.ENOSPC
    assert not state_mod.list_checkpoints(tmp_path / "run" / "checkpoints")  # nothing half-written counts as one


def test_unwritable_output_folder_names_the_path(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match=r"cannot write training logs to .*a-file/run/metrics.jsonl"):
        Trainer(_cfg(blocker / "run"), TwoLayer(TwoLayerConfig()), _loss, _world()).fit()
    rc, err = run_cli(["data", "pack", "shapes", "--out", str(blocker / "shards"), "--num-samples", "2"], capsys)
    one_line_error(rc, err, "cannot write shards to", "a-file/shards")


def test_disk_full_while_packing_names_the_folder(tmp_path, monkeypatch):
    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "addfile", full)
    with pytest.raises(OSError, match=r"cannot write shards to .*out: No space left"):
        pack(ShapesWorld(size=16), tmp_path / "out", num_samples=3, progress=False)


# ----------------------------------------------------------------------------- data
def test_a_folder_of_garbage_shards_is_a_clear_error(tmp_path):
    for k in range(2):
        (tmp_path / f"shard-{k}.tar").write_bytes(os.urandom(3000))
    ds = ShardDataset(tmp_path, size=8)
    with pytest.raises(ValueError, match=f"shards {tmp_path} hold no readable samples") as e:
        list(ds)
    assert ds.stats["yielded"] == 0 and ds.stats["skipped"] >= 2 and "\n" not in str(e.value)
    for workers in (0, 1):  # read by the trainer, in-process or by a DataLoader worker: the same one line
        with pytest.raises(ValueError) as e:
            Trainer(_cfg(tmp_path / f"run{workers}", num_workers=workers), TwoLayer(TwoLayerConfig()), _loss, ShardDataset(tmp_path, size=16)).fit()
        assert str(e.value).startswith(f"shards {tmp_path} hold no readable samples") and "\n" not in str(e.value)


def test_pack_into_an_existing_folder_offers_overwrite(tmp_path, capsys):
    argv = ["data", "pack", "shapes", "--out", str(tmp_path), "--num-samples", "3", "--size", "16"]
    assert run_cli(argv, capsys)[0] == 0
    rc, err = run_cli(argv + ["--seed", "1"], capsys)
    one_line_error(rc, err, "already holds 1 shard(s)", "--overwrite")
    assert run_cli(argv + ["--seed", "1", "--overwrite"], capsys)[0] == 0
    assert [it["caption"] for it in ShardDataset(tmp_path, size=16)] == [ShapesWorld(size=16, seed=1)[i]["caption"] for i in range(3)]


# ----------------------------------------------------------------------------- evaluation
def test_judging_zero_samples_is_refused_before_loading(capsys):
    with pytest.raises(ValueError, match="n must be a positive number of samples, got 0"):
        judge_pipeline(pipe=None, n=0)
    with pytest.raises(ValueError, match="got -3"):
        shapes_prompts(-3, objects=1)
    rc, err = run_cli(["eval", "judge", "--ckpt", "/nonexistent/checkpoint", "--n", "0"], capsys)
    one_line_error(rc, err, "--n must be a positive number of samples, got 0")
