"""The published tokenizers as mmgen configurations: VAR's VQVAE, LlamaGen's VQ-16, RAR's MaskGIT-VQ.

Each ``*_config(args)`` takes the official constructor arguments (VAR's ``VQVAE`` kwargs,
LlamaGen's ``ModelArgs`` fields + ``ch``, MaskGIT's VQGAN config) and returns the config dict of
the mmgen tokenizer with the same architecture; ``mmgen.convert.tokenizers`` moves the weights.
The official sizes are presets: ``msvq-var`` (``vae_ch160v4096z32.pth``) and ``vq-f16-llamagen``
(``vq_ds16_c2i.pt``) already are those architectures; ``maskgit-vq-f16``
(``maskgit-vqgan-imagenet-f16-256.bin``) is registered here.
"""
from __future__ import annotations

from typing import Any

from mmgen.registry import register_preset

from .vq import VQTokenizer

__all__ = ["VAR_PATCH_NUMS", "var_vqvae_config", "llamagen_vq_config", "maskgit_vq_config"]

VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def _merge(defaults: dict, args: dict, family: str, ignored: tuple[str, ...] = ()) -> dict[str, Any]:
    """``defaults`` updated by ``args``; a key that is neither (e.g. a typo) is an error, ``ignored`` keys are dropped."""
    bad = sorted(set(args) - set(defaults) - set(ignored))
    if bad:
        raise ValueError(f"{family}: unknown argument(s) {bad}; allowed: {sorted(set(defaults) | set(ignored))}")
    return {**defaults, **{k: v for k, v in args.items() if k not in ignored}}


def _widths(ch: int, mult, family: str) -> tuple[int, ...]:
    if not mult or mult[0] != 1:
        raise ValueError(f"{family}: ch_mult={list(mult)} must start with 1 (conv_in width = first level width)")
    return tuple(ch * m for m in mult)


def var_vqvae_config(args: dict[str, Any]) -> dict[str, Any]:
    """``MSVQConfig`` fields for VAR's ``VQVAE(**args)`` (+ ``ch_mult``, ``num_res_blocks``, fixed in VAR's code).

    ``dropout`` and ``test_mode`` change nothing at inference and are ignored; unknown keys are an error.
    """
    a = _merge({"ch": 128, "ch_mult": (1, 1, 2, 2, 4), "num_res_blocks": 2, "vocab_size": 4096, "z_channels": 32, "beta": 0.25,
                "quant_conv_ks": 3, "quant_resi": 0.5, "share_quant_resi": 4, "default_qresi_counts": 0,
                "v_patch_nums": VAR_PATCH_NUMS, "using_sa": True, "using_mid_sa": True, "using_znorm": False},
               args, "VAR VQVAE", ignored=("dropout", "test_mode"))
    if a.get("using_znorm"):
        raise ValueError("using_znorm=True (cosine lookup) is not supported; VAR's released VQVAE uses False")
    pn = a["v_patch_nums"]
    if pn is None or any(not isinstance(p, int) for p in pn):
        raise ValueError(f"v_patch_nums={pn}: give the square patch numbers (ints), e.g. {list(VAR_PATCH_NUMS)}")
    widths = _widths(a["ch"], a["ch_mult"], "VAR VQVAE")
    share = a["share_quant_resi"]
    num_phi = {0: a["default_qresi_counts"] or len(pn), 1: 1}.get(share, share)
    return dict(
        image_size=pn[-1] * 2 ** (len(widths) - 1), block_out_channels=widths, layers_per_block=a["num_res_blocks"],
        norm_num_groups=32, level_attention=a["using_sa"], mid_attention=a["using_mid_sa"], z_channels=a["z_channels"],
        quant_conv_ks=a["quant_conv_ks"], codebook_size=a["vocab_size"], codebook_dim=a["z_channels"], beta=a["beta"],
        scales=tuple(pn), quant_resi=a["quant_resi"], num_phi=num_phi,
    )


def llamagen_vq_config(args: dict[str, Any]) -> dict[str, Any]:
    """``VQConfig`` fields for LlamaGen's ``VQModel(ModelArgs(**args))``; ``ch`` (128 in LlamaGen) and ``image_size`` may be given."""
    a = _merge({"ch": 128, "num_res_blocks": 2, "encoder_ch_mult": (1, 1, 2, 2, 4), "decoder_ch_mult": None, "z_channels": 256,
                "codebook_size": 16384, "codebook_embed_dim": 8, "codebook_l2_norm": True, "commit_loss_beta": 0.25,
                "entropy_loss_ratio": 0.0, "image_size": 256},
               args, "LlamaGen VQ", ignored=("codebook_show_usage", "dropout_p"))
    widths = _widths(a["ch"], a["encoder_ch_mult"], "LlamaGen VQ")
    if a["decoder_ch_mult"] is not None and tuple(a["decoder_ch_mult"]) != tuple(a["encoder_ch_mult"]):
        raise ValueError(f"encoder_ch_mult={list(a['encoder_ch_mult'])} != decoder_ch_mult={list(a['decoder_ch_mult'])}: mmgen shares one")
    return dict(
        image_size=a["image_size"], block_out_channels=widths, layers_per_block=a["num_res_blocks"], norm_num_groups=32,
        level_attention=True, mid_attention=True, z_channels=a["z_channels"], quant_conv_ks=1,
        codebook_size=a["codebook_size"], codebook_dim=a["codebook_embed_dim"], l2_norm=a["codebook_l2_norm"],
        beta=a["commit_loss_beta"], entropy_weight=a["entropy_loss_ratio"],
    )


def maskgit_vq_config(args: dict[str, Any]) -> dict[str, Any]:
    """``VQConfig`` fields for MaskGIT's VQGAN as 1d-tokenizer's ``PretrainedTokenizer`` builds it.

    Training differs in one place, not needed for loading: MaskGIT weighs the commitment term 1
    and the codebook term ``commitment_cost``; mmgen's ``beta`` weighs the commitment term.
    """
    a = _merge({"channel_mult": (1, 1, 2, 2, 4), "hidden_channels": 128, "num_res_blocks": 2, "resolution": 256, "z_channels": 256,
                "num_embeddings": 1024, "embedding_dim": 256, "commitment_cost": 0.25, "num_resolutions": None, "num_channels": 3},
               args, "MaskGIT-VQ", ignored=("dropout",))
    if a["num_channels"] != 3 or a["num_resolutions"] not in (None, len(a["channel_mult"])):
        raise ValueError(f"MaskGIT-VQ: num_channels={a['num_channels']} (must be 3), num_resolutions={a['num_resolutions']} "
                         f"(must be len(channel_mult)={len(a['channel_mult'])})")
    return dict(
        image_size=a["resolution"], backbone="maskgit", block_out_channels=_widths(a["hidden_channels"], a["channel_mult"], "MaskGIT-VQ"),
        layers_per_block=a["num_res_blocks"], norm_num_groups=32, level_attention=False, mid_attention=False,
        z_channels=a["z_channels"], quant_conv_ks=0, codebook_size=a["num_embeddings"], codebook_dim=a["embedding_dim"],
        l2_norm=False, beta=a["commitment_cost"],
    )


# RAR's (and TiTok's) tokenizer: maskgit-vqgan-imagenet-f16-256.bin, 256 px -> 16x16 ids of 1024 codes.
register_preset("maskgit-vq-f16", VQTokenizer, tags=("reference",), **maskgit_vq_config({}))
