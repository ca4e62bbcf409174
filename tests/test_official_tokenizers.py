"""Official tokenizers (VAR VQVAE, LlamaGen VQ-16, RAR's MaskGIT-VQ) load into mmgen with parity.

Parity: ``../shared/fixtures/parity`` (the official modules' own weights and outputs, see its
README) and ``tests/fixtures`` (official outputs at other sizes, on weights the test rebuilds from
``recipe_weights``; each JSON says how they were made). Round trips build yet other sizes, so the
converter cannot lean on the fixture sizes. ``tests/manifests`` hold the key -> shape lists of the
official modules at the published sizes (made by instantiating them on the meta device).
"""
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import mmgen
from mmgen.convert import tokenizers as conv
from mmgen.convert.tokenizer_parity import verify_tokenizer
from mmgen.modeling import load_module
from mmgen.tokens import GridLayout, ScalesLayout, Tokens

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

REPO = Path(__file__).parents[1]
MANIFESTS = REPO / "tests" / "manifests" / "tokenizers"


def _fixtures_dir() -> Path | None:
    """``shared/fixtures/parity`` beside the checkout (``../shared``), or beside a folder holding worktrees."""
    for base in (REPO.parent, REPO.parent.parent):
        d = base / "shared" / "fixtures" / "parity"
        if d.is_dir():
            return d
    return None


FIXTURES = _fixtures_dir()
needs_fixtures = pytest.mark.skipif(FIXTURES is None, reason=f"parity fixtures not found at {REPO.parent / 'shared/fixtures/parity'}")


def _fixture(name: str):
    if not (FIXTURES / f"{name}.safetensors").is_file():
        pytest.skip(f"parity fixture {name} missing in {FIXTURES}")
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    return load_file(str(FIXTURES / f"{name}.safetensors")), load_file(str(FIXTURES / f"{name}_io.safetensors")), meta


