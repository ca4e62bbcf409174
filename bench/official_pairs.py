"""Official model + its mmgen conversion, on the same weights, as timed by ``bench/bench_official.py``.

One class per family builds the pair from the user's clone (imported, never copied), checks that the
converted model gives the official logits, and returns the two closures of each measurement:

- ``train``: one training step as the official training script runs it (train mode, its dropouts,
  its loss) -> backward -> ``clip_grad_norm_`` -> AdamW as each side's training script builds it
  (``adamw="plain"``: the unfused ``torch.optim.AdamW`` on both).
- ``sample``: class labels -> all image tokens with the paper's sampler (mmgen's ``paper`` preset,
  read from the same script), KV cache on both sides, eval mode, no tokenizer decode.

Sizes: an integer ``d`` is a small model in VAR's proportions (depth d, width 64·d, d heads) with the
family's real vocabulary and token grid; a name (``B``, ``L``, ...) is the official architecture.
"""
from __future__ import annotations

import contextlib
import io

import torch
import torch.nn.functional as F
from parity_official import Cfg, perturb

from mmgen.convert.command import sampler_presets
from mmgen.convert.generators import VAR_PATCH_NUMS, convert_generator
from mmgen.models.base import Condition
from mmgen.sampler import SamplerConfig
from mmgen.tokens import Tokens

PRECISIONS = {"fp32": (False, False), "bf16": (True, True), "mmgen-bf16": (False, True)}  # (official, mmgen) under bf16 autocast


def _clone(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}  # the two models must not share storage


def _adamw(module: torch.nn.Module, lr: float, betas: tuple[float, float], wd: float, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr, betas=betas, weight_decay=wd, fused=fused)


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())  # the official constructors print their config


class OfficialPair:
    """Shared measurement closures; a family fills in ``official_loss``, ``official_sample`` and its optimizer."""

    family: str
    tokens: int  # image tokens per sample
    vocab: int
    num_classes: int = 1000
    optim: dict  # the official training script's AdamW settings
    fused: bool  # whether that script asks for the fused AdamW kernel (it exists on a CPU too)
    clip: float

    def __init__(self, size: str, seed: int = 0) -> None:
        self.size = size
        self.official, self.gen = self.build(size, seed)
        self.sampler = SamplerConfig(**sampler_presets(self.family, self.gen)["paper"])

    def inputs(self, batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, self.vocab, (batch, self.tokens), generator=g), torch.randint(0, self.num_classes, (batch,), generator=g)

    def params(self) -> dict:
        return {"params_official": sum(p.numel() for p in self.official.parameters()), "params_mmgen": sum(p.numel() for p in self.gen.parameters())}

    def train_steps(self, gt: torch.Tensor, labels: torch.Tensor, precision: str = "fp32", adamw: str = "own"):
        """``adamw="own"``: each side's optimizer as its training script builds it (official: ``fused`` as
        configured; mmgen: ``mmgen.train.make_adamw``); ``"plain"``: the unfused ``torch.optim.AdamW`` on both."""
        from mmgen.train import make_adamw

        amp_o, amp_m = PRECISIONS[precision]
        self.official.train(), self.gen.train()
        opt_o = _adamw(self.official, **self.optim, fused=self.fused and adamw == "own")
        opt_m = make_adamw(self.gen, self.optim["lr"], self.optim["betas"], self.optim["wd"]) if adamw == "own" else _adamw(self.gen, **self.optim, fused=False)

        def official():
            with _autocast(amp_o):
                loss = self.official_loss(gt, labels)
            opt_o.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.official.parameters(), self.clip)
            opt_o.step()

        def mmgen():
            with _autocast(amp_m):
                loss, _ = self.gen(Tokens(self.gen.layout, ids=gt), Condition(len(labels), labels=labels))
            opt_m.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.gen.parameters(), self.clip)
            opt_m.step()

        return official, mmgen

    def sample_calls(self, labels: torch.Tensor, precision: str = "fp32"):
        amp_o, amp_m = PRECISIONS[precision]
        self.official.eval(), self.gen.eval()

        def official():
            with _autocast(amp_o), torch.no_grad():
                self.official_sample(labels)

        def mmgen():
            with _autocast(amp_m):
                self.gen.generate(Condition(len(labels), labels=labels), self.sampler)

        return official, mmgen


