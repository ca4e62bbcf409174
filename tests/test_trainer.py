"""Trainer, checkpoints, schedule, EMA, DDP and recipes, on tiny in-test models and data.

Run as a script, this file is also the worker for the subprocess tests:
``python tests/test_trainer.py train OUT PAUSE_AT`` (killed by the test) and
``torchrun --nproc_per_node 2 tests/test_trainer.py ddp OUT``.
"""
from __future__ import annotations

import importlib
import itertools
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from mmgen.modeling import ConfigModule, load_module
from mmgen.nn.masks import Causal
from mmgen.nn.transformer import Transformer, TransformerConfig
from mmgen.registry import register_preset
from mmgen.train import EMA, TrainConfig, Trainer, TrainingDiverged, lr_at, resolve_recipe, train
from mmgen.train import state as state_mod
from mmgen.train.state import TrainingState, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint

torch.set_num_threads(1)
HERE = Path(__file__).resolve()
SIDE = 4  # pixels are (3, SIDE, SIDE)


# ----------------------------------------------------------------------------- tiny models and data
@dataclass
class TinyTokConfig:
    dim: int = 8
    side: int = SIDE
    depth: int = 0  # > 0: a real mmgen transformer over the pixels first (what FSDP shards per block)


class TinyTok(ConfigModule):
    """A linear autoencoder posing as a tokenizer: ``forward(pixels, step) == loss``."""

    config_class = TinyTokConfig
    kind = "tokenizer"

    def __init__(self, config) -> None:
        super().__init__(config)
        n = 3 * self.config.side ** 2
        self.enc = nn.Linear(n, self.config.dim)
        self.norm = nn.LayerNorm(self.config.dim)
        self.dec = nn.Linear(self.config.dim, n)
        if self.config.depth:
            self.body = Transformer(TransformerConfig(dim=12, depth=self.config.depth, heads=2))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.config.depth:  # (B, 3, S, S) -> S*S tokens of 3 channels, zero-padded to the width
            x = nn.functional.pad(pixels.flatten(2).transpose(1, 2), (0, 9))
            side = torch.arange(self.config.side, dtype=torch.float32)
            x = self.body(x, torch.cartesian_prod(torch.zeros(1), side, side), Causal())
            pixels = x[..., :3].transpose(1, 2).reshape_as(pixels) + pixels
        return self.norm(self.enc(pixels.flatten(1)))

    def loss(self, pixels: torch.Tensor, step: int = 0):
        rec = self.dec(self.encode(pixels)).view_as(pixels)
        loss = (rec - pixels).pow(2).mean()
        return loss, {"mse": loss.detach(), "step_seen": float(step)}

    def forward(self, pixels: torch.Tensor, step: int = 0):
        return self.loss(pixels, step=step)


@dataclass
class FakeGenConfig:
    in_dim: int = 0  # set from the tokenizer (tokenizer_overrides)
    num_classes: int = 3


class FakeGen(ConfigModule):
    """Stands in for the lead's generator contract: bind_tokenizer / prepare_batch / forward."""

    config_class = FakeGenConfig
    kind = "generator"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.emb = nn.Embedding(self.config.num_classes, self.config.in_dim)
        self.proj = nn.Linear(self.config.in_dim, self.config.in_dim)

    def bind_tokenizer(self, tok: nn.Module) -> None:
        object.__setattr__(self, "tok", tok)  # not a submodule: stays frozen, outside the optimizer

    def prepare_batch(self, batch):
        with torch.no_grad():
            tokens = self.tok.encode(batch["pixels"])
        return tokens, batch["label"]

    def forward(self, tokens, cond):
        loss = (self.proj(self.emb(cond)) - tokens).pow(2).mean()
        return loss, {"gen_mse": loss.detach()}


for _name, _cls in (("test-tiny-tok", TinyTok), ("test-fake-gen", FakeGen)):
    try:
        register_preset(_name, _cls, tags=("test",))
    except KeyError:  # already registered (module imported twice)
        pass


def sample(i: int) -> dict:
    g = torch.Generator().manual_seed(1000 + i)
    return {"pixels": torch.rand(3, SIDE, SIDE, generator=g) * 2 - 1, "label": i % 3}


class World(Dataset):
    """Deterministic per index and unbounded, like the built-in worlds."""

    infinite = True

    def __getitem__(self, i: int) -> dict:
        return sample(i)


