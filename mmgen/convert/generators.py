"""Official generator weights <-> mmgen generators: VAR, LlamaGen (c2i GPT) and RAR.

Each family is a configuration of an mmgen generator on the one transformer (presets
``var-d*``, ``llamagen-*``, ``rar-*``); no official module is copied. What differs is where each
tensor lives, and four layouts that are rearranged exactly (no arithmetic on values):

- LlamaGen rotates interleaved pairs ``(2i, 2i+1)``; mmgen rotates ``(i, i + d/2)``. The q and k
  rows of each head are permuted accordingly (q·k is unchanged by a common permutation).
- VAR's per-block AdaLN emits ``(gamma1, gamma2, scale1, scale2, shift1, shift2)``; mmgen's
  ``(shift1, scale1, gamma1, shift2, scale2, gamma2)``. VAR's and RAR's final AdaLN emit
  ``(scale, shift)``; mmgen's ``(shift, scale)``. The rows of those linears are reordered.
- RAR keeps tokens, its mask token, classes and the null class in one embedding table, and
  position tables longer than any sequence; the rows its forward never reads (the mask token,
  the tails of the tables) are dropped, and written back as zeros by ``*_to_official``.

``infer_*_args`` read the official constructor arguments off the weights' shapes; ``args``
(official names, e.g. LlamaGen's ``n_head`` or ``block_size``) override what shapes cannot tell.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from mmgen.config import from_dict
from mmgen.models.rar import RAR_OFFICIAL, RARConfig, RARGenerator, rar_official_transformer
from mmgen.models.raster import LLAMAGEN_OFFICIAL, LLAMAGEN_SIZES, RasterConfig, RasterGenerator, llamagen_official_transformer
from mmgen.models.var import VAR_OFFICIAL, VARConfig, VARGenerator, var_official_transformer

__all__ = ["FAMILIES", "load_official_state", "infer_args", "build_generator", "convert_generator", "generator_to_official",
           "LLAMAGEN_HEADS", "VAR_PATCH_NUMS"]

FAMILIES = ("var", "llamagen", "rar")
VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
LLAMAGEN_HEADS = {dim: heads for depth, heads, dim in LLAMAGEN_SIZES.values()} | {2048: 32, 2560: 40, 4096: 32}  # gpt.py GPT_models
_WRAPPERS = ("model", "state_dict", "module", "generator")
_PREFIXES = ("module.", "_orig_mod.", "model.")


# ----------------------------------------------------------------------------- reading files
def load_official_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of an official ``.pth/.pt/.bin/.safetensors`` file, memory-mapped, never unpickling code.

    Common wrappers (``{"model": ...}``, ``{"state_dict": ...}``) and ``module.`` / ``_orig_mod.``
    prefixes (DDP, torch.compile) are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # an old (non-zip) serialization cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in _WRAPPERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            raise ValueError(f"{path}: no state dict found; top-level keys {sorted(state)[:10]}, expected tensors or one of {list(_WRAPPERS)}")
        state = inner
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for p in _PREFIXES:
        if state and all(k.startswith(p) for k in state):
            state = {k[len(p):]: v for k, v in state.items()}
    return state


def _count(state: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def _need(state: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise KeyError(f"not an official checkpoint of this family: missing {missing}")


# ----------------------------------------------------------------------------- inferring constructor arguments
def infer_args(family: str, state: dict[str, torch.Tensor], given: dict | None = None) -> dict[str, Any]:
    """The official constructor arguments from the shapes; ``given`` overrides (official names)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {list(FAMILIES)}")
    inferred = {"var": _infer_var, "llamagen": _infer_llamagen, "rar": _infer_rar}[family](state, given or {})
    return inferred | dict(given or {})


def _infer_llamagen(state: dict, given: dict) -> dict:
    _need(state, "tok_embeddings.weight", "layers.0.attention.wqkv.weight", "cls_embedding.embedding_table.weight")
    vocab, dim = state["tok_embeddings.weight"].shape
    if "n_head" not in given and dim not in LLAMAGEN_HEADS:
        raise ValueError(f"LlamaGen's head count is not in the weights and dim={dim} is none of gpt.py's sizes {sorted(LLAMAGEN_HEADS)}: pass args {{'n_head': ...}}")
    if state["layers.0.attention.wqkv.weight"].shape[0] != 3 * dim:
        raise ValueError("grouped-query attention (n_kv_head < n_head) is not supported")
    table = state["cls_embedding.embedding_table.weight"].shape[0]
    return dict(dim=dim, n_layer=_count(state, r"layers\.(\d+)\."), n_head=given.get("n_head", LLAMAGEN_HEADS.get(dim)), vocab_size=vocab,
                num_classes=table - 1, class_dropout_prob=0.1, ffn_hidden=state["layers.0.feed_forward.w1.weight"].shape[0],
                block_size=256, cls_token_num=1, norm_eps=1e-5, rope_base=10000, resid_dropout_p=0.1, ffn_dropout_p=0.1, token_dropout_p=0.1,
                drop_path_rate=0.0, model_type="c2i", downsample_size=16, codebook_embed_dim=8)


