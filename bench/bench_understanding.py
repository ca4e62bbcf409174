"""Understanding from tokens, as in the subobject paper: does a small model learn the caption's
attributes faster from subobject tokens than from patch tokens?

    python bench/bench_understanding.py --subobject runs/shapes-subobject/model \\
        --patch checkpoints/shapes-raster/tokenizer --steps 1500 \\
        --json bench/results/understanding.json --plot bench/results/understanding.png

One-object ``shapes`` images are encoded once by each frozen tokenizer (ids only: the probe sees
what an AR model would). The same probe, a small transformer over learned embeddings of those ids
(bidirectional, mean-pooled, one linear head per attribute: colour, shape, size, position), is
trained with the same seed, batch, learning rate and steps on each token kind; held-out accuracy
is measured every ``--eval-every`` steps. Reported: mean attribute accuracy curves (PNG), and the
first step at which each kind reaches ``--target`` (0.9).
"""
from __future__ import annotations

import argparse

import torch
from torch import nn
from tqdm.auto import tqdm

from mmgen.data.shapes import COLORS, POSITIONS, SHAPES, SIZES, ShapesWorld
from mmgen.eval.plots import curves_png
from mmgen.modeling import load_module, write_json_atomic
from mmgen.nn.masks import Full
from mmgen.nn.transformer import Transformer, TransformerConfig

ATTRIBUTES = {"color": list(COLORS), "shape": list(SHAPES), "size": list(SIZES), "position": list(POSITIONS)}


class AttributeProbe(nn.Module):
    """ids ``(B, N)`` -> one logit vector per attribute."""

    def __init__(self, vocab: int, seq_len: int, dim: int = 64, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(seq_len, dim) * 0.02)
        self.body = Transformer(TransformerConfig(dim=dim, depth=depth, heads=heads, rope_axes=1))
        self.heads = nn.ModuleDict({k: nn.Linear(dim, len(v)) for k, v in ATTRIBUTES.items()})

    def forward(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        n = ids.shape[1]
        x = self.embed(ids) + self.pos[:n]
        x = self.body(x, torch.arange(n, dtype=torch.float32)[:, None], Full()).mean(1)
        return {k: h(x) for k, h in self.heads.items()}


def encode(tokenizer, world: ShapesWorld, n: int, batch: int = 64) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids, targets = [], {k: [] for k in ATTRIBUTES}
    for start in tqdm(range(0, n, batch), desc=f"encode {type(tokenizer).__name__} ({world.split})", leave=False):
        items = [world[i] for i in range(start, min(n, start + batch))]
        pixels = torch.stack([it["pixels"] for it in items])
        with torch.no_grad():
            ids.append(tokenizer.encode(pixels).ids)
        for i in range(start, start + len(items)):
            obj = world.scene(i)[0][0]
            for k, values in ATTRIBUTES.items():
                targets[k].append(values.index(getattr(obj, k)))
    return torch.cat(ids), {k: torch.tensor(v) for k, v in targets.items()}


def accuracy(probe: AttributeProbe, ids: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
    probe.eval()
    with torch.no_grad():
        logits = probe(ids)
    probe.train()
    acc = {k: (logits[k].argmax(-1) == targets[k]).float().mean().item() for k in ATTRIBUTES}
    return acc | {"mean": sum(acc.values()) / len(acc)}


def run(name: str, tokenizer, args) -> dict:
    train_ids, train_t = encode(tokenizer, ShapesWorld(32, seed=0, objects="1"), args.n_train)
    test_ids, test_t = encode(tokenizer, ShapesWorld(32, seed=0, objects="1", split="test"), args.n_test)
    torch.manual_seed(args.seed)
    probe = AttributeProbe(int(max(train_ids.max(), test_ids.max())) + 1, train_ids.shape[1])
    opt = torch.optim.AdamW(probe.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    curve, reached = [], None
    for step in tqdm(range(1, args.steps + 1), desc=f"probe on {name}", leave=False):
        idx = torch.randint(len(train_ids), (args.batch,), generator=gen)
        logits = probe(train_ids[idx])
        loss = sum(nn.functional.cross_entropy(logits[k], train_t[k][idx]) for k in ATTRIBUTES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.eval_every == 0:
            acc = accuracy(probe, test_ids, test_t)
            curve.append({"step": step, **acc})
            if reached is None and acc["mean"] >= args.target:
                reached = step
    return {"tokens": name, "tokenizer_class": type(tokenizer).__name__, "seq_len": train_ids.shape[1],
            "steps_to_target": reached, "final": curve[-1], "curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subobject", required=True, help="trained subobject tokenizer folder")
    ap.add_argument("--patch", required=True, help="trained patch (VQ grid) tokenizer folder")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()
    results = [run(name, load_module(path).eval(), args)
               for name, path in (("subobject", args.subobject), ("patch", args.patch))]
    print(f"| tokens | tokenizer | tokens/image | steps to {args.target} mean attribute acc | final mean acc | "
          + " | ".join(ATTRIBUTES) + " |\n|" + "---|" * (5 + len(ATTRIBUTES)))
    for r in results:
        f = r["final"]
        print(f"| {r['tokens']} | {r['tokenizer_class']} | {r['seq_len']} | {r['steps_to_target'] or 'not reached'} | "
              f"{f['mean']:.3f} | " + " | ".join(f"{f[k]:.3f}" for k in ATTRIBUTES) + " |")
    if args.plot:
        curves = {r["tokens"]: ([c["step"] for c in r["curve"]], [c["mean"] for c in r["curve"]]) for r in results}
        curves_png(curves, args.plot, "probe on frozen tokens: held-out attribute accuracy", log_y=False,
                   ylabel="mean attribute accuracy (held out)")
    if args.json:
        write_json_atomic(args.json, {"settings": vars(args), "results": results})


if __name__ == "__main__":
    main()
