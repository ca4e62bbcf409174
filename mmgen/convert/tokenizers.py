"""Official tokenizer weights <-> mmgen tokenizers: VAR's VQVAE, LlamaGen's VQ-16, RAR's MaskGIT-VQ.

Each family is a configuration of an mmgen tokenizer (no official module is copied); what
differs is only where each tensor lives. One table per family maps every mmgen key to its
official key, built from the module's own key list, so the same table converts in both
directions (``*_to_official`` is used by tests and by the key/shape manifests):

- encoder/decoder: diffusers' names (``down_blocks.i.resnets.j``, ``mid_block``, ``to_q``...) vs
  taming's (``down.i.block.j``, ``mid.block_1``, ``q``/``qkv``...); attention projections are 1x1
  convs officially and ``nn.Linear`` here; VAR fuses q/k/v into one ``qkv`` conv.
- quantizer: ``quantize.*`` vs ``quantizer.*``; VAR's Phi convs sit in ``quant_resi`` under one of
  three sharing layouts. Usage buffers (VAR ``ema_vocab_hit_SV``, LlamaGen ``codebook_used``) are
  accepted and dropped, and written as zeros on the way back.

The ``infer_*_args`` functions read the official constructor arguments off the weights' shapes;
the ``args`` given to ``convert_*`` override them (what shapes cannot tell: VAR's ``v_patch_nums``
when not the default 10 scales, ``quant_resi``'s ratio, the image size).
"""
from __future__ import annotations

import re
from typing import Any, Callable

import torch

from mmgen.tokenizers_vis import MultiScaleVQTokenizer, VQTokenizer
from mmgen.tokenizers_vis.official import VAR_PATCH_NUMS, llamagen_vq_config, maskgit_vq_config, var_vqvae_config

__all__ = [
    "detect_tokenizer_family", "convert_tokenizer", "convert_var_vqvae", "convert_llamagen_vq", "convert_maskgit_vq",
    "infer_var_vqvae_args", "infer_llamagen_vq_args", "infer_maskgit_vq_args",
    "var_vqvae_from_args", "llamagen_vq_from_args", "maskgit_vq_from_args",
    "var_vqvae_to_official", "llamagen_vq_to_official", "maskgit_vq_to_official",
]

LLAMAGEN_USAGE_LEN = 65536  # length of LlamaGen's ``codebook_used`` buffer, whatever the codebook size
_ATTN = {"group_norm": "norm", "to_out.0": "proj_out"}
_QKV = ("to_q", "to_k", "to_v")