class Finite(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict:
        return sample(i)


class Stream(IterableDataset):
    """A finite stream (re-iterated per epoch); ``skip`` optional, like WebDataset shards."""

    def __init__(self, n: int = 13, with_skip: bool = False) -> None:
        self.n = n
        if with_skip:
            self.skip = lambda k: _Skipped(self, k)

    def __iter__(self):
        return (sample(i) for i in range(self.n))


class _Skipped(IterableDataset):
    def __init__(self, base: Stream, k: int) -> None:
        self.base, self.k = base, k

    def __iter__(self):
        return (sample(i) for i in range(self.k % self.base.n, self.base.n))


class RankStream(IterableDataset):
    """Splits itself across ranks like ``ShardDataset``: rank r of w reads samples r, r + w, ..."""

    def __init__(self) -> None:
        self.rank, self.world_size, self.start = None, None, 0

    def skip(self, k: int) -> "RankStream":
        self.start += k
        return self

    def __iter__(self):
        r, w = self.rank or 0, self.world_size or 1
        return itertools.islice((sample(i) for i in range(10**6) if i % w == r), self.start, None)


def make_loss(noise: bool):
    """Loss that also draws from torch, numpy and python RNGs, so resume must restore all three."""

    def loss_fn(model, batch, step):
        loss, logs = model(batch["pixels"], step=step)
        if noise:
            extra = torch.randn(()) * 1e-3 + float(np.random.rand()) * 1e-3 + random.random() * 1e-3
            loss = loss + extra
        return loss, logs

    return loss_fn


def cfg(out: Path, **kw) -> TrainConfig:
    base = dict(steps=12, batch_size=4, lr=3e-2, warmup_steps=3, weight_decay=0.1, grad_clip=0.5, ema_decay=0.9,
                log_every=1, ckpt_every=4, keep_last=2, out_dir=str(out), progress=False, tensorboard=False)
    return TrainConfig(**(base | kw))


def fresh_model(seed: int = 0, depth: int = 0) -> TinyTok:
    torch.manual_seed(seed)
    return TinyTok(TinyTokConfig(depth=depth))


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def final_weights(out: Path) -> tuple[dict, dict]:
    ck = latest_checkpoint(out / "checkpoints")
    return load_file(str(ck / "model.safetensors")), load_file(str(ck / "ema.safetensors"))


def assert_same(a: dict, b: dict, exact: bool = True, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=atol, msg=k)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stop(Exception):
    pass


# ----------------------------------------------------------------------------- (a) exact resume
def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    ref = tmp_path / "ref"
    Trainer(cfg(ref), fresh_model(), make_loss(True), World()).fit()

    run = tmp_path / "run"  # killed at step 10, two steps after its checkpoint at step 8
    proc = subprocess.Popen([sys.executable, str(HERE), "train", str(run), "10"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (run / "metrics.jsonl").is_file() or len(losses(run)) < 10:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "worker did not reach step 10"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert [s for s, _ in losses(run)] == list(range(1, 11))
    assert latest_checkpoint(run / "checkpoints").name == "step_0000008"

    summary = Trainer(cfg(run, num_workers=1), fresh_model(seed=5), make_loss(True), World(), resume=True).fit()
    assert summary["steps"] == 12
    assert losses(run) == losses(ref)  # bit-identical floats, steps 9-10 re-run, not duplicated
    for a, b in zip(final_weights(run), final_weights(ref)):
        assert_same(a, b)
    exported = load_module(run / "model")  # default export: EMA weights
    assert_same(exported.state_dict(), final_weights(ref)[1])


@pytest.mark.parametrize("kind", ["finite", "stream", "stream_skip"])
def test_resume_after_exception_other_data_kinds(tmp_path, kind):
    make = {"finite": Finite, "stream": lambda: Stream(), "stream_skip": lambda: Stream(with_skip=True)}[kind]
    ref, run = tmp_path / "ref", tmp_path / "run"
    Trainer(cfg(ref, steps=8), fresh_model(), make_loss(True), make()).fit()

    def crash(tr):
        if tr.step == 6:
            raise Stop

    with pytest.raises(Stop):
        Trainer(cfg(run, steps=8), fresh_model(), make_loss(True), make(), hooks=[crash]).fit()
    Trainer(cfg(run, steps=8), fresh_model(), make_loss(True), make()).fit(resume=True)
    assert losses(run) == losses(ref)
    assert_same(final_weights(run)[0], final_weights(ref)[0])


@pytest.mark.parametrize("damage", ["truncate_weights", "nan_weights", "garble_state_json"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys, damage):
    ref, run = tmp_path / "ref", tmp_path / "run"
    Trainer(cfg(ref), fresh_model(), make_loss(True), World()).fit()

    def crash(tr):
        if tr.step == 8:  # right after the step-8 checkpoint: step_0000004 and step_0000008 exist
            raise Stop

    with pytest.raises(Stop):
        Trainer(cfg(run), fresh_model(), make_loss(True), World(), hooks=[crash]).fit()
    newest = latest_checkpoint(run / "checkpoints")
    assert newest.name == "step_0000008"
    weights = newest / "model.safetensors"
    if damage == "truncate_weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "nan_weights":
        sd = load_file(str(weights))
        sd["enc.weight"][0, 0] = float("nan")
        state_mod.save_file(sd, str(weights))
    else:
        (newest / "trainer_state.json").write_text("{not json")
    capsys.readouterr()
    Trainer(cfg(run), fresh_model(), make_loss(True), World()).fit(resume=True)
    err = capsys.readouterr().err
    assert "skipping corrupt checkpoint" in err and "resuming from step_0000004" in err
    assert losses(run) == losses(ref)  # steps 5-12 re-run from step 4, bit-identical
    assert_same(final_weights(run)[0], final_weights(ref)[0])

    for _, p in state_mod.list_checkpoints(run / "checkpoints"):  # nothing intact left: an error, not a fresh start
        (p / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no intact checkpoint under"):
        Trainer(cfg(run, steps=16), fresh_model(), make_loss(True), World()).fit(resume=True)


def test_fresh_run_refuses_existing_checkpoints(tmp_path):
    Trainer(cfg(tmp_path, steps=2, ckpt_every=2), fresh_model(), make_loss(False), World()).fit()
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        Trainer(cfg(tmp_path, steps=2), fresh_model(), make_loss(False), World()).fit()
    with pytest.raises(ValueError, match="lr"):  # a resume must continue the same trajectory
        Trainer(cfg(tmp_path, steps=4, lr=1.0), fresh_model(), make_loss(False), World()).fit(resume=True)


# ----------------------------------------------------------------------------- (b) DDP
def test_ddp_two_processes_equal_one_process_on_concatenated_batch(tmp_path):
    """Map-style data (contiguous rank slices) and a self-splitting stream (interleaved ranks)."""
    for name, make in (("map", World), ("stream", RankStream)):
        Trainer(cfg(tmp_path / f"single-{name}", **DDP_CFG), fresh_model(), make_loss(False), make()).fit()
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
                          "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(HERE), "ddp", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    for name in ("map", "stream"):
        ddp, single = tmp_path / f"ddp-{name}", tmp_path / f"single-{name}"
        assert_same(final_weights(ddp)[0], final_weights(single)[0], exact=False)
        assert_same(final_weights(ddp)[1], final_weights(single)[1], exact=False)
        for (s1, l1), (s2, l2) in zip(losses(ddp), losses(single), strict=True):
            assert s1 == s2 and math.isclose(l1, l2, rel_tol=1e-5)


DDP_CFG = dict(steps=4, batch_size=8, grad_accum=2, ckpt_every=4)
FSDP_CFG = dict(steps=6, batch_size=8, grad_accum=2, ckpt_every=3, parallel="fsdp")


def test_fsdp_two_processes_equal_one_process_and_resume_anywhere(tmp_path):
    """FSDP2 shards every block; its checkpoints are single-process ones, so either side resumes the other."""
    Trainer(cfg(tmp_path / "single", **FSDP_CFG), fresh_model(depth=2), make_loss(False), World()).fit()
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
                          "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(HERE), "fsdp", str(tmp_path)],
                         capture_output=True, text=True, timeout=180, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    single, fsdp = tmp_path / "single", tmp_path / "fsdp"
    assert any(k.startswith("body.blocks.1.") for k in final_weights(fsdp)[0])  # full tensors, plain names
    for a, b in zip(final_weights(fsdp), final_weights(single)):  # reduce-scatter sums in another order
        assert_same(a, b, exact=False, atol=2e-5)
    for (s1, l1), (s2, l2) in zip(losses(fsdp), losses(single), strict=True):
        assert s1 == s2 and math.isclose(l1, l2, rel_tol=1e-5)
    exported = load_module(fsdp / "model")  # the EMA weights, gathered into an unsharded twin
    assert_same(exported.state_dict(), final_weights(fsdp)[1], exact=True)
    # the 2-rank run's step-3 checkpoint, resumed on 1 rank, reaches the same step-6 weights
    resumed = tmp_path / "fsdp-half"
    shutil.copytree(fsdp, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_0000006")
    Trainer(cfg(resumed, **FSDP_CFG), fresh_model(depth=2), make_loss(False), World()).fit(resume=True)
    assert [s for s, _ in losses(resumed)] == list(range(1, 7))
    for a, b in zip(final_weights(resumed), final_weights(single)):
        assert_same(a, b, exact=False, atol=2e-5)


def test_compile_switch_compiles_every_block_and_keeps_the_loss(tmp_path):
    ref = Trainer(cfg(tmp_path / "eager", steps=3), fresh_model(depth=2), make_loss(False), World()).fit()
    model = fresh_model(depth=2)
    tr = Trainer(cfg(tmp_path / "compiled", steps=3, compile="aot_eager"), model, make_loss(False), World())
    assert all(b._compiled_call_impl is not None for b in model.body.blocks)
    assert math.isclose(tr.fit()["final_loss"], ref["final_loss"], rel_tol=1e-4)
    assert_same(final_weights(tmp_path / "compiled")[0], final_weights(tmp_path / "eager")[0], exact=False)
    with pytest.raises(ValueError, match="parallel"):
        cfg(tmp_path, parallel="zero3")


# ----------------------------------------------------------------------------- (c) divergence
def test_nan_loss_raises_naming_the_step_and_writes_no_checkpoint(tmp_path):
    def loss_fn(model, batch, step):
        loss, logs = model(batch["pixels"], step=step)
        if step == 2:  # the third update
            loss = loss * float("nan")
            logs["mse"] = loss
        return loss, logs

    tr = Trainer(cfg(tmp_path, ckpt_every=1), fresh_model(), loss_fn, World())
    with pytest.raises(TrainingDiverged, match=r"step 3\b.*loss=nan.*mse=nan") as err:
        tr.fit()
    assert err.value.step == 3
    assert [p.name for _, p in state_mod.list_checkpoints(tmp_path / "checkpoints")] == ["step_0000001", "step_0000002"]
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_0000002"
    assert [s for s, _ in losses(tmp_path)] == [1, 2]


# ----------------------------------------------------------------------------- (d) pieces
def test_lr_schedule_warmup_and_cosine_end():
    kw = dict(base_lr=1.0, total_steps=10, warmup_steps=4, min_lr_ratio=0.1)
    lrs = [lr_at(i, **kw) for i in range(10)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[-1] == pytest.approx(0.1)
    assert lrs[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))
    assert lr_at(0, base_lr=2.0, total_steps=1, warmup_steps=0, min_lr_ratio=0.0) == 0.0
    with pytest.raises(ValueError, match="min_lr_ratio"):
        lr_at(0, base_lr=1.0, total_steps=10, min_lr_ratio=1.5)


def test_ema_math():
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    m[0].weight.data.fill_(1.0)
    ema = EMA(m, decay=0.9, warmup=False)
    m[0].weight.data.fill_(3.0)
    m[1].num_batches_tracked.fill_(7)
    ema.update(m)
    assert torch.allclose(ema.model[0].weight, torch.full((2, 2), 0.9 * 1 + 0.1 * 3))
    assert ema.model[1].num_batches_tracked.item() == 7  # integer buffers are copied
    assert not any(p.requires_grad for p in ema.model.parameters())
    warm = EMA(m, decay=0.999)  # decay warms up as (1 + n) / (10 + n)
    assert warm.current_decay() == pytest.approx(0.1)
    warm.update(m)
    assert warm.current_decay() == pytest.approx(2 / 11)
    tied = nn.Sequential(nn.Embedding(3, 2), nn.Linear(2, 3, bias=False))
    tied[1].weight = tied[0].weight
    e = EMA(tied, decay=0.5, warmup=False)
    before = e.model[0].weight.clone()
    tied[0].weight.data.add_(2.0)
    e.update(tied)  # averaged once, not twice
    assert torch.allclose(e.model[0].weight, before + 1.0)
    tied[1].requires_grad_(False)  # frozen parameters are shared with the EMA copy, not duplicated
    assert EMA(tied, decay=0.5).model[1].weight is tied[1].weight


def test_grad_accumulation_matches_full_batch(tmp_path):
    outs = {}
    for accum in (1, 2):
        out = tmp_path / f"a{accum}"
        Trainer(cfg(out, steps=3, ckpt_every=3, grad_accum=accum), fresh_model(), make_loss(False), World()).fit()
        outs[accum] = out
    assert_same(final_weights(outs[1])[0], final_weights(outs[2])[0], exact=False)
    for (_, a), (_, b) in zip(losses(outs[1]), losses(outs[2]), strict=True):
        assert math.isclose(a, b, rel_tol=1e-6)


def test_weight_decay_only_on_matrices(tmp_path):
    tr = Trainer(cfg(tmp_path), fresh_model(), make_loss(False), World())
    groups = {g["weight_decay"]: {p.ndim for p in g["params"]} for g in tr.optimizer.param_groups}
    assert groups == {0.1: {2}, 0.0: {1}}


def _tiny_state(step: int) -> TrainingState:
    m = fresh_model()
    opt = torch.optim.AdamW(m.parameters())
    m(torch.zeros(1, 3, SIDE, SIDE))[0].backward()
    opt.step()
    return TrainingState(step=step, samples_seen=4 * step, model=m.state_dict(), optimizer=opt.state_dict(),
                         rng=[rng_state()], meta={"config": {}})


def test_checkpoint_failure_mid_write_keeps_previous(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    save_checkpoint(root, _tiny_state(2))
    real = state_mod.save_file

    def failing(tensors, path, *a, **kw):
        if path.endswith("optimizer.safetensors"):
            raise OSError("disk full")
        return real(tensors, path, *a, **kw)

    monkeypatch.setattr(state_mod, "save_file", failing)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(root, _tiny_state(3))
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000002"]  # no half-written folder
    st = load_checkpoint(latest_checkpoint(root))
    assert st.step == 2 and st.optimizer["state"][0]["step"].item() == 1.0
    assert st.optimizer["param_groups"][0]["betas"] == (0.9, 0.999)


def test_recipe_overrides_are_typed_and_unknown_keys_rejected():
    base = {"model": "test-tiny-tok", "data": {"spec": "world", "size": 8}, "train": {"steps": 10}}
    r = resolve_recipe(base, ["train.steps=100", "train.lr=3e-4", "train.betas=[0.9,0.99]", "data.size=32",
                              "data.spec=digits", "model_args.dim=16", "train.max_time_min=none"])
    assert r.train.steps == 100 and r.train.lr == 3e-4 and r.train.betas == (0.9, 0.99)
    assert r.data == {"spec": "digits", "size": 32} and r.model_args == {"dim": 16}
    assert r.train.max_time_min is None
    with pytest.raises(KeyError, match="stepz.*allowed.*steps"):
        resolve_recipe(base, ["train.stepz=1"])
    with pytest.raises(KeyError, match="modle.*allowed"):
        resolve_recipe(base, ["modle=x"])
    with pytest.raises(ValueError, match="steps"):
        resolve_recipe(base, ["train.steps=many"])
    with pytest.raises(KeyError, match="bogus.*allowed"):  # model_args are typed by the preset's config
        train("tokenizer", base, ["model_args.bogus=1"], out="/nonexistent/never", dataset_factory=lambda spec, **kw: World())


def test_train_tokenizer_recipe_end_to_end_and_resume(tmp_path):
    recipe = tmp_path / "tok.yaml"
    recipe.write_text(yaml.safe_dump({"model": "test-tiny-tok", "model_args": {"dim": 4},
                                      "data": {"spec": "world", "size": SIDE},
                                      "train": dict(steps=4, batch_size=4, ema_decay=0.5, ckpt_every=2, log_every=2,
                                                    progress=False, tensorboard=True, num_workers=0)}))
    seen = []

    def factory(spec, **kw):
        seen.append((spec, kw))
        return World()

    out = tmp_path / "run"
    model_dir = train("tokenizer", str(recipe), ["train.lr=0.01"], out=str(out), dataset_factory=factory)
    assert model_dir == out / "model" and seen == [("world", {"size": SIDE})]
    tok = load_module(model_dir)
    assert isinstance(tok, TinyTok) and tok.config.dim == 4
    assert_same(tok.state_dict(), final_weights(out)[1])  # EMA weights exported
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["train"]["lr"] == 0.01 and saved["out"] == str(out)
    assert [s for s, _ in losses(out)] == [2, 4] and any((out / "tb").iterdir())
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step_seen"] == 2.5  # mean of steps 2, 3

    with pytest.raises(FileExistsError):
        train("tokenizer", str(recipe), ["train.lr=0.01"], out=str(out), dataset_factory=factory)
    with pytest.raises(ValueError, match="train.lr"):
        train("tokenizer", str(recipe), ["train.lr=0.02"], out=str(out), resume=True, dataset_factory=factory)
    train("tokenizer", str(recipe), ["train.lr=0.01", "train.steps=6"], out=str(out), resume=True, dataset_factory=factory)
    assert [s for s, _ in losses(out)] == [2, 4, 6]


def test_train_generator_recipe_with_fake_generator(tmp_path, monkeypatch):
    tok_dir = fresh_model().save_pretrained(tmp_path / "tok")
    saved = {}
    fakes = {"mmgen.models.base": ("tokenizer_overrides", lambda tok: {"in_dim": tok.config.dim}),
             "mmgen.pipeline": ("save_pipeline", lambda path, gen, tok: saved.update(path=path, gen=gen, tok=tok))}
    for module, (attr, fake) in fakes.items():  # patch the real modules where they exist
        try:
            monkeypatch.setattr(importlib.import_module(module), attr, fake)
        except ImportError:
            monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(**{attr: fake}))
    recipe = {"model": "test-fake-gen", "tokenizer": str(tok_dir), "data": {"spec": "world"},
              "train": dict(steps=3, batch_size=4, ckpt_every=3, ema_decay=0.5, progress=False, tensorboard=False)}
    out = train("generator", recipe, out=str(tmp_path / "gen"), dataset_factory=lambda spec: World())
    assert saved["path"] == out and isinstance(saved["gen"], FakeGen) and saved["gen"].config.in_dim == 8
    assert not saved["gen"].training and not any(p.requires_grad for p in saved["gen"].parameters())  # the EMA copy
    assert_same(saved["tok"].state_dict(), load_module(tok_dir).state_dict())  # tokenizer untouched
    assert saved["gen"].tok is saved["tok"]  # the EMA copy shares the bound tokenizer
    with pytest.raises(ValueError, match="in_dim"):
        train("generator", recipe, ["model_args.in_dim=3"], out=str(tmp_path / "g2"), dataset_factory=lambda spec: World())
    with pytest.raises(ValueError, match="kind='painter'"):
        train("painter", recipe, out=str(tmp_path / "g3"))


def test_image_hook_and_time_limit(tmp_path):
    def sample_fn(model, ema_model, step):
        assert not model.training and ema_model is not None
        torch.randn(5)  # must not disturb the training RNG
        return torch.full((3, 6, 6), step, dtype=torch.uint8)

    ref = tmp_path / "ref"
    Trainer(cfg(ref, steps=4), fresh_model(), make_loss(True), World()).fit()
    out = tmp_path / "img"
    Trainer(cfg(out, steps=4, image_every=2), fresh_model(), make_loss(True), World(), sample_fn=sample_fn).fit()
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    assert losses(out) == losses(ref)
    s = Trainer(cfg(tmp_path / "t", max_time_min=0.0), fresh_model(), make_loss(False), World()).fit()
    assert s["stopped_early"] and s["steps"] == 1 and latest_checkpoint(tmp_path / "t" / "checkpoints").name == "step_0000001"
    assert {"final_loss", "seconds", "samples_per_s", "peak_mem_mb"} <= s.keys()


# ----------------------------------------------------------------------------- subprocess workers
def _worker_train(out: str, pause_at: str) -> None:
    def pause(tr):
        if tr.step == int(pause_at):
            time.sleep(600)  # the test SIGKILLs us here

    Trainer(cfg(Path(out)), fresh_model(), make_loss(True), World(), hooks=[pause]).fit()


def _worker_ddp(out: str) -> None:
    torch.distributed.init_process_group("gloo")  # ours, so both runs share it (the Trainer leaves it alone)
    try:
        for name, make in (("map", World), ("stream", RankStream)):
            Trainer(cfg(Path(out) / f"ddp-{name}", **DDP_CFG), fresh_model(), make_loss(False), make()).fit()
    finally:
        torch.distributed.barrier()  # rank 0 may still be writing; gloo aborts if a peer leaves early
        torch.distributed.destroy_process_group()
    # Interpreter shutdown can race gloo's background threads on a loaded machine ("terminate called
    # without an active exception", an upstream teardown issue); everything is written, so leave now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _worker_fsdp(out: str) -> None:
    torch.distributed.init_process_group("gloo")
    try:
        Trainer(cfg(Path(out) / "fsdp", **FSDP_CFG), fresh_model(depth=2), make_loss(False), World()).fit()
    finally:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    {"train": _worker_train, "ddp": _worker_ddp, "fsdp": _worker_fsdp}[sys.argv[1]](*sys.argv[2:])


def test_init_starts_from_a_trained_model_and_rejects_a_different_one(tmp_path):
    base = {"model": "test-tiny-tok", "model_args": {"dim": 4}, "data": {"spec": "world"},
            "train": dict(steps=2, batch_size=4, ckpt_every=2, ema_decay=0.0, lr=0.0, warmup_steps=0, weight_decay=0.0,
                          progress=False, tensorboard=False, num_workers=0)}
    first = train("tokenizer", {**base, "train": {**base["train"], "lr": 0.01}}, out=str(tmp_path / "a"), dataset_factory=lambda spec: World())
    # lr=0: the fine-tune leaves the weights where init put them, so the export equals the source
    again = train("tokenizer", {**base, "init": str(first)}, out=str(tmp_path / "b"), dataset_factory=lambda spec: World())
    assert_same(load_module(again).state_dict(), load_module(first).state_dict())
    fresh = train("tokenizer", base, out=str(tmp_path / "c"), dataset_factory=lambda spec: World())
    assert any(not torch.equal(a, b) for a, b in zip(load_module(fresh).state_dict().values(), load_module(first).state_dict().values()))
    with pytest.raises(ValueError, match="does not fit"):
        train("tokenizer", {**base, "model_args": {"dim": 6}, "init": str(first)}, out=str(tmp_path / "d"), dataset_factory=lambda spec: World())


def test_init_only_loads_a_part_and_freeze_keeps_it_while_the_rest_trains(tmp_path):
    base = {"model": "test-tiny-tok", "model_args": {"dim": 4}, "data": {"spec": "world"},
            "train": dict(steps=3, batch_size=4, ckpt_every=3, ema_decay=0.0, lr=0.01, warmup_steps=0, weight_decay=0.0,
                          progress=False, tensorboard=False, num_workers=0)}
    run = lambda name, **kw: train("tokenizer", {**base, **kw}, out=str(tmp_path / name), dataset_factory=lambda spec: World())  # noqa: E731
    first = load_module(run("a"))
    # a model with an extra part (a transformer body) starts from the trained encoder, which stays frozen
    grown = load_module(run("b", model_args={"dim": 4, "depth": 1}, init=str(tmp_path / "a" / "model"),
                            init_only=["enc.", "norm."], freeze=["enc.", "norm."]))
    for name in ("enc.weight", "enc.bias", "norm.weight", "norm.bias"):
        assert torch.equal(grown.state_dict()[name], first.state_dict()[name]), name
    assert not torch.equal(grown.dec.weight, first.dec.weight)  # not loaded: fresh init, then trained
    with pytest.raises(ValueError, match="'encc.' matches no parameter"):
        run("c", init=str(tmp_path / "a" / "model"), init_only=["encc."])
    with pytest.raises(ValueError, match="lacks or has other shapes"):
        run("d", model_args={"dim": 4, "depth": 1}, init=str(tmp_path / "a" / "model"), init_only=["body."])
    with pytest.raises(ValueError, match="init_only needs init"):
        run("e", init_only=["enc."])
    with pytest.raises(ValueError, match="'nope' matches no parameter"):
        run("f", freeze=["nope"])
