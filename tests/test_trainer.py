"""Trainer faults and parallelism: exact resume (SIGKILL, exceptions, corrupt checkpoints), DDP, FSDP, compile, divergence."""
from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from trainer_kit import DDP_CFG, FSDP_CFG, HERE, SIDE, Finite, RankStream, Stop, Stream, World, assert_same, cfg, final_weights, free_port, fresh_model, losses, make_loss

from mmgen.modeling import load_module
from mmgen.train import Trainer, TrainingDiverged
from mmgen.train import state as state_mod
from mmgen.train.state import TrainingState, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint


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