class VARPair(OfficialPair):
    """``models/var.py: VAR`` as ``build_vae_var`` makes it (10 scales, 4096 codes); ``train.py``'s AdamW and clip."""

    family, vocab, tokens = "var", 4096, sum(p * p for p in VAR_PATCH_NUMS)
    optim, fused, clip = dict(lr=1e-4, betas=(0.9, 0.95), wd=0.05), True, 2.0  # train.py: fused=args.afuse, default True
    VQVAE_ARGS = dict(vocab_size=4096, z_channels=32, ch=32, v_patch_nums=VAR_PATCH_NUMS)  # ch only sizes the (unused) encoder/decoder
    DEPTHS = {"d16": 16, "d20": 20, "d24": 24, "d30": 30}

    def build(self, size: str, seed: int):
        from models.vqvae import VQVAE

        from mmgen.convert.tokenizers import convert_var_vqvae
        from models.var import VAR

        depth = self.DEPTHS.get(size) or int(size)
        with _quiet():
            torch.manual_seed(seed)
            vae = VQVAE(**self.VQVAE_ARGS, test_mode=True)
            var = VAR(vae, num_classes=1000, depth=depth, embed_dim=64 * depth, num_heads=depth, mlp_ratio=4.0, drop_rate=0.0, attn_drop_rate=0.0,
                      drop_path_rate=0.1 * depth / 24, norm_eps=1e-6, shared_aln=False, cond_drop_rate=0.1, attn_l2_norm=True,
                      patch_nums=VAR_PATCH_NUMS, flash_if_available=True, fused_if_available=True)
            var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, init_std=-1)
        perturb(var, seed)
        vae.fhat_to_img = lambda f_hat: f_hat  # skip the decoder: tokens (and f_hat) out, as mmgen's generate
        gen = convert_generator("var", _clone(var.state_dict()))
        gen.bind_tokenizer(convert_var_vqvae(_clone(vae.state_dict()), dict(self.VQVAE_ARGS)))
        return var, gen

    def _split(self, gt: torch.Tensor) -> list[torch.Tensor]:
        ends = torch.tensor([p * p for p in VAR_PATCH_NUMS]).cumsum(0).tolist()
        return [gt[:, a:b] for a, b in zip([0] + ends[:-1], ends)]

    def _input(self, gt: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.official.vae_quant_proxy[0].idxBl_to_var_input(self._split(gt))

    def logits_max_abs(self, gt: torch.Tensor, labels: torch.Tensor) -> float:
        self.official.eval(), self.gen.eval()
        self.official.cond_drop_rate, drop = 0.0, self.official.cond_drop_rate
        with torch.no_grad():
            ref = self.official(labels, self._input(gt))
            mine = self.gen.logits(Tokens(self.gen.layout, ids=gt), Condition(len(labels), labels=labels))
        self.official.cond_drop_rate = drop
        return float((mine - ref).abs().max())

    def official_loss(self, gt, labels):
        logits = self.official(labels, self._input(gt))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), gt.view(-1))

    def official_sample(self, labels):  # README: cfg 1.5 (linear ramp), top-k 900, top-p 0.96 = mmgen's paper preset
        self.official.autoregressive_infer_cfg(B=len(labels), label_B=labels, g_seed=0, cfg=1.5, top_k=900, top_p=0.96)


