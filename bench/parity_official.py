"""Parity of converted generators with the official code at random sizes and seeds (needs your clones).

    python bench/parity_official.py --llamagen-repo ~/LlamaGen --rar-repo ~/1d-tokenizer --var-repo ~/VAR --seeds 3

For each family and seed: draw a small architecture (depth, width, heads, vocabulary, grid), build
the official module as the parity fixtures were built (``torch.manual_seed(seed)``, every parameter
``+= 0.02 N(0,1)``), convert its ``state_dict()`` with ``mmgen.convert``, and compare teacher-forced
logits (LlamaGen; RAR in raster and permuted order; VAR) and greedy samples (LlamaGen tokens with
``top_k=1``; VAR images through its converted VQVAE when ``mmgen.convert.tokenizers`` is installed).
Prints one JSON line per case; exits 1 if any is above 1e-4 or a greedy sample differs. Nothing of the
official code is copied: it is imported from the paths given.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
from typing import Iterator

import torch

from mmgen.convert.generators import convert_generator
from mmgen.models.base import Condition
from mmgen.sampler import SamplerConfig
from mmgen.tokens import Tokens

TOL = 1e-4


@contextlib.contextmanager
def official_code(repo: str) -> Iterator[None]:
    """Import the official packages (``models``, ``autoregressive``, ``modeling``) from the user's clone ``repo``."""
    sys.path.insert(0, repo)
    try:
        yield
    finally:
        sys.path.remove(repo)


class Cfg(dict):
    """Attribute access, like the OmegaConf config RAR's constructor reads (no OmegaConf needed)."""

    __getattr__ = dict.__getitem__

    def get(self, k, default=None):
        return dict.get(self, k, default)


def perturb(module: torch.nn.Module, seed: int) -> None:
    """Every parameter ``+= 0.02 N(0, 1)``, as the parity fixtures were built (zero-initialised pieces become non-trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)


def llamagen_case(seed: int) -> dict:
    from autoregressive.models.generate import generate
    from autoregressive.models.gpt import ModelArgs, Transformer

    r = random.Random(seed)
    heads, grid = r.choice([1, 2, 4, 6]), r.choice([4, 6, 8])
    dim, depth, vocab = 16 * heads * r.choice([1, 2]), r.choice([1, 2, 3]), r.choice([97, 512, 2048])
    torch.manual_seed(seed)
    m = Transformer(ModelArgs(dim=dim, n_layer=depth, n_head=heads, vocab_size=vocab, block_size=grid * grid, num_classes=100)).eval()
    perturb(m, seed)
    z, labels = torch.randint(0, vocab, (2, grid * grid)), torch.tensor([3, 99])
    with torch.no_grad():
        ref, _ = m(idx=z[:, :-1], cond_idx=labels, input_pos=torch.arange(grid * grid))
        tokens = generate(m, labels, grid * grid, cfg_scale=3.0, top_k=1)
    gen = convert_generator("llamagen", m.state_dict(), {"n_head": heads, "block_size": grid * grid})
    with torch.no_grad():
        mine = gen.logits(Tokens(gen.layout, ids=z), Condition(2, labels=labels))
    same = torch.equal(gen.generate(Condition(2, labels=labels), SamplerConfig(cfg_scale=3.0, top_k=1)).ids, tokens.long())
    return dict(family="llamagen", seed=seed, dim=dim, depth=depth, heads=heads, grid=grid, vocab=vocab,
                logits_max_abs=float((mine - ref).abs().max()), greedy_identical=same)


def rar_case(seed: int) -> dict:
    from modeling.rar import RAR

    r = random.Random(seed)
    heads, n = r.choice([1, 2, 4]), r.choice([16, 64])
    dim, depth, vocab = 16 * heads * r.choice([1, 2]), r.choice([1, 2, 3]), r.choice([64, 1024])
    gen_cfg = Cfg(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads, intermediate_size=r.choice([2, 4]) * dim, dropout=0.1,
                  attn_drop=0.1, image_seq_len=n, condition_num_classes=50)
    torch.manual_seed(seed)
    m = RAR(Cfg(model=Cfg(vq_model=Cfg(codebook_size=vocab), generator=gen_cfg))).eval()
    perturb(m, seed)
    z, labels = torch.randint(0, vocab, (2, n)), torch.tensor([3, 49])
    orders = torch.stack([torch.randperm(n) for _ in range(2)])
    gen = convert_generator("rar", m.state_dict())
    out = dict(family="rar", seed=seed, dim=dim, depth=depth, heads=heads, tokens=n, vocab=vocab)
    for name, order in (("raster", None), ("perm", orders)):
        with torch.no_grad():
            ref = m.forward_fn(z, m.preprocess_condition(labels), orders=order)[:, :n]
            mine = gen.logits(Tokens(gen.layout, ids=z), Condition(2, labels=labels), order)
        out[f"logits_{name}_max_abs"] = float((mine - ref).abs().max())
    return out


def var_case(seed: int) -> dict:
    from models.vqvae import VQVAE

    from models.var import VAR

    r = random.Random(seed)
    heads = r.choice([1, 2, 4])
    depth, dim, pn = r.choice([1, 2, 3]), 32 * heads * r.choice([1, 2]), r.choice([(1, 2, 4), (1, 2, 3, 4, 6, 8)])
    vae_args = dict(vocab_size=r.choice([64, 512]), z_channels=16, ch=32, test_mode=True, v_patch_nums=pn)
    torch.manual_seed(seed)
    vae = VQVAE(**vae_args)
    m = VAR(vae, num_classes=20, depth=depth, embed_dim=dim, num_heads=heads, mlp_ratio=r.choice([2.0, 4.0]), attn_l2_norm=True, patch_nums=pn).eval()
    m.init_weights(init_std=-1)
    perturb(m, seed)
    m.cond_drop_rate = 0.0
    x, labels = torch.randn(2, sum(p * p for p in pn) - 1, 16), torch.tensor([0, 19])
    with torch.no_grad():
        ref = m(labels, x)
    gen = convert_generator("var", m.state_dict())
    with torch.no_grad():
        mine = gen.logits_from_input(x, Condition(2, labels=labels))
    out = dict(family="var", seed=seed, dim=dim, depth=depth, heads=heads, scales=list(pn), logits_max_abs=float((mine - ref).abs().max()))
    try:
        from mmgen.convert.tokenizers import convert_var_vqvae
    except ImportError:
        return out
    tok = convert_var_vqvae(vae.state_dict(), {k: v for k, v in vae_args.items() if k != "test_mode"})
    gen.bind_tokenizer(tok)
    with torch.no_grad():
        img = m.autoregressive_infer_cfg(B=2, label_B=labels, g_seed=seed, cfg=1.5, top_k=1, top_p=0.0)
        mine_img = (tok.decode(gen.generate(Condition(2, labels=labels), SamplerConfig(cfg_scale=2.5, cfg_schedule="linear", top_k=1))) + 1) / 2
    out["greedy_image_max_abs"] = float((mine_img - img).abs().max())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--llamagen-repo")
    p.add_argument("--rar-repo")
    p.add_argument("--var-repo")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(2)
    bad = 0
    for _family, repo, case in (("llamagen", args.llamagen_repo, llamagen_case), ("rar", args.rar_repo, rar_case), ("var", args.var_repo, var_case)):
        if not repo:
            continue
        with official_code(repo):
            for seed in range(args.seeds):
                res = case(seed)
                worst = max(v for k, v in res.items() if k.endswith("max_abs"))
                res["ok"] = worst <= TOL and res.get("greedy_identical", True)
                bad += not res["ok"]
                print(json.dumps(res), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
