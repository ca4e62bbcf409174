"""Run a parity file's reference inputs through a converted generator and measure the differences.

A parity file (``<name>_io.safetensors``, format in ``shared/fixtures/parity/README.md``) holds the
official module's inputs and its outputs: teacher-forced logits summarised per row (logsumexp,
sum, argmax, the logit at the target) plus full rows at ``*_rows_index``, the loss, the first
guided logits/probabilities of sampling, and a greedy (top-1) token sequence. ``verify`` returns
one JSON-able report: max abs / rel difference per output, argmax mismatches, and whether the
greedy tokens are identical.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from mmgen.models.base import Condition
from mmgen.sampler import SamplerConfig, cfg_scale_at
from mmgen.tokens import Tokens

__all__ = ["verify", "TOLERANCE", "fixture_sampling"]

TOLERANCE = 1e-4  # fp32 logits, absolute
# the sampling calls of the parity fixtures (README); a sidecar <name>.json overrides them
_SAMPLING = {"llamagen": {"cfg_scale": 4.0}, "rar": {"guidance_scale": 16.0, "guidance_scale_pow": 2.75, "randomize_temperature": 1.0},
             "var": {"cfg": 1.5}}


def fixture_sampling(family: str, io_path: str | Path | None = None) -> SamplerConfig:
    """The greedy sampler equivalent to the official call that made the fixture (top-1 / argmax)."""
    s = dict(_SAMPLING[family])
    side = Path(str(io_path).removesuffix("_io.safetensors") + ".json") if io_path else None
    if side is not None and side.is_file():
        meta = json.loads(side.read_text())
        s |= {k: v for k, v in (meta.get("generate") or meta.get("autoregressive_infer_cfg") or {}).items() if k in s}
    if family == "llamagen":
        return SamplerConfig(cfg_scale=s["cfg_scale"], top_k=1)
    if family == "rar":
        return SamplerConfig(cfg_scale=s["guidance_scale"], cfg_schedule="power-cosine", cfg_power=s["guidance_scale_pow"],
                             temperature=s["randomize_temperature"], top_k=1)
    return SamplerConfig(cfg_scale=1.0 + s["cfg"], cfg_schedule="linear", top_k=1)  # VAR: (1+t)c - t*u, t = cfg * si/(K-1)


def _diff(mine: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    d = (mine.double() - ref.double()).abs()
    return {"max_abs": float(d.max()), "max_rel": float((d / ref.double().abs().clamp_min(1e-6)).max())}


def _summaries(report: dict, logits: torch.Tensor, io: dict, prefix: str, target_key: str, targets: torch.Tensor) -> None:
    """Compare ``logits (B, L, V)`` with the stored summaries ``<prefix>_*`` over the rows both have."""
    n = min(logits.shape[1], io[f"{prefix}_lse"].shape[1])
    lg = logits[:, :n].float()
    report[f"{prefix}_lse"] = _diff(lg.logsumexp(-1), io[f"{prefix}_lse"][:, :n])
    report[f"{prefix}_mean"] = _diff(lg.mean(-1), io[f"{prefix}_sum"][:, :n] / lg.shape[-1])  # the stored sum, per vocabulary entry
    report[f"{prefix}_{target_key}"] = _diff(lg.gather(-1, targets[:, :n, None])[..., 0], io[f"{prefix}_{target_key}"][:, :n])
    report[f"{prefix}_argmax_mismatches"] = int((lg.argmax(-1) != io[f"{prefix}_argmax"][:, :n]).sum())
    rows = io["logits_rows_index"]
    keep = rows < n
    report[f"{prefix}_rows"] = _diff(lg[:, rows[keep]], io[f"{prefix}_rows"][:, keep])


@torch.no_grad()
def verify(family: str, gen, io_path: str | Path, tokenizer=None) -> dict[str, Any]:
    """Report of ``gen`` (converted, eval) against the parity file ``io_path``; VAR's sampling needs its ``tokenizer``."""
    io = load_file(str(io_path))
    gen = gen.eval()
    sampler = fixture_sampling(family, io_path)
    rep: dict[str, Any] = {"family": family, "tolerance": TOLERANCE}
    out = {}
    if family == "llamagen":
        cond, z = Condition(len(io["cond_idx"]), labels=io["cond_idx"]), io["z_indices"]
        logits = gen.logits(Tokens(gen.layout, ids=z), cond)
        _summaries(out, logits, io, "logits", "at_target", z)
        out["loss"] = _diff(F.cross_entropy(logits.flatten(0, 1).float(), z.flatten())[None], io["loss"])
        ref_tokens = io["gen_tokens"]
        guided = _guided_teacher_forced(gen, Tokens(gen.layout, ids=ref_tokens), cond, sampler)[:, :4]
        out["gen_logits_first4"] = _diff(guided, io["gen_logits_first4"])
    elif family == "rar":
        cond, z = Condition(len(io["class_labels"]), labels=io["class_labels"]), io["input_ids"]
        for name, order in (("raster", None), ("perm", io.get("orders"))):
            targets = z if order is None else z.gather(1, order)
            logits = gen.logits(Tokens(gen.layout, ids=z), cond, order)
            _summaries(out, logits, io, f"logits_{name}", "at_label", targets)
            out[f"loss_{name}"] = _diff(F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())[None], io[f"loss_{name}"])
        ref_tokens = io["gen_tokens"]
        guided = _guided_teacher_forced(gen, Tokens(gen.layout, ids=ref_tokens), cond, sampler)[:, :4]
        out["gen_probs_first4"] = _diff((guided / sampler.temperature).softmax(-1), io["gen_probs_first4"])
    elif family == "var":
        cond = Condition(len(io["label_B"]), labels=io["label_B"])
        logits = gen.logits_from_input(io["x_BLCv_wo_first_l"], cond)
        _summaries(out, logits, io, "logits", "at_gt", io["gt_idx"])
        out["loss_ce"] = _diff(F.cross_entropy(logits.flatten(0, 1).float(), io["gt_idx"].flatten())[None], io["loss_ce"])
        ref_tokens = io["ar_idx"]
        if tokenizer is not None:
            gen.bind_tokenizer(tokenizer)
        guided = _guided_teacher_forced(gen, Tokens(gen.layout, ids=ref_tokens), cond, sampler, tokenizer is not None)
        for k, part in enumerate(gen.layout.split(guided)[: 3 if tokenizer is not None else 1]):  # scale 0 needs no tokenizer
            out[f"ar_logits_s{k}"] = _diff(part, io[f"ar_logits_s{k}"])
    else:
        raise ValueError(f"unknown family {family!r}; choose one of ['var', 'llamagen', 'rar']")
    rep["outputs"] = out
    rep["greedy_tokens_identical"] = None
    if family != "var" or tokenizer is not None:
        tokens = gen.generate(cond, sampler).ids
        rep["greedy_tokens_identical"] = bool(torch.equal(tokens, ref_tokens))
        rep["greedy_token_mismatches"] = int((tokens != ref_tokens).sum())
        if family == "var":
            rep["outputs"]["ar_fhat"] = _diff(tokenizer.ids_to_fhat(tokens), io["ar_fhat"])
    worst = max((v["max_abs"] for v in out.values() if isinstance(v, dict)), default=0.0)
    argmax_bad = sum(v for k, v in out.items() if k.endswith("_mismatches"))
    rep["max_abs"] = worst
    rep["ok"] = bool(worst <= TOLERANCE and argmax_bad == 0 and rep["greedy_tokens_identical"] is not False and math.isfinite(worst))
    return rep


