"""bf16 only where it pays: the probe of bf16 matrix units, and the warning where bf16 is asked for without them."""
from __future__ import annotations

import warnings

import pytest
import torch
from trainer_kit import World, cfg, fresh_model, make_loss

from mmgen.precision import bf16_is_fast, warn_if_slow_bf16
from mmgen.train import Trainer


def _cpu(monkeypatch, *, x86: bool, bf16: bool, amx: bool = False) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx2_supported", lambda: x86)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize("bf16, amx, fast", [(False, False, False), (True, False, True), (False, True, True)])
def test_probe_reads_the_cpus_bf16_units(monkeypatch, bf16, amx, fast):
    _cpu(monkeypatch, x86=True, bf16=bf16, amx=amx)
    assert bf16_is_fast("cpu") is fast


def test_probe_makes_no_claim_it_cannot_check(monkeypatch):
    _cpu(monkeypatch, x86=False, bf16=False)  # e.g. an ARM CPU: the x86 probes say nothing
    assert bf16_is_fast("cpu") is None
    assert bf16_is_fast("meta") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_slow_bf16("cpu")


def test_warning_only_without_bf16_units(monkeypatch):
    _cpu(monkeypatch, x86=True, bf16=False)
    with pytest.warns(UserWarning, match="no bf16 matrix units"):
        warn_if_slow_bf16("cpu", "--precision bf16")
    _cpu(monkeypatch, x86=True, bf16=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_slow_bf16("cpu")


def test_trainer_warns_on_bf16_it_cannot_run_fast_and_still_trains(tmp_path, monkeypatch):
    _cpu(monkeypatch, x86=True, bf16=False)
    with pytest.warns(UserWarning, match="train.precision=bf16"):
        tr = Trainer(cfg(tmp_path / "bf16", steps=2, precision="bf16"), fresh_model(), make_loss(False), World())
    assert tr.autocast_dtype is torch.bfloat16  # a warning, not a silent switch to fp32
    assert tr.fit()["steps"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tr = Trainer(cfg(tmp_path / "fp32", steps=2, precision="fp32"), fresh_model(), make_loss(False), World())
    assert tr.autocast_dtype is None