# ----------------------------------------------------------------------------- fixture parity
def recipe_weights(shapes: dict, seed: int, codebook_std: float) -> dict[str, torch.Tensor]:
    """Deterministic weights from an official key -> shape list (made the MaskGIT fixture outside this repo).

    Norm weights 1 + 0.1 N, biases 0.1 N, conv weights N(0, 1/fan_in), codebook N(0, codebook_std^2); sorted-key order.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        noise = torch.randn(shape, generator=g)
        if key.endswith("embedding.weight"):
            out[key] = noise * codebook_std
        elif len(shape) == 1:
            out[key] = (1.0 if "norm" in key and key.endswith("weight") else 0.0) + 0.1 * noise
        else:
            out[key] = noise / math.sqrt(math.prod(shape[1:]))
    return out


def _assert_parity(report: dict) -> None:
    assert report["codes_identical"], f"{report['code_mismatches']} codes differ"
    bad = {k: v for k, v in report["outputs"].items() if max(d for n, d in v.items() if n != "tol") > v["tol"]}
    assert not bad and report["ok"], bad


@needs_fixtures
def test_var_vqvae_parity():
    state, io, meta = _fixture("var_vqvae")
    tok = conv.convert_var_vqvae(state, meta["constructor"])
    assert tok.layout == ScalesLayout((1, 2, 3, 4, 5, 6, 8, 10, 13, 16))
    report = verify_tokenizer(tok, FIXTURES / "var_vqvae_io.safetensors")
    assert report["family"] == "var" and set(report["outputs"]) >= {"f", "fhat", "recon_unclamped", "var_input", "fwd_vq_loss"}
    _assert_parity(report)


@needs_fixtures
def test_llamagen_vq16_parity():
    state, io, meta = _fixture("llamagen_vq16")
    args = {**meta["model_args_resolved"], "ch": meta["encoder_decoder_ch_override"], "image_size": io["img"].shape[-1]}
    tok = conv.convert_llamagen_vq(state, args)
    assert tok.layout == GridLayout(8, 8)
    report = verify_tokenizer(tok, FIXTURES / "llamagen_vq16_io.safetensors")
    assert report["family"] == "llamagen" and set(report["outputs"]) >= {"enc_h", "z", "quant", "dec", "train_vq_loss", "train_commit_loss"}
    _assert_parity(report)


def _recipe_fixture(name: str):
    """A converted tokenizer for ``tests/fixtures/<name>``: official outputs on recipe weights, at sizes ../shared lacks."""
    meta = json.loads((REPO / f"tests/fixtures/{name}.json").read_text())
    w = meta["weights"]
    with torch.device("meta"):  # the official key -> shape list, from the inverse mapping
        if name.startswith("var"):
            cons = {k: v for k, v in meta["constructor"].items() if k not in ("dropout", "test_mode")}
            shapes = conv.var_vqvae_to_official(conv.var_vqvae_from_args(cons), cons["share_quant_resi"])
            given = {"v_patch_nums": cons["v_patch_nums"]}  # all else is read off the shapes
        elif name.startswith("llamagen"):
            kw = meta["VQ_8_kwargs"]
            args = {**kw, "ch": meta["encoder_decoder_ch_override"], "encoder_ch_mult": (1, 2, 2, 4), "image_size": 32}
            shapes = conv.llamagen_vq_to_official(conv.llamagen_vq_from_args(args))
            given = {"image_size": 32, "entropy_loss_ratio": kw["entropy_loss_ratio"]}
        else:
            args = {**meta["config"], "num_embeddings": meta["num_embeddings"], "embedding_dim": meta["embedding_dim"]}
            shapes = conv.maskgit_vq_to_official(conv.maskgit_vq_from_args(args))
            given = {"resolution": meta["config"]["resolution"]}
    state = recipe_weights({k: v.shape for k, v in shapes.items()}, w["seed"], w["codebook_std"])
    return conv.convert_tokenizer(state, given), REPO / f"tests/fixtures/{name}_io.safetensors"


@pytest.mark.parametrize("name,family,layout", [
    ("var_vqvae_small", "var", ScalesLayout((1, 2, 3, 4))),
    ("llamagen_vq8_small", "llamagen", GridLayout(4, 4)),
    ("maskgit_vq_tiny", "maskgit", GridLayout(16, 16)),
])
def test_other_sizes_match_the_official_code(name, family, layout):
    tok, io_path = _recipe_fixture(name)
    assert tok.layout == layout
    report = verify_tokenizer(tok, io_path)
    assert report["family"] == family
    if family == "llamagen":
        assert "train_entropy_loss" in report["outputs"]
    _assert_parity(report)


def test_verify_rejects_a_wrong_tokenizer_and_a_wrong_file(tmp_path):
    meta = json.loads((REPO / "tests/fixtures/maskgit_vq_tiny.json").read_text())
    args = {**meta["config"], "num_embeddings": meta["num_embeddings"], "embedding_dim": meta["embedding_dim"]}
    tok = conv.maskgit_vq_from_args(args)  # right architecture, untrained weights
    report = verify_tokenizer(tok, REPO / "tests/fixtures/maskgit_vq_tiny_io.safetensors")
    assert not report["ok"] and report["outputs"]["z"]["max_abs"] > 1e-2
    save_file({"x": torch.zeros(1)}, str(tmp_path / "x_io.safetensors"))
    with pytest.raises(ValueError, match="not a tokenizer parity file"):
        verify_tokenizer(tok, tmp_path / "x_io.safetensors")


@needs_fixtures
def test_inferred_args_match_the_fixture_constructors():
    state, _, meta = _fixture("var_vqvae")
    got = conv.infer_var_vqvae_args(state)
    for k in ("vocab_size", "z_channels", "ch", "quant_conv_ks", "share_quant_resi", "v_patch_nums"):
        assert got[k] == meta["constructor"][k], k
    state, _, meta = _fixture("llamagen_vq16")
    got = conv.infer_llamagen_vq_args(state)
    assert got["ch"] == meta["encoder_decoder_ch_override"]
    for k in ("codebook_size", "codebook_embed_dim", "z_channels", "encoder_ch_mult", "decoder_ch_mult"):
        assert got[k] == meta["model_args_resolved"][k], k


# ----------------------------------------------------------------------------- other sizes: round trip
def _perturbed(tok):
    """Non-default weights everywhere, so a misplaced tensor cannot go unnoticed."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in tok.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return tok.eval()


VAR_SMALL = [  # (official VQVAE kwargs + ch_mult / num_res_blocks, which VAR fixes in its code)
    dict(ch=64, ch_mult=(1, 2, 2), num_res_blocks=1, vocab_size=300, z_channels=16, quant_conv_ks=1,
         share_quant_resi=4, v_patch_nums=(1, 2, 3, 5, 8)),
    dict(ch=32, ch_mult=(1, 2), num_res_blocks=2, vocab_size=77, z_channels=8, quant_conv_ks=3,
         share_quant_resi=1, v_patch_nums=(1, 3, 4, 6, 9, 16)),
    dict(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, vocab_size=128, z_channels=12, quant_conv_ks=3,
         share_quant_resi=0, default_qresi_counts=3, v_patch_nums=(2, 4, 8), using_sa=False),
]


