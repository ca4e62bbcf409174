"""Record a parity file from your own official checkpoint, with your own clone of the official code.

    python bench/record_parity.py --family var --official-repo ~/VAR --weights var_d16.pth \\
        --tokenizer-weights vae_ch160v4096z32.pth --out var_d16_io.safetensors
    mmgen convert --family var --generator var_d16.pth --tokenizer vae_ch160v4096z32.pth --out models/var-d16 \\
        --verify var_d16_io.safetensors

The shared parity fixtures prove the converter on small random models; this proves *your* conversion
of a full-size file. The official module is imported from ``--official-repo`` (nothing official is
copied here) and built with the constructor arguments inferred from the weights' shapes
(``mmgen.convert.generators.infer_args``; ``--args`` overrides, official names). The weights are read
with ``load_official_state`` (``weights_only`` / safetensors: no pickled code runs). The official calls
then run as ``shared/fixtures/parity/README.md`` describes for each fixture: teacher-forced logits
(summarised per row, full rows at the README's row indices), the loss, and the greedy (top-1) sampling
call with its first guided logits / probabilities and top-1 minus top-2 gaps. Writes ``NAME_io.safetensors``
in the fixtures' format and the sidecar ``NAME.json`` (constructor and sampling-call arguments, which
``mmgen.convert.verify.fixture_sampling`` reads).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import platform
import subprocess
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mmgen.convert.generators import infer_args, load_official_state
from mmgen.convert.tokenizers import infer_var_vqvae_args

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or as a module
from parity_official import Cfg, official_code  # noqa: E402

FAMILIES = ("var", "llamagen", "rar")
DEFAULT_LABELS = {"var": [3, 987], "llamagen": [207, 360], "rar": [207, 360]}  # the fixtures' labels
# the sampling calls of the fixtures (README); verify.fixture_sampling reads them back from the sidecar
LLAMAGEN_CALL = dict(cfg_scale=4.0, cfg_interval=-1, temperature=1.0, top_k=1, top_p=1.0, sample_logits=True)
RAR_CALL = dict(guidance_scale=16.0, randomize_temperature=1.0, guidance_scale_pow=2.75, kv_cache=True)
VAR_CALL = dict(g_seed=0, cfg=1.5, top_k=1, top_p=0.0, more_smooth=False)
INPUT_KEYS = {"var": ("label_B", "gt_idx"), "llamagen": ("cond_idx", "z_indices"), "rar": ("class_labels", "input_ids", "orders")}


# ----------------------------------------------------------------------------- summaries (no official code)
def raster_rows(length: int) -> torch.Tensor:
    """Rows kept in full for a raster sequence: 0..7, every 16th from 8, and the last 8 (the fixtures' choice)."""
    return torch.tensor(sorted(set(range(min(8, length))) | set(range(8, length, 16)) | set(range(max(length - 8, 0), length))))


def scale_rows(patch_nums: list[int]) -> torch.Tensor:
    """Rows kept in full for VAR: the first two and last two positions of each scale."""
    rows, start = set(), 0
    for p in patch_nums:
        end = start + p * p
        rows |= {r for r in (start, start + 1, end - 2, end - 1) if start <= r < end}
        start = end
    return torch.tensor(sorted(rows))


def summarise(logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, prefix: str, target_key: str) -> dict[str, torch.Tensor]:
    """A ``(B, L, V)`` logit tensor as the fixtures store it: per-row lse / sum / argmax, the logit at the target, full rows.

    ``targets`` may be shorter than ``L`` (RAR's last row predicts nothing): ``*_<target_key>`` covers its length.
    """
    if logits.dim() != 3 or targets.shape[0] != logits.shape[0] or targets.shape[1] > logits.shape[1]:
        raise ValueError(f"logits {tuple(logits.shape)} must be (B, L, V) with targets (B, <=L), got targets {tuple(targets.shape)}")
    if len(rows) and int(rows.max()) >= logits.shape[1]:
        raise ValueError(f"row index {int(rows.max())} is outside the {logits.shape[1]} rows")
    lg = logits.detach().float()
    n = targets.shape[1]
    return {f"{prefix}_lse": lg.logsumexp(-1), f"{prefix}_sum": lg.sum(-1), f"{prefix}_argmax": lg.argmax(-1),
            f"{prefix}_{target_key}": lg[:, :n].gather(-1, targets.long()[..., None])[..., 0], f"{prefix}_rows": lg[:, rows]}


def top2_gap(x: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 along the last axis: a greedy reimplementation within this margin picks the same token."""
    top = x.float().topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


# ----------------------------------------------------------------------------- official modules
def _load(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{what}: the official module does not match the weights (missing {missing[:6]}, unexpected {unexpected[:6]}); "
                         "pass the constructor arguments the shapes cannot tell with --args")
    return module.eval()


def _draw(inputs: dict, key: str, make) -> torch.Tensor:
    return inputs[key] if key in inputs else make()


def _labels(given: list[int] | None, family: str, num_classes: int) -> torch.Tensor:
    labels = given or DEFAULT_LABELS[family]
    if any(not 0 <= c < num_classes for c in labels):
        raise ValueError(f"labels {labels} must lie in [0, {num_classes}) for this checkpoint; pass --labels")
    return torch.tensor(labels)


@torch.no_grad()
def record_llamagen(state: dict, given: dict, labels: list[int] | None, seed: int, inputs: dict) -> tuple[dict, dict]:
    from autoregressive.models import generate as official_generate
    from autoregressive.models.gpt import ModelArgs, Transformer

    a = infer_args("llamagen", state, given)
    ctor = {k: a[k] for k in (f.name for f in dataclasses.fields(ModelArgs)) if k in a}
    model = Transformer(ModelArgs(**ctor))
    if model.layers[0].feed_forward.w1.out_features != a["ffn_hidden"]:
        raise ValueError(f"ModelArgs give an FFN width of {model.layers[0].feed_forward.w1.out_features}, the weights {a['ffn_hidden']}: "
                         "pass --args with multiple_of / ffn_dim_multiplier")
    model = _load(model, state, "LlamaGen")
    L, V = a["block_size"], a["vocab_size"]
    cond = _draw(inputs, "cond_idx", lambda: _labels(labels, "llamagen", a["num_classes"]))
    z = _draw(inputs, "z_indices", lambda: torch.randint(0, V, (len(cond), L), generator=torch.Generator().manual_seed(seed)))
    logits, loss = model(idx=z[:, :-1], cond_idx=cond, input_pos=torch.arange(L), targets=z)
    rows = raster_rows(logits.shape[1])
    io = {"cond_idx": cond, "z_indices": z, "logits_rows_index": rows, "loss": loss.float()[None], **summarise(logits, z, rows, "logits", "at_target")}
    guided = []
    sample = official_generate.sample

    def spy(logits, *args, **kwargs):  # the guided logits of each step, as generate() passes them to sample()
        guided.append(logits[:, -1, :].float().clone())
        return sample(logits, *args, **kwargs)

    with mock.patch.object(official_generate, "sample", spy):
        tokens = official_generate.generate(model, cond, L, **LLAMAGEN_CALL)
    steps = torch.stack(guided, 1)
    io |= {"gen_tokens": tokens.long(), "gen_logits_first4": steps[:, :4], "gen_top2_gap": top2_gap(steps)}
    meta = {"constructor": ctor, "ffn_hidden": a["ffn_hidden"], "class": "autoregressive/models/gpt.py: Transformer(ModelArgs(**constructor))",
            "forward": "eval(); logits, loss = model(idx=z_indices[:, :-1], cond_idx=cond_idx, input_pos=arange(block_size), targets=z_indices)",
            "generate": {"max_new_tokens": L, **LLAMAGEN_CALL, "fn": "autoregressive/models/generate.py:generate"}}
    return io, meta


@torch.no_grad()
def record_rar(state: dict, given: dict, labels: list[int] | None, seed: int, inputs: dict) -> tuple[dict, dict]:
    from modeling.rar import RAR

    a = infer_args("rar", state, given)
    vq = {k: a[k] for k in ("codebook_size", "token_size")}
    generator = {k: v for k, v in a.items() if k not in vq} | {"use_checkpoint": False}
    model = _load(RAR(Cfg(model=Cfg(vq_model=Cfg(vq), generator=Cfg(generator)))), state, "RAR")
    N, V = a["image_seq_len"], a["codebook_size"]
    class_labels = _draw(inputs, "class_labels", lambda: _labels(labels, "rar", a["condition_num_classes"]))
    B = len(class_labels)
    x = _draw(inputs, "input_ids", lambda: torch.randint(0, V, (B, N), generator=torch.Generator().manual_seed(seed)))
    g = torch.Generator().manual_seed(seed + 1)
    orders = _draw(inputs, "orders", lambda: torch.stack([torch.randperm(N, generator=g) for _ in range(B)]))
    condition = model.preprocess_condition(class_labels, cond_drop_prob=0.0)
    io = {"class_labels": class_labels, "condition": condition, "input_ids": x, "orders": orders}
    model.set_random_ratio(0.0)
    for name, (logits, targets) in (("raster", model(x, condition, return_labels=True)),
                                    ("perm", model.forward_fn(x, condition, return_labels=True, orders=orders))):
        rows = raster_rows(logits.shape[1])
        io |= summarise(logits, targets, rows, f"logits_{name}", "at_label") | {"logits_rows_index": rows}
        io[f"loss_{name}"] = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten())[None]  # = modeling/modules/losses.py ARLoss
    io["labels_perm"] = targets
    probs = []

    def greedy(p, num_samples=1, **kwargs):  # the fixtures' greedy RAR: argmax in place of torch.multinomial
        probs.append(p.float().clone())
        return p.argmax(-1, keepdim=True)

    with mock.patch.object(torch, "multinomial", greedy):
        tokens = model.generate(class_labels, **RAR_CALL)
    steps = torch.stack(probs, 1)
    io |= {"gen_tokens": tokens.long(), "gen_probs_first4": steps[:, :4], "gen_top2_prob_gap": top2_gap(steps)}
    meta = {"constructor": {"vq_model": vq, "generator": generator}, "class": "modeling/rar.py: RAR(config with model.vq_model / model.generator)",
            "forward": "eval(); raster: model(input_ids, condition, return_labels=True); permuted: model.forward_fn(..., orders=orders); loss = ARLoss",
            "generate": {**RAR_CALL, "sampling": "greedy: torch.multinomial replaced by argmax during the call"}}
    return io, meta


@torch.no_grad()
def record_var(state: dict, vae_state: dict, given: dict, labels: list[int] | None, seed: int, inputs: dict) -> tuple[dict, dict]:
    from models.vqvae import VQVAE

    import models.var as official_var

    a = infer_args("var", state, given)
    t = infer_var_vqvae_args(vae_state)
    if (t["vocab_size"], t["z_channels"]) != (a["vocab_size"], a["Cvae"]):
        raise ValueError(f"the VQVAE has vocabulary {t['vocab_size']} x {t['z_channels']} channels, the VAR weights expect {a['vocab_size']} x {a['Cvae']}")
    vae_ctor = {k: t[k] for k in ("vocab_size", "z_channels", "ch", "beta", "using_znorm", "quant_conv_ks", "quant_resi", "share_quant_resi",
                                  "default_qresi_counts")} | {"dropout": 0.0, "v_patch_nums": tuple(a["patch_nums"]), "test_mode": True}
    vae = _load(VQVAE(**vae_ctor), vae_state, "VAR VQVAE")
    ctor = {k: a[k] for k in inspect.signature(official_var.VAR).parameters if k in a} | {"patch_nums": tuple(a["patch_nums"]), "flash_if_available": True, "fused_if_available": True}
    model = _load(official_var.VAR(vae, **ctor), state, "VAR")
    pn, V = list(a["patch_nums"]), a["vocab_size"]
    label_B = _draw(inputs, "label_B", lambda: _labels(labels, "var", a["num_classes"]))
    B = len(label_B)
    gt = _draw(inputs, "gt_idx", lambda: torch.randint(0, V, (B, sum(p * p for p in pn)), generator=torch.Generator().manual_seed(seed)))
    x = vae.quantize.idxBl_to_var_input(list(gt.split([p * p for p in pn], dim=1)))
    model.cond_drop_rate = 0.0  # the official forward drops labels with torch.rand even in eval mode
    logits = model(label_B, x)
    rows = scale_rows(pn)
    io = {"label_B": label_B, "gt_idx": gt, "x_BLCv_wo_first_l": x, "logits_rows_index": rows,
          "loss_ce": F.cross_entropy(logits.flatten(0, 1).float(), gt.flatten())[None], **summarise(logits, gt, rows, "logits", "at_gt")}
    guided, ids, fhat = [], [], []
    sample, to_img = official_var.sample_with_top_k_top_p_, vae.fhat_to_img

    def spy(logits_BlV, *args, **kwargs):  # the guided logits of each scale, before the (in-place) top-k filter
        guided.append(logits_BlV.float().clone())
        out = sample(logits_BlV, *args, **kwargs)
        ids.append(out[:, :, 0].clone())
        return out

    def spy_img(f_hat):
        fhat.append(f_hat.clone())
        return to_img(f_hat)

    with mock.patch.object(official_var, "sample_with_top_k_top_p_", spy), mock.patch.object(vae, "fhat_to_img", spy_img):
        img = model.autoregressive_infer_cfg(B=B, label_B=label_B, **VAR_CALL)
    io |= {"ar_idx": torch.cat(ids, 1), "ar_top2_gap_min": torch.stack([top2_gap(s).amin(1) for s in guided], 1), "ar_fhat": fhat[0],
           "ar_img_mean": img.float().mean((1, 2, 3))}
    io |= {f"ar_logits_s{k}": s for k, s in enumerate(guided[:3])}
    meta = {"constructor": ctor, "vae_constructor": vae_ctor, "class": "models/var.py: VAR(VQVAE(**vae_constructor), **constructor)",
            "forward": "eval(); cond_drop_rate = 0; logits = var(label_B, quantize.idxBl_to_var_input(gt_idx per scale))",
            "autoregressive_infer_cfg": {"B": B, "label_B": label_B.tolist(), **VAR_CALL}}
    return io, meta


# ----------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", required=True, choices=FAMILIES)
    p.add_argument("--official-repo", required=True, help="your clone of FoundationVision/VAR, FoundationVision/LlamaGen or bytedance/1d-tokenizer")
    p.add_argument("--weights", required=True, help="official generator file (.pth, .pt, .bin, .safetensors)")
    p.add_argument("--tokenizer-weights", default=None, help="VAR only: the official VQVAE (vae_ch160v4096z32.pth)")
    p.add_argument("--args", default=None, help="JSON of official constructor arguments that override the inferred ones (as for mmgen convert)")
    p.add_argument("--labels", default=None, help="comma-separated class labels (default: the fixtures' 3,987 for VAR, 207,360 otherwise)")
    p.add_argument("--inputs", default=None, metavar="IO.safetensors", help="reuse the labels / tokens / orders of an existing parity file")
    p.add_argument("--seed", type=int, default=5, help="random tokens (and RAR's orders with seed+1); 5 reproduces the fixtures' draws")
    p.add_argument("--out", required=True, metavar="NAME_io.safetensors")
    a = p.parse_args(argv)
    if not a.out.endswith("_io.safetensors"):
        p.error(f"--out must end with _io.safetensors (the sidecar NAME.json is found from it), got {a.out!r}")
    if (a.family == "var") != (a.tokenizer_weights is not None):
        p.error("--tokenizer-weights is required for --family var (the official VAR is built on its VQVAE) and only then")
    try:
        a.args = json.loads(a.args) if a.args else {}
    except json.JSONDecodeError as e:
        p.error(f"--args must be a JSON object, got {a.args!r}: {e}")
    if not isinstance(a.args, dict):
        p.error(f"--args must be a JSON object, got {a.args!r}")
    try:
        a.labels = [int(c) for c in a.labels.split(",")] if a.labels else None
    except ValueError:
        p.error(f"--labels must be comma-separated integers, got {a.labels!r}")
    for path in (a.official_repo, a.weights, a.tokenizer_weights, a.inputs):
        if path is not None and not Path(path).exists():
            p.error(f"{path} does not exist")
    return a


def _commit(repo: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    return None


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)

    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)  # the official constructors' own (overwritten) initialisation
    state = load_official_state(a.weights)
    inputs = {k: v for k, v in load_file(a.inputs).items() if k in INPUT_KEYS[a.family]} if a.inputs else {}
    with official_code(str(Path(a.official_repo).resolve())):
        if a.family == "var":
            io, meta = record_var(state, load_official_state(a.tokenizer_weights), a.args, a.labels, a.seed, inputs)
        else:
            io, meta = {"llamagen": record_llamagen, "rar": record_rar}[a.family](state, a.args, a.labels, a.seed, inputs)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in io.items()}, str(out))
    side = {"source": {"family": a.family, "official_repo": str(Path(a.official_repo).resolve()), "commit": _commit(a.official_repo),
                       "weights": Path(a.weights).name, "tokenizer_weights": a.tokenizer_weights and Path(a.tokenizer_weights).name},
            "args_given": a.args, **meta, "inputs": {"seed": a.seed, "from": a.inputs},
            "env": {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads()}}
    Path(a.out.removesuffix("_io.safetensors") + ".json").write_text(json.dumps(side, indent=2) + "\n")
    tok = f" --tokenizer {a.tokenizer_weights}" if a.tokenizer_weights else ""
    given = f" --args '{json.dumps(a.args)}'" if a.args else ""
    print(f"wrote {out} ({len(io)} tensors); check your conversion with:\n"
          f"  mmgen convert --family {a.family} --generator {a.weights}{tok}{given} --out CONVERTED --verify {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