def _guided_teacher_forced(gen, tokens: Tokens, cond: Condition, sampler: SamplerConfig, has_tokenizer: bool = True) -> torch.Tensor:
    """Guided logits at every step of a known sequence: ``uncond + s(progress) * (cond - uncond)`` with the sampler's schedule.

    VAR without a tokenizer feeds zeros as next-scale inputs: only scale 0's rows are then meaningful.
    """
    both = cond.cat(gen.cond_embed.null(cond.batch_size, gen.device))
    ids = tokens.ids.repeat(2, 1)
    if hasattr(gen, "logits_from_input"):  # VAR: one scale per step
        n0 = gen.layout.group_sizes[0]
        var_input = gen.tokenizer.ids_to_var_input(ids) if has_tokenizer else torch.zeros(ids.shape[0], ids.shape[1] - n0, gen.config.token_dim)
        logits = gen.logits_from_input(var_input, both).float()
        steps = torch.repeat_interleave(torch.arange(len(gen.layout.scales)), torch.tensor(gen.layout.group_sizes))
        K = len(gen.layout.scales)
    else:
        logits = gen.logits(Tokens(tokens.layout, ids=ids), both).float()
        steps, K = torch.arange(logits.shape[1]), logits.shape[1]
    scales = torch.tensor([cfg_scale_at(sampler, int(k), K) for k in steps])
    c, u = logits.chunk(2)
    return u + scales[None, :, None] * (c - u)