@pytest.mark.parametrize("args", VAR_SMALL, ids=["qsr4", "qsr1", "qsr0"])
def test_var_vqvae_round_trip_other_sizes(args):
    tok = _perturbed(conv.var_vqvae_from_args(args))
    official = conv.var_vqvae_to_official(tok, share_quant_resi=args["share_quant_resi"])
    inferred = conv.infer_var_vqvae_args(official)
    for k in ("ch", "num_res_blocks", "vocab_size", "z_channels", "quant_conv_ks", "share_quant_resi"):
        assert inferred[k] == args[k], k
    assert tuple(inferred["ch_mult"]) == args["ch_mult"]
    back = conv.convert_var_vqvae(official, {"v_patch_nums": args["v_patch_nums"]})  # the one thing shapes cannot tell
    assert back.config == tok.config
    ref = tok.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in back.state_dict().items())
    x = torch.rand(2, 3, tok.image_size, tok.image_size) * 2 - 1
    assert torch.equal(back.encode(x).ids, tok.encode(x).ids)


@pytest.mark.parametrize("args", [
    dict(ch=64, encoder_ch_mult=(1, 2), num_res_blocks=1, z_channels=16, codebook_size=100, codebook_embed_dim=4, image_size=32),
    dict(ch=32, encoder_ch_mult=(1, 1, 2), num_res_blocks=2, z_channels=24, codebook_size=513, codebook_embed_dim=6, image_size=16),
])
@pytest.mark.parametrize("usage_buffer", [True, False])
def test_llamagen_vq_round_trip_other_sizes(args, usage_buffer):
    tok = _perturbed(conv.llamagen_vq_from_args(args))
    official = conv.llamagen_vq_to_official(tok, codebook_show_usage=usage_buffer)
    assert ("quantize.codebook_used" in official) == usage_buffer
    inferred = conv.infer_llamagen_vq_args(official)
    assert tuple(inferred["encoder_ch_mult"]) == tuple(inferred["decoder_ch_mult"]) == args["encoder_ch_mult"]
    back = conv.convert_llamagen_vq(official, {"image_size": args["image_size"]})
    assert back.config == tok.config
    ref = tok.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in back.state_dict().items())


@pytest.mark.parametrize("args", [
    dict(hidden_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, z_channels=16, num_embeddings=64, embedding_dim=16, resolution=32),
    dict(hidden_channels=64, channel_mult=(1, 1), num_res_blocks=2, z_channels=8, num_embeddings=33, embedding_dim=8, resolution=16),
])
def test_maskgit_vq_round_trip_other_sizes(args):
    tok = _perturbed(conv.maskgit_vq_from_args(args))
    official = conv.maskgit_vq_to_official(tok)
    back = conv.convert_maskgit_vq(official, {"resolution": args["resolution"]})
    assert back.config == tok.config
    ref = tok.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in back.state_dict().items())


@pytest.mark.parametrize("build,to_official,family,args", [
    (conv.var_vqvae_from_args, conv.var_vqvae_to_official, "var", {"v_patch_nums": (1, 2, 3, 5, 8)}),
    (conv.llamagen_vq_from_args, conv.llamagen_vq_to_official, "llamagen", {"image_size": 32}),
    (conv.maskgit_vq_from_args, conv.maskgit_vq_to_official, "maskgit", {"resolution": 32}),
])
def test_family_is_detected_from_keys(build, to_official, family, args):
    small = {"var": VAR_SMALL[0], "llamagen": dict(ch=32, encoder_ch_mult=(1, 2), num_res_blocks=1, codebook_size=16, image_size=32),
             "maskgit": dict(hidden_channels=32, channel_mult=(1, 2), num_res_blocks=1, resolution=32)}[family]
    official = to_official(build(small))
    assert conv.detect_tokenizer_family(official) == family
    tok = conv.convert_tokenizer({"model": official} if family == "llamagen" else official, args)
    assert tok.config == build(small).config
    with pytest.raises(KeyError, match="not a VAR"):
        conv.detect_tokenizer_family({"foo.weight": torch.zeros(1)})


def test_conversion_errors_name_the_problem():
    tok = conv.var_vqvae_from_args(VAR_SMALL[0])
    official = conv.var_vqvae_to_official(tok)
    with pytest.raises(KeyError, match="no place"):
        conv.convert_var_vqvae({**official, "extra.weight": torch.zeros(1)}, {"v_patch_nums": (1, 2, 3, 5, 8)})
    missing = dict(official)
    missing.pop("decoder.conv_in.weight")
    with pytest.raises(KeyError, match="decoder.conv_in.weight"):
        conv.convert_var_vqvae(missing, {"v_patch_nums": (1, 2, 3, 5, 8)})
    with pytest.raises(ValueError, match="has shape"):  # an override that contradicts the weights
        conv.convert_var_vqvae(official, {"v_patch_nums": (1, 2, 3, 5, 8), "z_channels": 8})
    with pytest.raises(ValueError, match="v_patch_nums"):
        conv.convert_var_vqvae(official)  # 5 scales: the patch numbers cannot be guessed
    with pytest.raises(ValueError, match="using_znorm"):
        conv.var_vqvae_from_args({"using_znorm": True})
    with pytest.raises(ValueError, match="unknown argument.*vocab_szie"):
        conv.convert_var_vqvae(official, {"v_patch_nums": (1, 2, 3, 5, 8), "vocab_szie": 300})
    with pytest.raises(ValueError, match="num_resolutions"):
        conv.maskgit_vq_from_args({"num_resolutions": 3})


