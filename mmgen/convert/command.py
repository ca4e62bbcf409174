"""``mmgen convert``: an official VAR / LlamaGen / RAR file -> an ordinary mmgen checkpoint folder.

The folder holds ``config.json`` + ``model.safetensors`` (+ ``tokenizer/`` when ``--tokenizer`` is
given), ``sampler.json`` (the paper's FID sampling settings, what ``mmgen sample`` uses by default)
and ``sampler_presets.json`` (named presets: ``paper``, ``demo``). With ``--verify IO.safetensors``
it runs that parity file through the converted model, prints one JSON report and exits 1 when a
difference is above tolerance or the greedy tokens differ.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_arguments", "run", "sampler_presets"]

_TOKENIZER_CONVERTERS = {"var": "convert_var_vqvae", "llamagen": "convert_llamagen_vq", "rar": "convert_maskgit_vq"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", required=True, choices=["var", "llamagen", "rar"])
    p.add_argument("--generator", required=True, help="official generator weights (.pth, .pt, .bin, .safetensors)")
    p.add_argument("--tokenizer", default=None, help="official tokenizer weights (VAR vae_ch160v4096z32.pth, LlamaGen vq_ds16_c2i.pt, MaskGIT-VQ .bin)")
    p.add_argument("--args", default=None, help="JSON of the official generator constructor arguments that override the inferred ones "
                                                "(e.g. LlamaGen '{\"block_size\": 576}' for 384 px)")
    p.add_argument("--tokenizer-args", default=None, help="JSON of the official tokenizer constructor arguments")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--verify", default=None, metavar="IO.safetensors", help="parity file: print a JSON report, exit 1 above tolerance")


def _json_arg(text: str | None, flag: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} must be a JSON object, got {text!r}: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object, got {text!r}")
    return value


def sampler_presets(family: str, gen) -> dict[str, dict]:
    """Each paper's sampling settings as mmgen ``SamplerConfig`` fields (``paper``: the FID setting; ``demo``: the demo script's)."""
    dim = gen.config.transformer.dim
    if family == "var":  # README: cfg=1.5, top_k=900, top_p=0.96; demo notebook cfg=4, top_p=0.95. mmgen scale = 1 + cfg (linear ramp)
        return {"paper": dict(cfg_scale=2.5, cfg_schedule="linear", top_k=900, top_p=0.96),
                "demo": dict(cfg_scale=5.0, cfg_schedule="linear", top_k=900, top_p=0.95)}
    if family == "llamagen":  # README evaluation table per size (sample_c2i_ddp.py: top_k 0); sample_c2i.py: cfg 4.0, top_k 2000
        cfg = {768: 2.0, 1024: 2.0, 1280: 1.75, 1536: 1.75, 3200: 1.65}.get(dim, 2.0)
        return {"paper": dict(cfg_scale=cfg, cfg_schedule="constant", top_k=0, top_p=1.0, temperature=1.0),
                "demo": dict(cfg_scale=4.0, cfg_schedule="constant", top_k=2000, top_p=1.0, temperature=1.0)}
    # RAR README_RAR.md per size: guidance_scale, guidance_scale_pow, randomize_temperature
    scale, power, temp = {768: (16.0, 2.75, 1.0), 1024: (15.5, 2.5, 1.02), 1280: (6.9, 1.5, 1.02), 1408: (8.0, 1.2, 1.02)}.get(dim, (16.0, 2.75, 1.0))
    paper = dict(cfg_scale=scale, cfg_schedule="power-cosine", cfg_power=power, temperature=temp, top_k=0)
    return {"paper": paper, "demo": paper}


def _tokenizer(family: str, path: str, args: dict):
    try:
        from mmgen.convert import tokenizers
    except ImportError as e:
        raise ValueError(f"tokenizer conversion is not available in this install ({e})") from None
    from mmgen.convert.generators import load_official_state

    return getattr(tokenizers, _TOKENIZER_CONVERTERS[family])(load_official_state(path), args or None)


def run(args: argparse.Namespace) -> dict:
    import torch

    from mmgen.convert.generators import convert_generator, load_official_state
    from mmgen.convert.verify import verify
    from mmgen.modeling import atomic_dir
    from mmgen.pipeline import TOKENIZER_DIR

    given = _json_arg(args.args, "--args")
    if args.family == "llamagen" and "block_size" not in given:
        print("mmgen convert: LlamaGen's token grid is not in its weights: assuming 16x16 (256 px); "
              "for a *_384 checkpoint pass --args '{\"block_size\": 576}'", file=sys.stderr)
    with torch.no_grad():
        gen = convert_generator(args.family, load_official_state(args.generator), given)
    tok = _tokenizer(args.family, args.tokenizer, _json_arg(args.tokenizer_args, "--tokenizer-args")) if args.tokenizer else None
    if tok is not None:
        gen.bind_tokenizer(tok)
    presets = sampler_presets(args.family, gen)
    extra = {"converted_from": {"family": args.family, "file": Path(args.generator).name, "official_args": gen.official_args}}
    with atomic_dir(Path(args.out)) as tmp:
        gen.write_files(tmp, extra=extra)
        if tok is not None:
            tok.write_files(tmp / TOKENIZER_DIR)
        (tmp / "sampler.json").write_text(json.dumps(presets["paper"], indent=2))
        (tmp / "sampler_presets.json").write_text(json.dumps(presets, indent=2))
    report: dict = {"out": str(args.out)}
    if args.verify:
        report = verify(args.family, gen, args.verify, tok) | report
        print(json.dumps(report))
        if not report["ok"]:
            raise SystemExit(1)
    else:
        print(f"wrote {args.out} ({gen.num_params() / 1e6:.1f}M parameters{', with tokenizer' if tok is not None else ', no tokenizer: pass --tokenizer to sample'})")
    return report
