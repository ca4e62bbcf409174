"""Official VAR / LlamaGen / RAR generators in mmgen: parity with the official code, any size, official-size key sets.

- Parity: the fixtures in ``../shared/fixtures/parity`` (official modules at small sizes with random
  weights, README there) convert and reproduce the recorded logits, losses, guided logits and
  greedy token sequences.
- Any size: an mmgen model of another depth/width/heads/vocabulary exports to the official key
  layout, its arguments are inferred back from the shapes, and the re-converted model gives
  bit-identical logits.
- Official sizes: every official preset, built on the meta device, exports exactly the key set and
  shapes the official constructors make (``tests/manifests/*.json``, dumped from the official code);
  and the arguments inferred from those shapes rebuild the preset's architecture.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import mmgen
from mmgen.cli import main
from mmgen.config import to_dict
from mmgen.convert.generators import build_generator, convert_generator, generator_to_official, infer_args, load_official_state
from mmgen.convert.verify import TOLERANCE, verify
from mmgen.modeling import load_module
from mmgen.models.base import Condition
from mmgen.tokens import Tokens

FIXTURES = Path(os.environ.get("MMGEN_PARITY_FIXTURES") or Path(__file__).parents[1].parent / "shared" / "fixtures" / "parity")
MANIFESTS = Path(__file__).parent / "manifests" / "generators"
needs_fixtures = pytest.mark.skipif(not (FIXTURES / "README.md").is_file(), reason=f"parity fixtures not found at {FIXTURES}")
GENERATOR_FIXTURES = {"llamagen": ("llamagen_gpt", {"n_head": 4}), "rar": ("rar_tiny", {}), "var": ("var_d2", {})}
pytestmark = pytest.mark.usefixtures("one_thread")


def _tokenizers():
    try:
        from mmgen.convert import tokenizers
    except ImportError:
        return None
    return tokenizers


def _convert_fixture(family: str):
    name, args = GENERATOR_FIXTURES[family]
    return convert_generator(family, load_official_state(FIXTURES / f"{name}.safetensors"), args), FIXTURES / f"{name}_io.safetensors"


def _assert_report(rep: dict, expected: set[str]) -> None:
    assert expected <= set(rep["outputs"]), f"missing outputs: {expected - set(rep['outputs'])}"
    for k, v in rep["outputs"].items():
        if isinstance(v, dict):
            assert v["max_abs"] <= TOLERANCE, f"{k}: {v}"
        else:
            assert v == 0, f"{k}: {v}"
    assert rep["ok"]


@needs_fixtures
def test_llamagen_fixture_parity():
    gen, io = _convert_fixture("llamagen")
    rep = verify("llamagen", gen, io)
    _assert_report(rep, {"logits_lse", "logits_mean", "logits_at_target", "logits_argmax_mismatches", "logits_rows", "loss", "gen_logits_first4"})
    assert rep["greedy_tokens_identical"] is True


@needs_fixtures
def test_rar_fixture_parity():
    gen, io = _convert_fixture("rar")
    rep = verify("rar", gen, io)
    per_order = {"lse", "mean", "at_label", "argmax_mismatches", "rows"}
    _assert_report(rep, {f"logits_{o}_{k}" for o in ("raster", "perm") for k in per_order} | {"loss_raster", "loss_perm", "gen_probs_first4"})
    assert rep["greedy_tokens_identical"] is True


@needs_fixtures
def test_var_fixture_parity():
    gen, io = _convert_fixture("var")
    rep = verify("var", gen, io)
    _assert_report(rep, {"logits_lse", "logits_mean", "logits_at_gt", "logits_argmax_mismatches", "logits_rows", "loss_ce", "ar_logits_s0"})


@needs_fixtures
def test_var_fixture_sampling_with_its_vqvae():
    tokenizers = _tokenizers()
    if tokenizers is None:
        pytest.skip("VAR's f_hat/Phi sampling path needs mmgen.convert.tokenizers (the VQVAE converter), not in this checkout")
    tok = tokenizers.convert_var_vqvae(load_official_state(FIXTURES / "var_vqvae.safetensors"), json.loads((FIXTURES / "var_vqvae.json").read_text())["constructor"])
    gen, io = _convert_fixture("var")
    rep = verify("var", gen, io, tok)
    _assert_report(rep, {"ar_logits_s0", "ar_logits_s1", "ar_logits_s2", "ar_fhat"})
    assert rep["greedy_tokens_identical"] is True


# ----------------------------------------------------------------------------- any size: export -> infer -> convert back
def _randomize(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


OTHER_SIZES = {
    "llamagen": dict(dim=96, n_layer=3, n_head=3, vocab_size=64, num_classes=10, class_dropout_prob=0.1, ffn_hidden=256, block_size=16, cls_token_num=1,
                     norm_eps=1e-5, rope_base=10000, resid_dropout_p=0.0, ffn_dropout_p=0.0, token_dropout_p=0.0, drop_path_rate=0.0, model_type="c2i",
                     downsample_size=16, codebook_embed_dim=8),
    "rar": dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=80, codebook_size=32, condition_num_classes=7,
                image_seq_len=16, dropout=0.0, attn_drop=0.0, class_label_dropout=0.1, token_size=16),
    "var": dict(depth=3, embed_dim=96, num_heads=3, num_classes=5, mlp_ratio=2.0, norm_eps=1e-6, drop_rate=0.0, drop_path_rate=0.0, cond_drop_rate=0.1,
                attn_l2_norm=True, shared_aln=False, patch_nums=[1, 2, 4], vocab_size=64, Cvae=8),
}


TRAINING_ONLY = {"dropout", "attn_dropout", "drop_path", "token_dropout", "cond_dropout"}  # not in the weights; the official defaults are inferred


def _architecture(cfg) -> dict:
    d = {k: v for k, v in to_dict(cfg).items() if k not in TRAINING_ONLY}
    d["transformer"] = {k: v for k, v in d["transformer"].items() if k not in TRAINING_ONLY}
    return d


def _logits(family: str, gen, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cond = Condition(2, labels=torch.tensor([1, gen.config.num_classes]))  # one label, one null
    with torch.no_grad():
        if family == "var":
            n = gen.layout.num_tokens - gen.layout.group_sizes[0]
            return gen.logits_from_input(torch.randn(2, n, gen.config.token_dim, generator=g), cond)
        ids = torch.randint(0, gen.config.vocab_size, (2, gen.layout.num_tokens), generator=g)
        order = torch.stack([torch.randperm(ids.shape[1], generator=g) for _ in range(2)]) if family == "rar" else None
        return gen.logits(Tokens(gen.layout, ids=ids), cond, order) if order is not None else gen.logits(Tokens(gen.layout, ids=ids), cond)


@pytest.mark.parametrize("family", ["llamagen", "rar", "var"])
def test_other_sizes_round_trip_through_the_official_layout(family):
    gen = build_generator(family, OTHER_SIZES[family]).eval()
    _randomize(gen)
    official = generator_to_official(family, gen)
    # not in the weights: LlamaGen's head count and grid, the width of RAR's tokenizer codes
    given = {"llamagen": {"n_head": 3, "block_size": 16}, "rar": {"token_size": 16}}.get(family, {})
    back = convert_generator(family, official, given)
    assert _architecture(back.config) == _architecture(gen.config)
    assert torch.equal(_logits(family, back), _logits(family, gen))
    again = generator_to_official(family, back)
    assert official.keys() == again.keys() and all(torch.equal(official[k], again[k]) for k in official)


def test_llamagen_head_count_must_be_given_for_unknown_widths():
    gen = build_generator("llamagen", OTHER_SIZES["llamagen"])
    with pytest.raises(ValueError, match="n_head"):
        convert_generator("llamagen", generator_to_official("llamagen", gen))


def test_a_foreign_key_is_refused():
    gen = build_generator("rar", OTHER_SIZES["rar"])
    state = generator_to_official("rar", gen) | {"extra_head.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match="extra_head.weight"):
        convert_generator("rar", state)


# ----------------------------------------------------------------------------- official sizes: manifests
MANIFEST_FILES = sorted(MANIFESTS.glob("*.json"))


def test_every_official_preset_has_a_manifest():
    presets = set(mmgen.list_models(kind="generator", tag="official"))
    assert presets == {json.loads(f.read_text())["preset"] for f in MANIFEST_FILES}
    assert {"var-d16", "var-d30", "llamagen-b", "llamagen-3b-384", "rar-xxl"} <= presets


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.stem)
def test_official_preset_matches_official_keys_and_shapes(path):
    m = json.loads(path.read_text())
    with torch.device("meta"):
        gen = mmgen.create_generator(m["preset"])
        mine = {k: list(v.shape) for k, v in generator_to_official(m["family"], gen).items()}
    assert mine.keys() == m["state_dict"].keys(), f"only mmgen: {sorted(mine.keys() - m['state_dict'].keys())[:5]}, only official: {sorted(m['state_dict'].keys() - mine.keys())[:5]}"
    assert mine == m["state_dict"]
    # the official shapes alone (plus what weights cannot tell: LlamaGen's grid) rebuild the preset's architecture
    given = {"block_size": m["constructor"]["block_size"]} if m["family"] == "llamagen" else {}
    state = {k: torch.empty(s, device="meta") for k, s in m["state_dict"].items()}
    with torch.device("meta"):
        rebuilt = build_generator(m["family"], infer_args(m["family"], state, given))
    assert _architecture(rebuilt.config) == _architecture(gen.config)


# ----------------------------------------------------------------------------- files and the CLI
def test_load_official_state_unwraps_and_never_unpickles(tmp_path):
    sd = {"a.weight": torch.randn(2, 3), "b": torch.arange(4)}
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "steps": 7}, tmp_path / "ckpt.pt")
    got = load_official_state(tmp_path / "ckpt.pt")
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    save_file(sd, str(tmp_path / "w.safetensors"))
    assert load_official_state(tmp_path / "w.safetensors").keys() == sd.keys()

    torch.save({"model": argparse.Namespace(x=1)}, tmp_path / "evil.pt")  # an arbitrary class: weights_only=True refuses to rebuild it
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        load_official_state(tmp_path / "evil.pt")
    torch.save({"config": {"lr": 1}}, tmp_path / "nostate.pt")
    with pytest.raises(ValueError, match="no state dict"):
        load_official_state(tmp_path / "nostate.pt")


@needs_fixtures
def test_cli_convert_verify_writes_a_loadable_folder(tmp_path, capsys):
    out = tmp_path / "rar"
    main(["convert", "--family", "rar", "--generator", str(FIXTURES / "rar_tiny.safetensors"), "--out", str(out),
          "--verify", str(FIXTURES / "rar_tiny_io.safetensors")])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] and report["greedy_tokens_identical"] is True
    loaded = load_module(out).eval()
    gen, _ = _convert_fixture("rar")
    assert torch.equal(_logits("rar", loaded), _logits("rar", gen))
    presets = json.loads((out / "sampler_presets.json").read_text())
    assert json.loads((out / "sampler.json").read_text()) == presets["paper"]
    assert json.loads((out / "config.json").read_text())["converted_from"]["official_args"]["hidden_size"] == 64


@needs_fixtures
def test_cli_verify_fails_on_a_wrong_weight(tmp_path, capsys):
    state = load_official_state(FIXTURES / "llamagen_gpt.safetensors")
    state["layers.1.feed_forward.w2.weight"] = state["layers.1.feed_forward.w2.weight"] * 1.01
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(SystemExit) as e:
        main(["convert", "--family", "llamagen", "--generator", str(tmp_path / "bad.safetensors"), "--args", '{"n_head": 4}',
              "--out", str(tmp_path / "bad"), "--verify", str(FIXTURES / "llamagen_gpt_io.safetensors")])
    assert e.value.code == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not report["ok"] and report["max_abs"] > TOLERANCE


@needs_fixtures
def test_converted_folder_samples_through_the_cli(tmp_path, capsys):
    """``mmgen convert`` then ``mmgen sample --label 207`` on the folder (the sampler.json of the paper applies).

    The tokenizer is a small stand-in with the generator's code contract (1024 codes of width 256, 16x16
    grid, 256 px): this checks the folder's plumbing, not the pixels (the tokenizer tests do those).
    """
    out = tmp_path / "rar"
    main(["convert", "--family", "rar", "--generator", str(FIXTURES / "rar_tiny.safetensors"), "--out", str(out)])
    tok = mmgen.create_tokenizer("vq-tiny", image_size=256, block_out_channels=(8, 8, 8, 8, 8), norm_num_groups=8, z_channels=8,
                                 codebook_size=1024, codebook_dim=256)
    tok.save_pretrained(out / "tokenizer")
    png = tmp_path / "s.png"
    main(["sample", "--ckpt", str(out), "--label", "207", "--n", "2", "--out", str(png)])
    meta = json.loads(png.with_suffix(".json").read_text())
    assert png.is_file() and meta["sampler"]["cfg_scale"] == 16.0 and meta["sampler"]["cfg_schedule"] == "power-cosine"


@pytest.mark.parametrize("family", ["llamagen", "rar", "var"])
def test_official_dropouts_act_in_training_only(family):
    """Token, residual, attention dropout and drop-path of the official recipes: random in training, off in eval."""
    drops = {"llamagen": dict(resid_dropout_p=0.3, token_dropout_p=0.3), "rar": dict(dropout=0.3, attn_drop=0.3),
             "var": dict(drop_rate=0.3, attn_drop_rate=0.3, drop_path_rate=0.3)}[family]
    gen = build_generator(family, OTHER_SIZES[family] | drops)
    _randomize(gen)
    gen.eval()
    assert torch.equal(_logits(family, gen), _logits(family, gen))
    gen.train()
    assert not torch.equal(_logits(family, gen), _logits(family, gen))
