"""The parts of ``bench/record_parity.py`` that need no official code: logit summaries, row choices, arguments.

The summaries must be what ``mmgen.convert.verify`` consumes: a file recorded from some logits verifies
those logits with zero difference and flags a change.
"""
from __future__ import annotations

import json

import pytest
import torch

from mmgen.bench import record_parity as rp
from mmgen.convert.verify import _summaries


def _logits(B=2, L=21, V=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, V, generator=g), torch.randint(0, V, (B, L - 1), generator=g)


def test_summarise_equals_direct_computation():
    logits, targets = _logits()
    rows = rp.raster_rows(logits.shape[1])
    s = rp.summarise(logits, targets, rows, "logits_raster", "at_label")
    B, L, V = logits.shape
    for b in range(B):
        for i in range(L):
            row = logits[b, i].double()
            assert torch.isclose(s["logits_raster_lse"][b, i].double(), row.exp().sum().log(), atol=1e-5)
            assert torch.isclose(s["logits_raster_sum"][b, i].double(), row.sum(), atol=1e-4)
            assert s["logits_raster_argmax"][b, i] == max(range(V), key=lambda v: row[v])
            if i < targets.shape[1]:
                assert s["logits_raster_at_label"][b, i] == logits[b, i, targets[b, i]]
    assert s["logits_raster_at_label"].shape == targets.shape
    assert torch.equal(s["logits_raster_rows"], torch.stack([logits[:, int(r)] for r in rows], 1))


def test_summaries_are_what_verify_consumes():
    logits, targets = _logits(L=40)
    io = rp.summarise(logits, targets, rp.raster_rows(40), "logits", "at_target") | {"logits_rows_index": rp.raster_rows(40)}
    same, moved = {}, {}
    _summaries(same, logits, io, "logits", "at_target", targets)
    assert all(v == 0 or v["max_abs"] == 0 for v in same.values())
    shifted = logits.clone()
    shifted[1, int(io["logits_rows_index"][-1]), 3] += 0.5
    _summaries(moved, shifted, io, "logits", "at_target", targets)
    assert moved["logits_rows"]["max_abs"] == pytest.approx(0.5) and moved["logits_lse"]["max_abs"] > 0


@pytest.mark.parametrize("length", [1, 5, 9, 24, 40, 257])
def test_raster_rows_head_every_16th_and_tail(length):
    rows = rp.raster_rows(length).tolist()
    want = [i for i in range(length) if i < 8 or (i - 8) % 16 == 0 or i >= length - 8]
    assert rows == want


def test_scale_rows_first_two_and_last_two_of_each_scale():
    scales = [1, 2, 3, 5]
    rows = set(rp.scale_rows(scales).tolist())
    start = 0
    for p in scales:
        block = list(range(start, start + p * p))
        assert {r for r in rows if start <= r < start + p * p} == set(block[:2] + block[-2:])
        start += p * p
    assert max(rows) == start - 1


def test_top2_gap_is_the_margin_of_the_sorted_values():
    x = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(1))
    s = x.sort(-1, descending=True).values
    assert torch.equal(rp.top2_gap(x), s[..., 0] - s[..., 1])


def test_summarise_rejects_bad_shapes():
    logits, targets = _logits(L=6)
    with pytest.raises(ValueError, match="must be"):
        rp.summarise(logits, torch.zeros(2, 7, dtype=torch.long), rp.raster_rows(6), "logits", "at_target")
    with pytest.raises(ValueError, match="outside"):
        rp.summarise(logits, targets, torch.tensor([0, 6]), "logits", "at_target")


def test_labels_must_fit_the_checkpoint():
    assert rp._labels(None, "llamagen", 1000).tolist() == rp.DEFAULT_LABELS["llamagen"]
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        rp._labels(None, "var", 50)


@pytest.fixture
def files(tmp_path):
    w = tmp_path / "w.pth"
    w.write_bytes(b"")
    return ["--official-repo", str(tmp_path), "--weights", str(w)], tmp_path


@pytest.mark.parametrize("extra, message", [
    (["--family", "rar", "--out", "x.safetensors"], "_io.safetensors"),
    (["--family", "var", "--out", "x_io.safetensors"], "--tokenizer-weights"),
    (["--family", "rar", "--out", "x_io.safetensors", "--args", "[1]"], "JSON object"),
    (["--family", "rar", "--out", "x_io.safetensors", "--args", "{bad"], "JSON object"),
    (["--family", "rar", "--out", "x_io.safetensors", "--labels", "3,x"], "comma-separated integers"),
    (["--family", "rar", "--out", "x_io.safetensors", "--inputs", "missing_io.safetensors"], "does not exist"),
    (["--family", "dit", "--out", "x_io.safetensors"], "invalid choice"),
])
def test_argument_errors_name_the_bad_value(files, capsys, extra, message):
    common, _ = files
    with pytest.raises(SystemExit):
        rp.parse_args(common + extra)
    assert message in capsys.readouterr().err


def test_arguments_parse(files):
    common, tmp = files
    a = rp.parse_args(common + ["--family", "llamagen", "--out", str(tmp / "m_io.safetensors"), "--args", json.dumps({"n_head": 4}),
                                "--labels", "1,2,3"])
    assert a.args == {"n_head": 4} and a.labels == [1, 2, 3] and a.seed == 5
