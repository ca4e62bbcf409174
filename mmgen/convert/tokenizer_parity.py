"""Run a tokenizer parity file's reference inputs through a converted tokenizer (``--verify``).

Parity files (``<name>_io.safetensors``; formats in ``shared/fixtures/parity/README.md`` and
``tests/fixtures/*.json``) hold the official module's inputs and outputs. The
family is read from the file's keys: VAR's VQVAE (``idx``), LlamaGen's VQ (``enc_h``), MaskGIT's
VQGAN (``img01``). The report gives the max abs difference per output, the number of code
mismatches, and ``ok``: codes identical and every difference within ``TOLERANCE``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

__all__ = ["verify_tokenizer", "TOLERANCE"]

# max abs difference per output (fp32): pixels and encoder features 1e-4 (the official code's own
# two decode paths differ by 2e-5), quantizer states 1e-5, losses 1e-5 relative
TOLERANCE = {"features": 1e-4, "pixels": 1e-4, "quantized": 1e-5, "loss": 1e-5}


def _max_abs(mine: torch.Tensor, ref: torch.Tensor) -> float:
    if mine.shape != ref.shape:
        raise ValueError(f"shape {tuple(mine.shape)} != reference {tuple(ref.shape)}")
    return float((mine.double() - ref.double()).abs().max())


def _train_quantize(tok, pixels: torch.Tensor):
    """The training-mode quantizer pass (its losses), leaving the tokenizer in eval mode and its stats untouched."""
    tok.train()
    try:
        return tok.quantize(pixels)
    finally:
        tok.eval()


@torch.no_grad()
def _var(tok, io) -> tuple[dict, torch.Tensor, torch.Tensor]:
    img = io["img"]
    out = {"f": ("features", _max_abs(tok.quant_conv(tok.encoder(img)), io["f"]))}
    f_hat, per_scale = tok.empty_fhat(img.shape[0]), []
    for si, ids in enumerate(tok.layout.split(io["idx"])):
        f_hat, _ = tok.next_scale_input(si, f_hat, ids)
        per_scale.append(f_hat)
    out["fhat"] = ("quantized", _max_abs(torch.stack(per_scale, 1), io["fhat"]))
    out["recon_unclamped"] = ("pixels", _max_abs(tok._decode_latent(io["fhat"][:, -1]), io["recon_unclamped"]))
    out["var_input"] = ("quantized", _max_abs(tok.ids_to_var_input(io["idx"]), io["var_input"]))
    with torch.enable_grad():
        loss = _train_quantize(tok, img).loss
    out["fwd_vq_loss"] = ("loss", abs(loss.item() / io["fwd_vq_loss"].item() - 1))
    tokens = tok.encode(img)
    out["decode(encode(img))"] = ("pixels", _max_abs(tok.decode(tokens), io["recon_unclamped"].clamp(-1, 1)))
    return out, tokens.ids, io["idx"]


@torch.no_grad()
def _llamagen(tok, io) -> tuple[dict, torch.Tensor, torch.Tensor]:
    img = io["img"]
    h = tok.encoder(img)
    out = {"enc_h": ("features", _max_abs(h, io["enc_h"])), "z": ("features", _max_abs(tok.quant_conv(h), io["z"]))}
    q = tok.quantize(img)
    out["quant"] = ("quantized", _max_abs(q.quantized, io["quant"]))
    out["dec"] = ("pixels", _max_abs(tok._decode_latent(io["quant"]), io["dec"]))
    with torch.enable_grad():
        logs = _train_quantize(tok, img).logs
    out["train_vq_loss"] = ("loss", abs(logs["codebook_loss"].item() - io["train_vq_loss"].item()) / io["train_vq_loss"].item())
    commit = tok.config.beta * logs["commit_loss"].item()
    out["train_commit_loss"] = ("loss", abs(commit - io["train_commit_loss"].item()) / io["train_commit_loss"].item())
    if "entropy_loss" in logs:  # logged unweighted; LlamaGen reports it times entropy_loss_ratio
        ent = tok.config.entropy_weight * logs["entropy_loss"].item()
        out["train_entropy_loss"] = ("loss", abs(ent - io["train_entropy_loss"].item()) / abs(io["train_entropy_loss"].item()))
    out["decode(encode(img))"] = ("pixels", _max_abs(tok.decode(tok.encode(img)), io["dec"].clamp(-1, 1)))
    return out, q.ids, io["codes"].flatten(1)


@torch.no_grad()
def _maskgit(tok, io) -> tuple[dict, torch.Tensor, torch.Tensor]:
    x = io["img01"] * 2 - 1  # MaskGIT works on [0, 1], mmgen on [-1, 1]
    out = {"z": ("features", _max_abs(tok.encoder(x), io["z"]))}
    q = tok.quantize(x)
    out["dec01"] = ("pixels", _max_abs(tok._decode_latent(q.quantized), io["dec01"] * 2 - 1))
    out["decode(encode(img))"] = ("pixels", _max_abs(tok.decode(tok.encode(x)), (io["dec01"] * 2 - 1).clamp(-1, 1)))
    return out, q.ids, io["codes"]


def verify_tokenizer(tok, io_path: str | Path) -> dict[str, Any]:
    """Report of converted tokenizer ``tok`` against the parity file ``io_path`` (see module docstring)."""
    io = load_file(str(io_path))
    family = next((f for key, f in (("idx", "var"), ("enc_h", "llamagen"), ("img01", "maskgit")) if key in io), None)
    if family is None:
        raise ValueError(f"{io_path} is not a tokenizer parity file (keys {sorted(io)[:6]}); expected idx, enc_h or img01")
    outputs, codes, ref_codes = {"var": _var, "llamagen": _llamagen, "maskgit": _maskgit}[family](tok.eval(), io)
    mismatches = int((codes != ref_codes).sum()) if codes.shape == ref_codes.shape else -1
    report = {"family": family, "code_mismatches": mismatches, "codes_identical": mismatches == 0,
              "outputs": {k: {"max_abs" if kind != "loss" else "rel": d, "tol": TOLERANCE[kind]} for k, (kind, d) in outputs.items()}}
    report["ok"] = report["codes_identical"] and all(d <= TOLERANCE[kind] for kind, d in outputs.values())
    return report