# ----------------------------------------------------------------------------- official sizes
@pytest.mark.parametrize("preset,to_official,manifest", [
    ("msvq-var", conv.var_vqvae_to_official, "var_vae_ch160v4096z32"),
    ("vq-f16-llamagen", conv.llamagen_vq_to_official, "llamagen_vq_ds16_c2i"),
    ("maskgit-vq-f16", conv.maskgit_vq_to_official, "maskgit_vqgan_imagenet_f16_256"),
])
def test_official_size_presets_match_manifests(preset, to_official, manifest):
    expected = json.loads((MANIFESTS / f"{manifest}.json").read_text())["keys"]
    with torch.device("meta"):
        tok = mmgen.create_tokenizer(preset)
        official = to_official(tok)
    got = {k: list(v.shape) for k, v in official.items()}
    assert sorted(set(got) ^ set(expected)) == []
    assert {k: v for k, v in got.items() if v != expected[k]} == {}


# ----------------------------------------------------------------------------- the tokenizer contract
@pytest.mark.parametrize("build,args,layout", [
    (conv.var_vqvae_from_args, VAR_SMALL[0], ScalesLayout((1, 2, 3, 5, 8))),
    (conv.llamagen_vq_from_args, dict(ch=32, encoder_ch_mult=(1, 2), num_res_blocks=1, z_channels=16, codebook_size=64, codebook_embed_dim=4, image_size=32), GridLayout(16, 16)),
    (conv.maskgit_vq_from_args, dict(hidden_channels=32, channel_mult=(1, 2), num_res_blocks=1, z_channels=8, num_embeddings=64, embedding_dim=8, resolution=32), GridLayout(16, 16)),
])
def test_converted_tokenizers_keep_the_contract(build, args, layout, tmp_path):
    tok = _perturbed(build(args))
    x = torch.rand(2, 3, tok.image_size, tok.image_size) * 2 - 1
    tokens = tok.encode(x)
    assert isinstance(tokens, Tokens) and tokens.layout == layout == tok.layout
    pixels = tok.decode(tokens)
    assert pixels.shape == x.shape and pixels.min() >= -1 and pixels.max() <= 1
    tok.save_pretrained(tmp_path / "tok")
    again = load_module(tmp_path / "tok")
    assert type(again) is type(tok) and again.config == tok.config
    assert torch.equal(again.encode(x).ids, tokens.ids)
    assert torch.equal(again.decode(tokens), pixels)
    loss, logs = tok.train().loss(x)  # fine-tuning works on the converted architecture too
    loss.backward()
    assert torch.isfinite(loss) and "commit_loss" in logs
    assert [n for n, p in tok.named_parameters() if p.grad is None] == []
    tok.eval()
    if isinstance(layout, ScalesLayout):  # VAR's helpers: teacher forcing == the sampling steps
        inputs, f_hat = [], tok.empty_fhat(2)
        for si, ids in enumerate(layout.split(tokens.ids)):
            f_hat, nxt = tok.next_scale_input(si, f_hat, ids)
            if nxt is not None:
                inputs.append(nxt)
        assert torch.equal(tok.ids_to_var_input(tokens), torch.cat(inputs, 1))
        assert torch.equal(tok.decode_fhat(f_hat), pixels)



def test_backbone_options_are_checked():
    with pytest.raises(ValueError, match="no attention"):
        mmgen.create_tokenizer("maskgit-vq-f16", mid_attention=True)
    with pytest.raises(ValueError, match="z_channels == codebook_dim"):
        mmgen.create_tokenizer("maskgit-vq-f16", codebook_dim=8)
    with pytest.raises(ValueError, match="backbone='unet'"):
        mmgen.create_tokenizer("vq-tiny", backbone="unet")
    with pytest.raises(ValueError, match="own causal 3D backbone"):
        mmgen.create_tokenizer("video-vq3d-tiny", backbone="maskgit", level_attention=False, mid_attention=False)
    with pytest.raises(ValueError, match="not allowed for KL"):
        mmgen.create_tokenizer("kl-tiny", quant_conv_ks=0, z_channels=8, codebook_dim=8)