# ----------------------------------------------------------------------------- key tables
def _rename(key: str, rules: list[tuple[str, str | Callable]]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def _backbone_rules(style: str, levels: int) -> list[tuple[str, Any]]:
    """Regex rules turning an mmgen encoder/decoder key into the official one of ``style``."""
    up = (lambda m: f"decoder.up.{levels - 1 - int(m[1])}.") if style in ("var", "maskgit") else (lambda m: f"decoder.conv_blocks.{m[1]}.")
    if style == "var":
        level, block, ups = r"encoder.down.\1.", "block", "upsample.conv"
        mid = [(r"mid_block\.resnets\.0\.", "mid.block_1."), (r"mid_block\.attentions\.0\.", "mid.attn_1."), (r"mid_block\.resnets\.1\.", "mid.block_2.")]
    elif style == "llamagen":
        level, block, ups = r"encoder.conv_blocks.\1.", "res", "upsample.conv"
        mid = [(r"mid_block\.resnets\.0\.", "mid.0."), (r"mid_block\.attentions\.0\.", "mid.1."), (r"mid_block\.resnets\.1\.", "mid.2.")]
    else:  # maskgit: no attention; the up-sampling conv is a direct child of the level
        level, block, ups = r"encoder.down.\1.", "block", "upsample_conv"
        mid = [(r"mid_block\.resnets\.(\d+)\.", r"mid.\1.")]
    rules: list[tuple[str, Any]] = [(r"^encoder\.down_blocks\.(\d+)\.", level), (r"^decoder\.up_blocks\.(\d+)\.", up)] + mid
    rules += [(r"\.resnets\.(\d+)\.", rf".{block}.\1."), (r"\.upsamplers\.0\.conv\.", f".{ups}.")]
    rules += [(r"conv_norm_out", "norm_out"), (r"\.conv_shortcut\.", ".nin_shortcut.")]
    if style != "maskgit":  # attention and conv down-sampling exist in the taming backbone only
        rules += [(r"\.attentions\.(\d+)\.", r".attn.\1."), (r"\.downsamplers\.0\.", ".downsample.")]
        rules += [(rf"\.{re.escape(a)}\.", f".{b}.") for a, b in _ATTN.items()]
        rules += [(rf"\.{q}\.", ".qkv." if style == "var" else f".{q[3]}.") for q in _QKV]
    return rules


def _phi_key(share: int) -> str:
    return {0: "quantize.quant_resi.", 1: "quantize.quant_resi.qresi."}.get(share, "quantize.quant_resi.qresi_ls.")


def _table(tok, style: str, share: int = 4) -> dict[str, tuple[str, int | None]]:
    """mmgen key -> (official key, chunk of VAR's fused qkv or None); mmgen-only buffers left out."""
    rules = _backbone_rules(style, len(tok.config.block_out_channels))
    table = {}
    for key in tok.state_dict():
        if key.startswith(("criterion.", "quantizer.tracker.")):
            continue
        if key.startswith("quantizer.phis."):
            i, rest = key[len("quantizer.phis."):].split(".", 1)
            off = _phi_key(share) + ("" if share == 1 else f"{i}.") + rest
        elif key.startswith("quantizer."):
            off = "quantize." + key[len("quantizer."):]
        else:
            off = _rename(key, rules)
        part = next((i for i, q in enumerate(_QKV) if f".{q}." in key), None) if style == "var" else None
        table[key] = (off, part)
    return table


def _official_extras(style: str, tok, args: dict) -> dict[str, torch.Size]:
    """Official buffers with no mmgen counterpart (accepted on load, zeros on save)."""
    if style == "var":
        return {"quantize.ema_vocab_hit_SV": torch.Size([len(args["v_patch_nums"]), tok.config.codebook_size])}
    if style == "llamagen" and args.get("codebook_show_usage", True):
        return {"quantize.codebook_used": torch.Size([LLAMAGEN_USAGE_LEN])}
    return {}


def _load(tok, state: dict[str, torch.Tensor], table, extras) -> Any:
    used, new = set(extras), {}
    ref = tok.state_dict()
    for key, (off, part) in table.items():
        if off not in state:
            raise KeyError(f"official weight {off!r} (for {key}) is missing; the arguments may not match the file "
                           f"(check ch / ch_mult / num_res_blocks / quant sharing)")
        t = state[off]
        if part is not None:
            t = t.chunk(3, dim=0)[part]
        want = ref[key].shape
        if t.shape != want and not (t.shape[:2] == want and t.shape[2:] == (1, 1)):  # 1x1 conv -> nn.Linear is the one reshape
            raise ValueError(f"{off} has shape {tuple(t.shape)}, the configuration expects {tuple(want)} for {key}")
        new[key] = t.reshape(want).to(ref[key].dtype)
        used.add(off)
    unexpected = sorted(set(state) - used)
    if unexpected:
        raise KeyError(f"{len(unexpected)} official weights have no place in this configuration: {unexpected[:5]}")
    tok.load_state_dict({**ref, **new}, strict=True)
    return tok.eval()


def _to_official(tok, table, extras) -> dict[str, torch.Tensor]:
    sd = tok.state_dict()
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, list] = {}
    for key, (off, part) in table.items():
        t = sd[key]
        if t.ndim == 2 and (".attentions." in key):  # nn.Linear -> official 1x1 conv
            t = t[:, :, None, None]
        if part is None:
            out[off] = t
        else:
            fused.setdefault(off, [None] * 3)[part] = t
    out.update({k: torch.cat(v, 0) for k, v in fused.items()})
    w = next(iter(sd.values()))
    out.update({k: torch.zeros(s, device=w.device) for k, s in extras.items()})
    return out


# ----------------------------------------------------------------------------- shape inference
def _levels(state: dict, fmt: str) -> list[int]:
    """Output width of each resolution level's first res block (``fmt`` has ``{i}``)."""
    out = []
    while fmt.format(i=len(out)) in state:
        out.append(state[fmt.format(i=len(out))].shape[0])
    if not out:
        raise KeyError(f"no weight matching {fmt.format(i=0)!r}: not this family's checkpoint")
    return out