def _infer_rar(state: dict, given: dict) -> dict:
    _need(state, "embeddings.weight", "lm_head.weight", "pos_embed", "blocks.0.attn.q_norm.weight")
    dim = state["embeddings.weight"].shape[1]
    codebook = state["lm_head.weight"].shape[0]
    return dict(hidden_size=dim, num_hidden_layers=_count(state, r"blocks\.(\d+)\."), num_attention_heads=dim // state["blocks.0.attn.q_norm.weight"].shape[0],
                intermediate_size=state["blocks.0.mlp.fc1.weight"].shape[0], codebook_size=codebook,
                condition_num_classes=state["embeddings.weight"].shape[0] - codebook - 2, image_seq_len=state["pos_embed"].shape[1] - 1024,
                dropout=0.1, attn_drop=0.1, class_label_dropout=0.1, token_size=256)


def _infer_var(state: dict, given: dict) -> dict:
    _need(state, "word_embed.weight", "class_emb.weight", "pos_1LC", "head.weight", "blocks.0.attn.scale_mul_1H11")
    if "shared_ada_lin.1.weight" in state:
        raise ValueError("shared_aln=True VAR checkpoints are not supported (the released ones use per-block AdaLN)")
    dim, cvae = state["word_embed.weight"].shape
    depth = _count(state, r"blocks\.(\d+)\.")
    L = state["pos_1LC"].shape[1]
    if "lvl_1L" in state and state["lvl_1L"].device.type != "meta":
        counts = torch.bincount(state["lvl_1L"].reshape(-1)).tolist()
        patch_nums = tuple(int(round(c ** 0.5)) for c in counts)
    else:
        patch_nums = tuple(given.get("patch_nums", VAR_PATCH_NUMS))
    if sum(p * p for p in patch_nums) != L:
        raise ValueError(f"patch_nums {patch_nums} give {sum(p * p for p in patch_nums)} positions, the weights have {L}: pass args {{'patch_nums': [...]}}")
    return dict(depth=depth, embed_dim=dim, num_heads=state["blocks.0.attn.scale_mul_1H11"].shape[1], num_classes=state["class_emb.weight"].shape[0] - 1,
                mlp_ratio=state["blocks.0.ffn.fc1.weight"].shape[0] / dim, norm_eps=1e-6, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1 * depth / 24,
                cond_drop_rate=0.1, attn_l2_norm=True, shared_aln=False, patch_nums=list(patch_nums), vocab_size=state["head.weight"].shape[0], Cvae=cvae)


