"""Grow a trained FlexTok's FSQ codebook (more bits per token), and a generator trained on its old ids.

    python scripts/widen_flextok.py tokenizer runs/fttok/model runs/fttok-wide --extra 8   # [8,5,5,5] -> [8,5,5,5,8]
    # fine-tune it: mmgen train tokenizer ... init=runs/fttok-wide "model_args.levels=[8,5,5,5,8]" out=runs/fttok-wide-ft
    python scripts/widen_flextok.py generator runs/gen/model runs/gen-wide --tokenizer runs/fttok-wide-ft/model
    # fine-tune it on the new ids: mmgen train generator ... tokenizer=runs/fttok-wide-ft/model init=runs/gen-wide

The widened tokenizer decodes every old id as before, and the widened generator predicts the old
distribution spread evenly over the new digits (``mmgen.tokenizers_vis.flextok_widen`` says how).
"""
from __future__ import annotations

import argparse

from mmgen.modeling import load_module
from mmgen.models.widen import widen_generator
from mmgen.tokenizers_vis.flextok import FlexTokTokenizer
from mmgen.tokenizers_vis.flextok_widen import widen_fsq


def _flextok(path: str) -> FlexTokTokenizer:
    tok = load_module(path)
    if not isinstance(tok, FlexTokTokenizer):
        raise SystemExit(f"{path} holds a {type(tok).__name__}, not a FlexTok tokenizer")
    return tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["tokenizer", "generator"])
    ap.add_argument("src", help="a FlexTok tokenizer folder, or a generator folder trained on its ids")
    ap.add_argument("dst", help="where to write the widened copy")
    ap.add_argument("--extra", type=int, nargs="+", help="tokenizer: levels of the FSQ channels to append")
    ap.add_argument("--seed", type=int, default=0, help="tokenizer: seed of the new readout rows")
    ap.add_argument("--tokenizer", help="generator: the widened (and fine-tuned) tokenizer folder")
    args = ap.parse_args()
    if args.what == "tokenizer":
        if not args.extra:
            ap.error("tokenizer needs --extra LEVELS")
        tok = _flextok(args.src)
        wide = widen_fsq(tok, args.extra, seed=args.seed)
        old, new = f"levels {list(tok.config.levels)}, {tok.vocab_size}", f"{list(wide.config.levels)}, {wide.vocab_size}"
    else:
        if not args.tokenizer:
            ap.error("generator needs --tokenizer FOLDER")
        gen = load_module(args.src)
        wide = widen_generator(gen, _flextok(args.tokenizer))
        old, new = f"vocabulary {gen.config.vocab_size}", f"{wide.config.vocab_size}"
    wide.save_pretrained(args.dst)
    print(f"{args.dst}: {old} -> {new} codes per token")


if __name__ == "__main__":
    main()
