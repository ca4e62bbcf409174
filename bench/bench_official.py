"""Speed of mmgen against the official VAR code on the same weights (CPU, one process, side by side).

    python bench/bench_official.py --official-repo ~/VAR                       # depth 2 (batch 8) and d16 (batch 1)
    python bench/bench_official.py --official-repo ~/VAR --cases 2:8 --rounds 9

For each ``depth:batch`` case the official ``VAR`` is built with the constructor ``build_vae_var``
uses (width 64·depth, depth heads, 10 scales, 4096 codes), initialised with ``init_weights`` and
perturbed as the parity fixtures were (``parity_official.perturb``); its ``state_dict()`` is converted
with ``mmgen.convert``, so both sides run the same weights (the logits are compared first).

- **train**: tokens -> teacher-forcing input (official ``idxBl_to_var_input``; mmgen's tokenizer inside
  ``forward``) -> forward -> cross-entropy -> backward -> ``clip_grad_norm_(2.0)`` -> AdamW
  (lr 1e-4, betas 0.9/0.95, wd 0.05; the same optimizer class on both sides), train mode.
- **sample**: class labels -> tokens of all scales with the paper's sampler (cfg 1.5 with the linear
  ramp, top-k 900, top-p 0.96; mmgen's ``paper`` preset), KV cache, eval mode. The VQVAE decode
  is skipped on both sides (the official ``fhat_to_img`` returns f_hat; mmgen returns tokens).

Each round times both sides once, the order alternating between rounds (the machine may be shared);
the table reports the median wall time per side and the median per-round speed-up official / mmgen
(> 1: mmgen is faster), from wall time and from the process's CPU time (less sensitive to other
processes on a shared machine). The JSON goes to ``bench/results/official_speed.json``. Nothing of the
official code is copied: it is imported from ``--official-repo``.

``--precision`` picks the arithmetic: ``fp32`` (default; both sides), ``bf16`` (both sides under
``torch.autocast("cpu", bfloat16)``, which the bench adds around the official calls: its own AMP
context is CUDA-only) or ``mmgen-bf16`` (mmgen under CPU autocast against the official code as it
runs on a CPU, fp32). Weights, optimizer state and the loss stay fp32 on both sides.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mmgen.convert.command import sampler_presets
from mmgen.convert.generators import VAR_PATCH_NUMS, convert_generator
from mmgen.convert.tokenizers import convert_var_vqvae
from mmgen.models.base import Condition
from mmgen.sampler import SamplerConfig
from mmgen.tokens import Tokens

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or as a module
from parity_official import official_code, perturb  # noqa: E402

VQVAE_ARGS = dict(vocab_size=4096, z_channels=32, ch=32, v_patch_nums=VAR_PATCH_NUMS)  # ch only sizes the (unused) encoder/decoder


def _clone(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}  # the two models must not share storage


def build_pair(depth: int, seed: int = 0):
    """(official VAR, its VQVAE, converted mmgen generator with the converted VQVAE bound)."""
    from models.vqvae import VQVAE

    from models.var import VAR

    with contextlib.redirect_stdout(io.StringIO()):  # the official constructors print their config
        torch.manual_seed(seed)
        vae = VQVAE(**VQVAE_ARGS, test_mode=True)
        var = VAR(vae, num_classes=1000, depth=depth, embed_dim=64 * depth, num_heads=depth, mlp_ratio=4.0, drop_rate=0.0, attn_drop_rate=0.0,
                  drop_path_rate=0.1 * depth / 24, norm_eps=1e-6, shared_aln=False, cond_drop_rate=0.1, attn_l2_norm=True,
                  patch_nums=VAR_PATCH_NUMS, flash_if_available=True, fused_if_available=True)
        var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, init_std=-1)
    perturb(var, seed)
    vae.fhat_to_img = lambda f_hat: f_hat  # skip the decoder: tokens (and f_hat) out, as mmgen's generate
    gen = convert_generator("var", _clone(var.state_dict()))
    gen.bind_tokenizer(convert_var_vqvae(_clone(vae.state_dict()), dict(VQVAE_ARGS)))
    return var, vae, gen


def logits_max_abs(var, gen, gt: torch.Tensor, labels: torch.Tensor) -> float:
    var.eval(), gen.eval()
    var.cond_drop_rate, drop = 0.0, var.cond_drop_rate
    with torch.no_grad():
        ref = var(labels, var.vae_quant_proxy[0].idxBl_to_var_input(_split(gt)))
        mine = gen.logits(Tokens(gen.layout, ids=gt), Condition(len(labels), labels=labels))
    var.cond_drop_rate = drop
    return float((mine - ref).abs().max())


def _split(gt: torch.Tensor) -> list[torch.Tensor]:
    ends = torch.tensor([p * p for p in VAR_PATCH_NUMS]).cumsum(0).tolist()
    return [gt[:, a:b] for a, b in zip([0] + ends[:-1], ends)]


def _adamw(module: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


PRECISIONS = {"fp32": (False, False), "bf16": (True, True), "mmgen-bf16": (False, True)}  # (official, mmgen) under bf16 autocast


def train_steps(var, gen, gt: torch.Tensor, labels: torch.Tensor, precision: str = "fp32"):
    """One training step per side (closures), both in train mode."""
    amp_o, amp_m = PRECISIONS[precision]
    var.train(), gen.train()
    opt_o, opt_m = _adamw(var), _adamw(gen)
    quant = var.vae_quant_proxy[0]

    def official():
        with torch.no_grad():
            x = quant.idxBl_to_var_input(_split(gt))
        with _autocast(amp_o):
            logits = var(labels, x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), gt.view(-1))
        opt_o.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        opt_o.step()

    def mmgen():
        with _autocast(amp_m):
            loss, _ = gen(Tokens(gen.layout, ids=gt), Condition(len(labels), labels=labels))
        opt_m.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 2.0)
        opt_m.step()

    return official, mmgen


def sample_calls(var, gen, labels: torch.Tensor, precision: str = "fp32"):
    var.eval(), gen.eval()
    amp_o, amp_m = PRECISIONS[precision]
    sampler = SamplerConfig(**sampler_presets("var", gen)["paper"])  # cfg_scale 2.5 linear = official cfg 1.5

    def official():
        with _autocast(amp_o):
            var.autoregressive_infer_cfg(B=len(labels), label_B=labels, g_seed=0, cfg=1.5, top_k=900, top_p=0.96)

    def mmgen():
        with _autocast(amp_m):
            gen.generate(Condition(len(labels), labels=labels), sampler)

    return official, mmgen


def time_pair(official, mmgen, rounds: int, warmup: int = 1) -> dict:
    """Median wall and CPU (process) time per side, and the median per-round speed-up official / mmgen of each."""
    for _ in range(warmup):
        official(), mmgen()
    wall, cpu = {"official": [], "mmgen": []}, {"official": [], "mmgen": []}
    for r in range(rounds):
        order = (("official", official), ("mmgen", mmgen)) if r % 2 == 0 else (("mmgen", mmgen), ("official", official))
        for name, fn in order:
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    med = statistics.median
    return {"official_ms": 1000 * med(wall["official"]), "mmgen_ms": 1000 * med(wall["mmgen"]),
            "speedup": med([o / m for o, m in zip(wall["official"], wall["mmgen"])]),
            "speedup_cpu_time": med([o / m for o, m in zip(cpu["official"], cpu["mmgen"])]), "wall_s": wall, "cpu_s": cpu}


def run_case(depth: int, batch: int, rounds: int, what: tuple[str, ...], precision: str = "fp32") -> dict:
    var, _, gen = build_pair(depth)
    g = torch.Generator().manual_seed(1)
    gt = torch.randint(0, 4096, (batch, sum(p * p for p in VAR_PATCH_NUMS)), generator=g)
    labels = torch.randint(0, 1000, (batch,), generator=g)
    out = {"depth": depth, "batch": batch, "precision": precision, "params_official": sum(p.numel() for p in var.parameters()),
           "params_mmgen": sum(p.numel() for p in gen.parameters()), "logits_max_abs": logits_max_abs(var, gen, gt[:1], labels[:1])}
    if "train" in what:
        out["train"] = time_pair(*train_steps(var, gen, gt, labels, precision), rounds)
    if "sample" in what:
        out["sample"] = time_pair(*sample_calls(var, gen, labels, precision), rounds)
    return out


def table(cases: list[dict]) -> str:
    rows = ["| depth | batch | precision | measurement | official | mmgen | speed-up official / mmgen (wall) | (CPU time) |", "|---|---|---|---|---|---|---|---|"]
    for c in cases:
        for what in ("train", "sample"):
            if what in c:
                r = c[what]
                rows.append(f"| {c['depth']} | {c['batch']} | {c.get('precision', 'fp32')} | {what} | {r['official_ms']:.0f} ms | {r['mmgen_ms']:.0f} ms | **{r['speedup']:.2f}×** "
                            f"| {r['speedup_cpu_time']:.2f}× |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official-repo", required=True, help="your clone of github.com/FoundationVision/VAR")
    p.add_argument("--cases", nargs="+", default=["2:8", "16:1"], help="depth:batch pairs")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", choices=["train", "sample"], help="time one measurement only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="bf16 autocast on both sides, on mmgen's only, or neither")
    p.add_argument("--json", default="bench/results/official_speed.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    what = (args.only,) if args.only else ("train", "sample")
    cases = []
    with official_code(args.official_repo):
        for case in args.cases:
            depth, batch = (int(v) for v in case.split(":"))
            cases.append(run_case(depth, batch, args.rounds, what, args.precision))
            print(json.dumps({k: v for k, v in cases[-1].items() if k not in ("train", "sample")}), flush=True)
    print(table(cases))
    result = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "threads": args.threads, "torch": torch.__version__,
              "rounds": args.rounds, "command": " ".join(sys.argv), "cases": cases}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