# ----------------------------------------------------------------------------- building the mmgen generator
def build_generator(family: str, args: dict[str, Any]):
    """The mmgen generator (random weights) for official constructor arguments ``args``."""
    if family == "llamagen":
        if args.get("model_type", "c2i") != "c2i" or args.get("cls_token_num", 1) != 1:
            raise ValueError(f"only class-conditional LlamaGen (model_type='c2i', cls_token_num=1) converts; got {args.get('model_type')}, {args.get('cls_token_num')}")
        g = int(round(args["block_size"] ** 0.5))
        if g * g != args["block_size"]:
            raise ValueError(f"block_size {args['block_size']} is not a square grid")
        t = llamagen_official_transformer(args["dim"], args["n_layer"], args["n_head"], args["ffn_hidden"], args["norm_eps"], args["rope_base"],
                                          args["resid_dropout_p"], args["drop_path_rate"])
        if (args["dim"] // args["n_head"]) % 4:
            raise ValueError(f"LlamaGen's 2D RoPE needs a head size divisible by 4, got {args['dim'] // args['n_head']}")
        cfg = dict(cond="class", num_classes=args["num_classes"], vocab_size=args["vocab_size"], layout={"type": "grid", "h": g, "w": g},
                   image_size=g * args["downsample_size"], token_dim=args["codebook_embed_dim"], transformer=t,
                   **(LLAMAGEN_OFFICIAL | dict(token_dropout=args["token_dropout_p"], cond_dropout=args["class_dropout_prob"])))
        return RasterGenerator(from_dict(RasterConfig, cfg))
    if family == "rar":
        n = args["image_seq_len"]
        g = int(round(n ** 0.5))
        t = rar_official_transformer(args["hidden_size"], args["num_hidden_layers"], args["num_attention_heads"], args["intermediate_size"],
                                     args["dropout"], args["attn_drop"])
        cfg = dict(cond="class", num_classes=args["condition_num_classes"], vocab_size=args["codebook_size"], layout={"type": "grid", "h": g, "w": g},
                   image_size=16 * g, token_dim=args["token_size"], transformer=t, **(RAR_OFFICIAL | dict(cond_dropout=args["class_label_dropout"])))
        return RARGenerator(from_dict(RARConfig, cfg))
    if family == "var":
        pn = list(args["patch_nums"])
        t = var_official_transformer(args["depth"], args["embed_dim"], args["num_heads"], args["mlp_ratio"], args["norm_eps"], args["drop_path_rate"])
        t |= dict(dropout=args["drop_rate"], attn_dropout=args.get("attn_drop_rate", 0.0))
        cfg = dict(cond="class", num_classes=args["num_classes"], vocab_size=args["vocab_size"], layout={"type": "scales", "scales": pn},
                   image_size=16 * pn[-1], token_dim=args["Cvae"], transformer=t, **(VAR_OFFICIAL | dict(cond_dropout=args["cond_drop_rate"])))
        return VARGenerator(from_dict(VARConfig, cfg))
    raise ValueError(f"unknown family {family!r}; choose one of {list(FAMILIES)}")


# ----------------------------------------------------------------------------- layout rearrangements
def _rope_rows(w: torch.Tensor, heads: int, inverse: bool = False) -> torch.Tensor:
    """Permute the q and k rows of a fused ``(3*dim, ...)`` qkv weight between interleaved and half-split RoPE pairs."""
    dim = w.shape[0] // 3
    hd = dim // heads
    perm = torch.cat([torch.arange(0, hd, 2), torch.arange(1, hd, 2)])
    if inverse:
        perm = torch.argsort(perm)
    qk = w[: 2 * dim].reshape(2, heads, hd, *w.shape[1:])[:, :, perm]
    return torch.cat([qk.reshape(2 * dim, *w.shape[1:]), w[2 * dim :]])


def _chunks(w: torch.Tensor, n: int, order: list[int]) -> torch.Tensor:
    """Reorder the ``n`` equal row-chunks of ``w``: output chunk ``i`` is input chunk ``order[i]``."""
    parts = w.chunk(n, dim=0)
    return torch.cat([parts[i] for i in order])


_VAR_ADA = [4, 2, 0, 5, 3, 1]  # VAR (g1, g2, sc1, sc2, sh1, sh2) -> mmgen (sh1, sc1, g1, sh2, sc2, g2)
_VAR_ADA_INV = [_VAR_ADA.index(i) for i in range(6)]
# per-block official name -> mmgen name (under ``layers.i.`` / ``blocks.i.`` and ``transformer.blocks.i.``)
_LLAMAGEN_NAMES = {"attention.wo": "attn.proj", "feed_forward.w1": "mlp.w_gate", "feed_forward.w3": "mlp.w_up", "feed_forward.w2": "mlp.w_down",
                   "attention_norm": "norm1", "ffn_norm": "norm2"}
_VAR_NAMES = {"attn.mat_qkv.weight": "attn.qkv.weight", "attn.q_bias": "attn.q_bias", "attn.v_bias": "attn.v_bias", "attn.scale_mul_1H11": "attn.qk_scale",
              "attn.proj.weight": "attn.proj.weight", "attn.proj.bias": "attn.proj.bias", "ffn.fc1.weight": "mlp.fc1.weight", "ffn.fc1.bias": "mlp.fc1.bias",
              "ffn.fc2.weight": "mlp.fc2.weight", "ffn.fc2.bias": "mlp.fc2.bias"}


# ----------------------------------------------------------------------------- official -> mmgen state
def _llamagen_state(state: dict, gen: RasterGenerator) -> dict:
    heads = gen.config.transformer.heads
    out = {"tok_embed.weight": state["tok_embeddings.weight"], "cond_embed.embed.weight": state["cls_embedding.embedding_table.weight"],
           "transformer.norm.weight": state["norm.weight"], "head.weight": state["output.weight"]}
    for i in range(gen.config.transformer.depth):
        out[f"transformer.blocks.{i}.attn.qkv.weight"] = _rope_rows(state[f"layers.{i}.attention.wqkv.weight"], heads)
        for a, b in _LLAMAGEN_NAMES.items():
            out[f"transformer.blocks.{i}.{b}.weight"] = state[f"layers.{i}.{a}.weight"]
    return out


def _rar_state(state: dict, gen: RARGenerator) -> dict:
    V, N, P = gen.config.vocab_size, gen.layout.num_tokens, gen.prefix_len
    emb = state["embeddings.weight"]
    final = "adaln_before_head.adaLN_modulation.1"
    out = {"cond_embed.start": state["cls_token"], "tok_embed.weight": emb[:V], "cond_embed.embed.weight": emb[V + 1 :],
           "pos_embed": state["pos_embed"][0, : P + N], "target_pos": state["target_aware_pos_embed"][0, P : P + N],
           "step_embed": state["timesteps_embeddings"][0, : P + N - 1], "head.weight": state["lm_head.weight"], "head.bias": state["lm_head.bias"],
           "transformer.final_ada.proj.1.weight": _chunks(state[f"{final}.weight"], 2, [1, 0]),
           "transformer.final_ada.proj.1.bias": _chunks(state[f"{final}.bias"], 2, [1, 0])}
    for k, v in state.items():
        if k.startswith("blocks."):
            out["transformer." + k.replace("adaLN_modulation.", "ada.proj.")] = v
    return out


def _var_state(state: dict, gen: VARGenerator) -> dict:
    out = {"cond_embed.embed.weight": state["class_emb.weight"], "start": state["pos_start"], "pos_embed": state["pos_1LC"][0],
           "level_embed.weight": state["lvl_embed.weight"], "word_embed.weight": state["word_embed.weight"], "word_embed.bias": state["word_embed.bias"],
           "head.weight": state["head.weight"], "head.bias": state["head.bias"]}
    for s in ("weight", "bias"):
        out[f"transformer.final_ada.proj.1.{s}"] = _chunks(state[f"head_nm.ada_lin.1.{s}"], 2, [1, 0])
    for i in range(gen.config.transformer.depth):
        for a, b in _VAR_NAMES.items():
            out[f"transformer.blocks.{i}.{b}"] = state[f"blocks.{i}.{a}"]
        for s in ("weight", "bias"):
            out[f"transformer.blocks.{i}.ada.proj.1.{s}"] = _chunks(state[f"blocks.{i}.ada_lin.1.{s}"], 6, _VAR_ADA)
    return out


_STATE = {"llamagen": _llamagen_state, "rar": _rar_state, "var": _var_state}
# official buffers a loader accepts and ignores (recomputed from the config; written back by *_to_official)
_IGNORED = {"llamagen": r"(freqs_cis|causal_mask|layers\.\d+\.attention\.kv_cache\..*)$", "rar": r"attn_mask$",
            "var": r"(lvl_1L|attn_bias_for_masking|blocks\.\d+\.attn\.zero_k_bias)$"}


def convert_generator(family: str, state: dict[str, torch.Tensor], args: dict | None = None):
    """Official generator state dict -> mmgen generator (eval mode); every official key must be used."""
    a = infer_args(family, state, args)
    with torch.device("meta"):  # no memory or init time for weights that are replaced anyway
        gen = build_generator(family, a)
    try:
        mine = _STATE[family](state, gen)
    except KeyError as e:
        raise KeyError(f"the {family} checkpoint lacks {e} for the architecture {a}") from None
    back = generator_to_official(family, gen, a)
    unexpected = sorted(k for k in state if k not in back and not re.match(_IGNORED[family], k))
    if unexpected:
        raise ValueError(f"{len(unexpected)} keys of the {family} checkpoint have no place in the converted model: {unexpected[:8]}")
    shapes = {k: (tuple(state[k].shape), tuple(v.shape)) for k, v in back.items() if k in state and state[k].shape != v.shape}
    if shapes:
        raise ValueError(f"shapes differ from the architecture inferred ({a}): {dict(list(shapes.items())[:6])}")
    gen.load_state_dict({k: v.float() for k, v in mine.items()}, strict=True, assign=True)
    left = [n for n, t in [*gen.named_parameters(), *gen.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left on the meta device after conversion: {left[:5]}")
    gen.official_args = a  # plain attribute: the converter writes it beside the config
    return gen.eval()


# ----------------------------------------------------------------------------- mmgen -> official state
def generator_to_official(family: str, gen, args: dict | None = None) -> dict[str, torch.Tensor]:
    """The state dict the official module would hold for ``gen`` (inverse of :func:`convert_generator`).

    Rows the official forward never reads are written as zeros; buffers are recomputed.
    """
    sd = {k: v.detach() for k, v in gen.state_dict().items()}
    t = gen.config.transformer
    out: dict[str, torch.Tensor] = {}
    if family == "llamagen":
        out |= {"tok_embeddings.weight": sd["tok_embed.weight"], "cls_embedding.embedding_table.weight": sd["cond_embed.embed.weight"],
                "norm.weight": sd["transformer.norm.weight"], "output.weight": sd["head.weight"]}
        for i in range(t.depth):
            out[f"layers.{i}.attention.wqkv.weight"] = _rope_rows(sd[f"transformer.blocks.{i}.attn.qkv.weight"], t.heads, inverse=True)
            for a, b in _LLAMAGEN_NAMES.items():
                out[f"layers.{i}.{a}.weight"] = sd[f"transformer.blocks.{i}.{b}.weight"]
        return out
    if family == "rar":
        N, P, D = gen.layout.num_tokens, gen.prefix_len, t.dim
        pad = lambda x, rows, at=0: torch.cat([x.new_zeros(at, D), x, x.new_zeros(rows - at - x.shape[0], D)])[None]  # noqa: E731
        out |= {"cls_token": sd["cond_embed.start"], "embeddings.weight": torch.cat([sd["tok_embed.weight"], sd["tok_embed.weight"].new_zeros(1, D), sd["cond_embed.embed.weight"]]),
                "pos_embed": pad(sd["pos_embed"], N + 1024), "target_aware_pos_embed": pad(sd["target_pos"], N + 1024, P),
                "timesteps_embeddings": pad(sd["step_embed"], N + 100), "lm_head.weight": sd["head.weight"], "lm_head.bias": sd["head.bias"]}
        for s in ("weight", "bias"):
            out[f"adaln_before_head.adaLN_modulation.1.{s}"] = _chunks(sd[f"transformer.final_ada.proj.1.{s}"], 2, [1, 0])
        for k, v in sd.items():
            if k.startswith("transformer.blocks."):
                out[k.removeprefix("transformer.").replace("ada.proj.", "adaLN_modulation.")] = v
        return out
    if family == "var":
        scales = gen.layout.scales
        out |= {"class_emb.weight": sd["cond_embed.embed.weight"], "pos_start": sd["start"], "pos_1LC": sd["pos_embed"][None],
                "lvl_embed.weight": sd["level_embed.weight"], "word_embed.weight": sd["word_embed.weight"], "word_embed.bias": sd["word_embed.bias"],
                "head.weight": sd["head.weight"], "head.bias": sd["head.bias"]}
        for s in ("weight", "bias"):
            out[f"head_nm.ada_lin.1.{s}"] = _chunks(sd[f"transformer.final_ada.proj.1.{s}"], 2, [1, 0])
        for i in range(t.depth):
            for a, b in _VAR_NAMES.items():
                out[f"blocks.{i}.{a}"] = sd[f"transformer.blocks.{i}.{b}"]
            out[f"blocks.{i}.attn.zero_k_bias"] = torch.zeros(t.dim, device="cpu")
            for s in ("weight", "bias"):
                out[f"blocks.{i}.ada_lin.1.{s}"] = _chunks(sd[f"transformer.blocks.{i}.ada.proj.1.{s}"], 6, _VAR_ADA_INV)
        cpu = torch.device("cpu")  # buffers are computed on the CPU even under a meta-device context
        lvl = torch.repeat_interleave(torch.arange(len(scales), device=cpu), torch.tensor([s * s for s in scales], device=cpu))
        out["lvl_1L"] = lvl[None]
        out["attn_bias_for_masking"] = torch.where(lvl[:, None] >= lvl[None, :], 0.0, float("-inf"))[None, None]
        return out
    raise ValueError(f"unknown family {family!r}; choose one of {list(FAMILIES)}")