def _count(state: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _ch_mult(ch: int, widths: list[int]) -> list[int]:
    if any(w % ch for w in widths):
        raise ValueError(f"level widths {widths} are not multiples of ch={ch}")
    return [w // ch for w in widths]


def infer_var_vqvae_args(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """VAR ``VQVAE(**args)`` arguments (+ ``ch_mult``, ``num_res_blocks``) read off the shapes."""
    ch = state["encoder.conv_in.weight"].shape[0]
    widths = _levels(state, "encoder.down.{i}.block.0.conv1.weight")
    vocab, cvae = state["quantize.embedding.weight"].shape
    if _count(state, "quantize.quant_resi.qresi_ls."):
        share, counts = _count(state, "quantize.quant_resi.qresi_ls."), 0
    elif "quantize.quant_resi.qresi.weight" in state:
        share, counts = 1, 0
    else:
        share, counts = 0, _count(state, "quantize.quant_resi.")
    n_scales = state["quantize.ema_vocab_hit_SV"].shape[0] if "quantize.ema_vocab_hit_SV" in state else len(VAR_PATCH_NUMS)
    return dict(
        vocab_size=vocab, z_channels=cvae, ch=ch, ch_mult=_ch_mult(ch, widths),
        num_res_blocks=_count(state, "encoder.down.0.block."), quant_conv_ks=state["quant_conv.weight"].shape[-1],
        quant_resi=0.5 if share or counts else 0.0, share_quant_resi=share,
        default_qresi_counts=counts if counts != n_scales else 0,
        v_patch_nums=list(VAR_PATCH_NUMS) if n_scales == len(VAR_PATCH_NUMS) else None,
        using_sa=f"encoder.down.{len(widths) - 1}.attn.0.norm.weight" in state,
        using_mid_sa="encoder.mid.attn_1.norm.weight" in state, using_znorm=False, beta=0.25,
    )


def infer_llamagen_vq_args(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """LlamaGen ``ModelArgs`` fields (+ ``ch``, ``num_res_blocks``) read off the shapes."""
    ch = state["encoder.conv_in.weight"].shape[0]
    enc = _ch_mult(ch, _levels(state, "encoder.conv_blocks.{i}.res.0.conv1.weight"))
    n_dec = _count(state, "decoder.conv_blocks.")
    dec = _ch_mult(ch, [state[f"decoder.conv_blocks.{n_dec - 1 - i}.res.0.conv1.weight"].shape[0] for i in range(n_dec)])
    size, dim = state["quantize.embedding.weight"].shape
    return dict(
        codebook_size=size, codebook_embed_dim=dim, codebook_l2_norm=True,
        codebook_show_usage="quantize.codebook_used" in state, commit_loss_beta=0.25, entropy_loss_ratio=0.0,
        encoder_ch_mult=enc, decoder_ch_mult=dec, z_channels=state["encoder.conv_out.weight"].shape[0],
        dropout_p=0.0, ch=ch, num_res_blocks=_count(state, "encoder.conv_blocks.0.res."),
    )


def infer_maskgit_vq_args(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """MaskGIT-VQGAN config (as 1d-tokenizer's ``PretrainedTokenizer`` builds it) read off the shapes."""
    ch = state["encoder.conv_in.weight"].shape[0]
    mult = _ch_mult(ch, _levels(state, "encoder.down.{i}.block.0.conv1.weight"))
    n, dim = state["quantize.embedding.weight"].shape
    return dict(
        channel_mult=mult, num_resolutions=len(mult), dropout=0.0, hidden_channels=ch, num_channels=3,
        num_res_blocks=_count(state, "encoder.down.0.block."), resolution=256,
        z_channels=state["encoder.conv_out.weight"].shape[0], num_embeddings=n, embedding_dim=dim, commitment_cost=0.25,
    )


# ----------------------------------------------------------------------------- builders
def var_vqvae_from_args(args: dict[str, Any]) -> MultiScaleVQTokenizer:
    """An (untrained) mmgen tokenizer with the architecture of VAR's ``VQVAE(**args)``."""
    return MultiScaleVQTokenizer(var_vqvae_config(args))


def llamagen_vq_from_args(args: dict[str, Any]) -> VQTokenizer:
    """An (untrained) mmgen tokenizer with the architecture of LlamaGen's ``VQModel(ModelArgs(**args))``."""
    return VQTokenizer(llamagen_vq_config(args))


def maskgit_vq_from_args(args: dict[str, Any]) -> VQTokenizer:
    """An (untrained) mmgen tokenizer with the architecture of RAR's MaskGIT-VQGAN."""
    return VQTokenizer(maskgit_vq_config(args))


# ----------------------------------------------------------------------------- public conversions
def _args(infer, state, given) -> dict[str, Any]:
    return {**infer(state), **{k: v for k, v in (given or {}).items() if v is not None}}


def convert_var_vqvae(state_dict: dict[str, torch.Tensor], constructor: dict | None = None) -> MultiScaleVQTokenizer:
    """VAR ``vae_ch*.pth`` state dict -> :class:`MultiScaleVQTokenizer` (eval mode)."""
    a = _args(infer_var_vqvae_args, state_dict, constructor)
    tok = var_vqvae_from_args(a)
    return _load(tok, state_dict, _table(tok, "var", a["share_quant_resi"]), _official_extras("var", tok, a))


def convert_llamagen_vq(state_dict: dict[str, torch.Tensor], args: dict | None = None) -> VQTokenizer:
    """LlamaGen ``vq_ds16_*.pt`` state dict (the ``"model"`` entry) -> :class:`VQTokenizer` (eval mode)."""
    a = _args(infer_llamagen_vq_args, state_dict, args)
    tok = llamagen_vq_from_args(a)
    return _load(tok, state_dict, _table(tok, "llamagen"), _official_extras("llamagen", tok, a))


def convert_maskgit_vq(state_dict: dict[str, torch.Tensor], args: dict | None = None) -> VQTokenizer:
    """RAR/TiTok's ``maskgit-vqgan-imagenet-f16-256.bin`` state dict -> :class:`VQTokenizer` (eval mode)."""
    a = _args(infer_maskgit_vq_args, state_dict, args)
    tok = maskgit_vq_from_args(a)
    return _load(tok, state_dict, _table(tok, "maskgit"), {})


def var_vqvae_to_official(tok: MultiScaleVQTokenizer, share_quant_resi: int = 4) -> dict[str, torch.Tensor]:
    """The state dict VAR's ``VQVAE`` would hold for ``tok`` (inverse of :func:`convert_var_vqvae`)."""
    a = {"v_patch_nums": tok.scales}
    return _to_official(tok, _table(tok, "var", share_quant_resi), _official_extras("var", tok, a))


def llamagen_vq_to_official(tok: VQTokenizer, codebook_show_usage: bool = True) -> dict[str, torch.Tensor]:
    """The state dict LlamaGen's ``VQModel`` would hold for ``tok`` (inverse of :func:`convert_llamagen_vq`)."""
    return _to_official(tok, _table(tok, "llamagen"), _official_extras("llamagen", tok, {"codebook_show_usage": codebook_show_usage}))


def maskgit_vq_to_official(tok: VQTokenizer) -> dict[str, torch.Tensor]:
    """The state dict of 1d-tokenizer's ``PretrainedTokenizer`` for ``tok`` (inverse of :func:`convert_maskgit_vq`)."""
    return _to_official(tok, _table(tok, "maskgit"), {})


_FAMILIES = {"var": convert_var_vqvae, "llamagen": convert_llamagen_vq, "maskgit": convert_maskgit_vq}


def detect_tokenizer_family(state_dict: dict[str, torch.Tensor]) -> str:
    """``"var"``, ``"llamagen"`` or ``"maskgit"``, from key names alone."""
    if "encoder.conv_blocks.0.res.0.conv1.weight" in state_dict:
        return "llamagen"
    if "encoder.mid.block_1.conv1.weight" in state_dict:
        return "var"
    if "encoder.mid.0.conv1.weight" in state_dict and "encoder.down.0.block.0.conv1.weight" in state_dict:
        return "maskgit"
    raise KeyError(f"not a VAR VQVAE, LlamaGen VQ or MaskGIT-VQ state dict (first keys: {sorted(state_dict)[:4]})")


def convert_tokenizer(state_dict: dict, args: dict | None = None, family: str | None = None):
    """Any of the three official tokenizers -> mmgen tokenizer; a ``{"model": state_dict}`` wrapper (LlamaGen's) is opened."""
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    family = family or detect_tokenizer_family(state_dict)
    if family not in _FAMILIES:
        raise ValueError(f"family={family!r}; allowed: {sorted(_FAMILIES)}")
    return _FAMILIES[family](state_dict, args)
