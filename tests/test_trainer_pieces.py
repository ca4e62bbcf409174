"""Trainer pieces: schedule, EMA, accumulation, weight decay, recipes end to end, hooks, init/freeze."""
from __future__ import annotations

import importlib
import json
import math
import sys
import types

import pytest
import torch
import yaml
from torch import nn
from trainer_kit import SIDE, FakeGen, TinyTok, World, assert_same, cfg, final_weights, fresh_model, losses, make_loss

from mmgen.modeling import load_module
from mmgen.train import EMA, Trainer, lr_at, resolve_recipe, train
from mmgen.train.state import latest_checkpoint


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
