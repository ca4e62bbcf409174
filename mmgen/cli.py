"""The ``mmgen`` command line: train, sample, data, eval, quickstart, list."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"


def _train(args: argparse.Namespace) -> None:
    from mmgen.train.run import train

    out = train(args.kind, args.recipe, overrides=args.overrides, out=args.out, resume=args.resume)
    print(f"model written to {out}")


def _sample(args: argparse.Namespace) -> None:
    from mmgen.sample.cli import run

    run(args)


def _pack(args: argparse.Namespace) -> None:
    from mmgen.data.shards import pack

    shards = pack(args.source, args.out, num_samples=args.num_samples, samples_per_shard=args.samples_per_shard, size=args.size, seed=args.seed)
    print(f"wrote {len(shards)} shard(s) to {args.out}")


def _sampler(args: argparse.Namespace):
    from mmgen.sample.cli import recommended_sampler
    from mmgen.sampling import SamplerConfig

    d = recommended_sampler(args.ckpt)
    if args.cfg is not None:
        d["cfg_scale"] = args.cfg
    d["seed"] = args.seed
    return SamplerConfig(**d)


def _eval_judge(args: argparse.Namespace) -> None:
    import mmgen
    from mmgen.eval.generation import judge_pipeline

    pipe = mmgen.load(args.ckpt)
    res = judge_pipeline(pipe, n=args.n, objects=args.objects, sampler=_sampler(args))
    res = {k: v for k, v in res.items() if k not in ("images", "prompts")}
    res["checkpoint"] = str(Path(args.ckpt).resolve())
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


def _eval_digits(args: argparse.Namespace) -> None:
    import mmgen
    from mmgen.eval.generation import digits_accuracy

    pipe = mmgen.load(args.ckpt)
    res = digits_accuracy(pipe, per_class=args.per_class, sampler=_sampler(args))
    res = {k: v for k, v in res.items() if k not in ("images", "labels")}
    print(json.dumps(res, indent=2))


def _list(args: argparse.Namespace) -> None:
    import mmgen
    from mmgen.registry import preset_info

    for name in mmgen.list_models(kind=args.kind):
        p = preset_info(name)
        print(f"{name:24s} {p.kind:10s} {p.cls.__name__:26s} {','.join(p.tags)}")


def _quickstart(args: argparse.Namespace) -> None:
    from mmgen.quickstart import quickstart

    quickstart(ckpt=args.ckpt, out=args.out, n=args.n)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmgen", description="Autoregressive image/video generation on one shared transformer.")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="sample a grid from a shipped model and score it with the shapes judge")
    q.add_argument("--ckpt", default=str(SHIPPED / "shapes-var"))
    q.add_argument("--out", default="out/quickstart.png")
    q.add_argument("--n", type=int, default=100, help="prompts to judge")
    q.set_defaults(func=_quickstart)

    t = sub.add_parser("train", help="train a tokenizer or a generator from a recipe")
    t.add_argument("kind", choices=["tokenizer", "generator"])
    t.add_argument("--recipe", required=True, help="YAML recipe (see train/recipes/)")
    t.add_argument("--out", default=None, help="run folder (default: the recipe's `out`)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    t.add_argument("overrides", nargs="*", help="typed key=value overrides, e.g. train.steps=100 model_args.transformer.depth=4")
    t.set_defaults(func=_train)

    s = sub.add_parser("sample", help="generate images from a checkpoint")
    from mmgen.sample.cli import add_arguments

    add_arguments(s)
    s.set_defaults(func=_sample)

    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    pk = dsub.add_parser("pack", help="write WebDataset tar shards from a world or an image folder")
    pk.add_argument("source", help="shapes | digits | folder:/path | a directory of images")
    pk.add_argument("--out", required=True)
    pk.add_argument("--num-samples", type=int, default=None)
    pk.add_argument("--samples-per-shard", type=int, default=1000)
    pk.add_argument("--size", type=int, default=32)
    pk.add_argument("--seed", type=int, default=0)
    pk.set_defaults(func=_pack)

    e = sub.add_parser("eval", help="evaluate a generator")
    esub = e.add_subparsers(dest="eval_command", required=True)
    j = esub.add_parser("judge", help="shapes-judge accuracy on fresh prompts")
    j.add_argument("--ckpt", required=True)
    j.add_argument("--n", type=int, default=500)
    j.add_argument("--objects", type=int, default=1, choices=[1, 2])
    j.add_argument("--cfg", type=float, default=None)
    j.add_argument("--seed", type=int, default=0)
    j.add_argument("--json", default=None, help="also write the result here")
    j.set_defaults(func=_eval_judge)
    dg = esub.add_parser("digits", help="class-conditional digits: accuracy of a classifier of real digits")
    dg.add_argument("--ckpt", required=True)
    dg.add_argument("--per-class", type=int, default=50)
    dg.add_argument("--cfg", type=float, default=None)
    dg.add_argument("--seed", type=int, default=0)
    dg.set_defaults(func=_eval_digits)

    ls = sub.add_parser("list", help="registered model presets")
    ls.add_argument("--kind", choices=["tokenizer", "generator"], default=None)
    ls.set_defaults(func=_list)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come anywhere after `train KIND` (argparse only takes them in one run)
    if args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        if os.environ.get("MMGEN_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mmgen: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
