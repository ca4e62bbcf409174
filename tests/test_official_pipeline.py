"""A checkpoint in the official VAR layout, converted with ``mmgen convert``, used like any mmgen folder.

The official files are made here (no download): a small VAR generator and VQVAE with random
weights, written in the official layout by ``mmgen.convert``'s inverse mappings. The converted
folder must sample through ``mmgen sample --preset`` (the paper's settings; flags override them),
be listed by the demo with its class labels, and run through ``mmgen eval fid``.
"""
from __future__ import annotations

import json

import pytest
import torch

from mmgen.cli import main
from mmgen.convert.generators import build_generator, generator_to_official
from mmgen.convert.tokenizers import var_vqvae_from_args, var_vqvae_to_official
from mmgen.pipeline import recommended_sampler

VAR_ARGS = dict(depth=2, embed_dim=64, num_heads=2, num_classes=1000, mlp_ratio=2.0, norm_eps=1e-6, drop_rate=0.0, drop_path_rate=0.0, cond_drop_rate=0.1,
                attn_l2_norm=True, shared_aln=False, patch_nums=[1, 2, 4], vocab_size=64, Cvae=8)
VAE_ARGS = dict(vocab_size=64, z_channels=8, ch=32, v_patch_nums=[1, 2, 4])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``mmgen convert --family var`` of official-layout files (``.pth``, read with ``weights_only``)."""
    tmp = tmp_path_factory.mktemp("official")
    torch.manual_seed(0)
    gen = build_generator("var", VAR_ARGS)
    with torch.no_grad():
        for p in gen.parameters():  # the zero-initialised head and AdaLN become non-trivial
            p.add_(torch.randn_like(p) * 0.05)
    torch.save(generator_to_official("var", gen), tmp / "var_d2.pth")
    torch.save(var_vqvae_to_official(var_vqvae_from_args(VAE_ARGS)), tmp / "vae.pth")
    out = tmp / "models" / "var-converted"
    main(["convert", "--family", "var", "--generator", str(tmp / "var_d2.pth"), "--tokenizer", str(tmp / "vae.pth"),
          "--tokenizer-args", json.dumps({"v_patch_nums": [1, 2, 4]}), "--out", str(out)])
    return out


def test_sample_with_the_paper_preset_and_overrides(converted, tmp_path):
    presets = json.loads((converted / "sampler_presets.json").read_text())
    assert set(presets) == {"paper", "demo"} and presets["paper"]["top_k"] == 900
    png = tmp_path / "paper.png"
    assert main(["sample", "--ckpt", str(converted), "--label", "207", "--preset", "paper", "--n", "2", "--out", str(png)]) == 0
    meta = json.loads(png.with_suffix(".json").read_text())
    assert png.is_file() and meta["labels"] == [207, 207] and meta["num_images"] == 2
    assert {k: meta["sampler"][k] for k in presets["paper"]} == presets["paper"]
    # an explicit flag overrides the preset; the rest of the preset stays
    png = tmp_path / "demo.png"
    assert main(["sample", "--ckpt", str(converted), "--label", "3", "--preset", "demo", "--top-k", "5", "--n", "1", "--out", str(png)]) == 0
    sampler = json.loads(png.with_suffix(".json").read_text())["sampler"]
    assert sampler["top_k"] == 5 and sampler["cfg_scale"] == presets["demo"]["cfg_scale"] and sampler["top_p"] == presets["demo"]["top_p"]


def test_an_unknown_preset_names_the_available_ones(converted, tmp_path, capsys):
    assert main(["sample", "--ckpt", str(converted), "--label", "1", "--preset", "fid", "--n", "1", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "'fid'" in err and "['demo', 'paper']" in err and not (tmp_path / "x.png").exists()
    with pytest.raises(ValueError, match="no sampler_presets.json"):
        recommended_sampler(tmp_path, "paper")
    assert recommended_sampler(converted, "demo").cfg_scale == 5.0 and recommended_sampler(converted).top_k == 900


def test_the_demo_lists_it_with_class_labels(converted):
    from app.models import scan

    (info,) = scan(converted.parent)
    assert info.ok and info.name == "var-converted" and info.generator == "VARGenerator"
    assert info.cond == "class" and info.num_classes == 1000 and "class label 0–999" in info.markdown()
    assert info.recommended == recommended_sampler(converted)


def test_eval_fid_on_the_converted_folder(converted, tmp_path):
    from PIL import Image

    ref = tmp_path / "ref"
    ref.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        Image.fromarray(torch.randint(0, 256, (64, 64, 3), generator=g, dtype=torch.uint8).numpy()).save(ref / f"{i}.png")
    out = tmp_path / "fid.json"
    assert main(["eval", "fid", "--ckpt", str(converted), "--ref", str(ref), "--n", "4", "--preset", "paper", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 4 and res["fid"] == res["fid"] and res["fid"] >= 0  # finite, not NaN
    assert res["samples"]["sampler"]["top_k"] == 900 and res["samples"]["sampler"]["cfg_schedule"] == "linear"