class LlamaGenPair(OfficialPair):
    """``autoregressive/models/gpt.py: Transformer`` (c2i, 16x16 tokens, 16384 codes, the ModelArgs dropouts);
    ``train_c2i.py``'s AdamW and clip; ``sample_c2i_ddp.py``'s sampler (per-size cfg, top-k 0)."""

    family, vocab, tokens = "llamagen", 16384, 256
    optim, fused, clip = dict(lr=1e-4, betas=(0.9, 0.95), wd=0.05), True, 1.0  # creat_optimizer: fused=True wherever torch has it
    SIZES = {"B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1280, 36, 20), "XXL": (1536, 48, 24)}  # dim, layers, heads (gpt.py GPT_*)

    def build(self, size: str, seed: int):
        from autoregressive.models.gpt import ModelArgs, Transformer

        dim, depth, heads = self.SIZES.get(size) or (64 * int(size), int(size), int(size))
        torch.manual_seed(seed)
        m = Transformer(ModelArgs(dim=dim, n_layer=depth, n_head=heads, vocab_size=self.vocab, block_size=self.tokens, num_classes=self.num_classes))
        perturb(m, seed)
        return m, convert_generator("llamagen", _clone(m.state_dict()), {"n_head": heads, "block_size": self.tokens})

    def logits_max_abs(self, gt, labels) -> float:
        self.official.eval(), self.gen.eval()
        with torch.no_grad():
            ref, _ = self.official(idx=gt[:, :-1], cond_idx=labels, input_pos=torch.arange(self.tokens))
            mine = self.gen.logits(Tokens(self.gen.layout, ids=gt), Condition(len(labels), labels=labels))
        return float((mine - ref).abs().max())

    def official_loss(self, gt, labels):  # train_c2i.py: _, loss = model(cond_idx=c_indices, idx=z_indices[:, :-1], targets=z_indices)
        for layer in self.official.layers:
            layer.attention.kv_cache = None  # a previous generate() leaves its static cache behind
        return self.official(cond_idx=labels, idx=gt[:, :-1], targets=gt)[1]

    def official_sample(self, labels):
        from autoregressive.models.generate import generate

        s = self.sampler
        generate(self.official, labels, self.tokens, cfg_scale=s.cfg_scale, cfg_interval=-1, temperature=s.temperature, top_k=s.top_k,
                 top_p=s.top_p, sample_logits=True)


class RARPair(OfficialPair):
    """``modeling/rar.py: RAR`` (256 tokens, 1024 codes, dropout and attention dropout 0.1) at random-order ratio 1
    (the start of its annealing); the RAR config's AdamW and clip; README_RAR's sampler per size."""

    family, vocab, tokens = "rar", 1024, 256
    optim, fused, clip = dict(lr=4e-4, betas=(0.9, 0.96), wd=0.03), False, 1.0  # utils/train_utils.py: plain AdamW
    SIZES = {"B": (768, 24, 3072), "L": (1024, 24, 4096), "XL": (1280, 32, 5120), "XXL": (1408, 40, 6144)}  # hidden, layers, MLP (16 heads)

    def build(self, size: str, seed: int):
        from modeling.rar import RAR

        dim, depth, hidden = self.SIZES.get(size) or (64 * int(size), int(size), 256 * int(size))
        heads = 16 if size in self.SIZES else int(size)
        gen_cfg = Cfg(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads, intermediate_size=hidden, dropout=0.1, attn_drop=0.1,
                      image_seq_len=self.tokens, condition_num_classes=self.num_classes, use_checkpoint=False)
        torch.manual_seed(seed)
        m = RAR(Cfg(model=Cfg(vq_model=Cfg(codebook_size=self.vocab, token_size=256), generator=gen_cfg)))
        perturb(m, seed)
        m.set_random_ratio(1.0)
        return m, convert_generator("rar", _clone(m.state_dict()))

    def logits_max_abs(self, gt, labels) -> float:
        self.official.eval(), self.gen.eval()
        with torch.no_grad():
            ref = self.official.forward_fn(gt, self.official.preprocess_condition(labels))[:, : self.tokens]
            mine = self.gen.logits(Tokens(self.gen.layout, ids=gt), Condition(len(labels), labels=labels))
        return float((mine - ref).abs().max())

    def official_loss(self, gt, labels):  # train_utils: condition dropped with p 0.1, model(..., return_labels=True), ARLoss
        logits, targets = self.official(gt, self.official.preprocess_condition(labels, cond_drop_prob=0.1), return_labels=True)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten())

    def official_sample(self, labels):
        s = self.sampler
        self.official.generate(labels, guidance_scale=s.cfg_scale, randomize_temperature=s.temperature, guidance_scale_pow=s.cfg_power, kv_cache=True)


FAMILIES = {"var": VARPair, "llamagen": LlamaGenPair, "rar": RARPair}
