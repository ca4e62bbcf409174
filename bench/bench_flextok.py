"""FlexTok and subobject tokenizers: PSNR vs token count, judge accuracy vs token budget, subobject round trip.

    python bench/bench_flextok.py --flextok runs/shapes-flextok/model --photos-flextok runs/photos-flextok/model \
        --generator runs/shapes-flextok-raster/model --subobject runs/shapes-subobject/model \
        --subobject-generator runs/shapes-subobject-ar/model --json bench/results/flextok.json

- PSNR(k): held-out images (``split="test"``; photos: china, flower, chelsea never seen in training)
  encoded once, decoded from the first ``k`` tokens with the tokenizer's own decoder settings
  (seeded noise, so every ``k`` starts from the same noise); it must rise with ``k``. On ``shapes``
  also the judge's agreement between each image's caption and its decode from ``k`` tokens.
- Judge accuracy vs token budget: the raster generator samples only ``k`` tokens
  (``SamplerConfig.token_budget``) and the tokenizer decodes that prefix; fresh shapes prompts.
- Subobject: judge agreement between the caption and the reconstruction of the same test image,
  through the trained SeqAE and through the exact-fill path (true segments, mean colours), and the
  judge accuracy of the generator trained on segment sequences (with its mean segment count).
Every part runs only when its checkpoint is given. Tables print as Markdown.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from mmgen.modeling import write_json_atomic

KS = (1, 2, 4, 8, 16, 32)


@torch.no_grad()
def recon_vs_k(tok, world: str, n: int, ks: tuple[int, ...], batch_size: int = 64, world_seed: int = 0,
               **decode_kw) -> dict[str, dict]:
    """Mean PSNR of decodes from the first k tokens; on ``shapes`` also the judge's agreement between
    each test image's caption and its decode (does the prefix keep every object's colour, shape, place),
    whole and per attribute. ``world_seed`` seeds the test images; ``decode_kw`` go to ``tok.decode``."""
    from mmgen.data import build_dataset
    from mmgen.eval.judge import ATTRIBUTES, judge_batch
    from mmgen.eval.recon import psnr

    ds = build_dataset(world, size=tok.image_size, seed=world_seed, split="test")
    judged = world.startswith("shapes")  # the judge reads shapes captions only
    keys = ("whole", "count", *ATTRIBUTES)
    sums, agree = dict.fromkeys(ks, 0.0), {a: dict.fromkeys(ks, 0.0) for a in keys}
    for s in range(0, n, batch_size):
        items = [ds[i] for i in range(s, min(n, s + batch_size))]
        x = torch.stack([it["pixels"] for it in items])
        captions = [it["caption"] for it in items] if judged else None
        tokens = tok.encode(x)
        for k in ks:
            y = tok.decode(tokens.prefix(k), **decode_kw)
            sums[k] += float(psnr(y, x).sum())
            if judged:
                r = judge_batch(y, captions)
                for a in keys:
                    agree[a][k] += r[a] * len(items)
    out = {"psnr_db": {k: v / n for k, v in sums.items()}}
    if judged:
        out["judge_whole"] = {k: v / n for k, v in agree.pop("whole").items()}
        out["judge_attributes"] = {a: {k: v / n for k, v in d.items()} for a, d in agree.items()}
    return out


PROBE_ATTRS = ("color", "shape", "size", "position", "row", "column")


@torch.no_grad()
def code_probe(tok, n: int, ks: tuple[int, ...], world_seed: int = 1, n_train: float = 0.8,
               attrs: tuple[str, ...] = PROBE_ATTRS) -> dict[str, dict[int, float]]:
    """Do the tokens carry what the judge asks for? An MLP reads each one-object test image's first k FSQ codes
    and predicts its colour, shape, size and position (held-out accuracy); set beside the judge of the decodes
    it tells a lossy encoder from a decoder that cannot draw what the codes say. The probe learns from 80% of the ``n``
    images: with 1200 of them it read shape 0.92 from codes that a 4800-image probe reads at 0.986, so use thousands."""
    from sklearn.neural_network import MLPClassifier

    from mmgen.data import build_dataset
    from mmgen.data.shapes import parse_caption

    ds = build_dataset("shapes:objects=1", size=tok.image_size, seed=world_seed, split="test")
    items = [ds[i] for i in range(n)]
    codes = torch.cat([tok.embed_ids(tok.encode(torch.stack([it["pixels"] for it in items[s : s + 256]])).ids)
                       for s in range(0, n, 256)])  # (n, K, d)
    objs = [parse_caption(it["caption"])[0] for it in items]
    cut = int(n * n_train)
    out: dict[str, dict[int, float]] = {}
    for attr in attrs:
        y = [o.cell[("row", "column").index(attr)] if attr in ("row", "column") else getattr(o, attr) for o in objs]
        out[attr] = {}
        for k in ks:
            x = codes[:, :k].flatten(1).numpy()
            clf = MLPClassifier((256,), max_iter=400, random_state=0).fit(x[:cut], y[:cut])
            out[attr][k] = float(clf.score(x[cut:], y[cut:]))
    return out


@torch.no_grad()
def shape_confusion(tok, n: int = 400, world_seed: int = 1) -> dict[str, int]:
    """Which shapes the decodes (all K tokens) turn into: ``"size true->drawn": count`` over one-object test scenes
    (``none``: nothing detected). Points at what a decoder gets wrong, e.g. small circles drawn as triangles."""
    from collections import Counter

    from mmgen.data import build_dataset
    from mmgen.data.shapes import parse_caption
    from mmgen.eval.judge import detect

    ds = build_dataset("shapes:objects=1", size=tok.image_size, seed=world_seed, split="test")
    items = [ds[i] for i in range(n)]
    rec = torch.cat([tok.reconstruct(torch.stack([it["pixels"] for it in items[s : s + 100]])) for s in range(0, n, 100)])
    counts: Counter = Counter()
    for it, img in zip(items, rec):
        truth, found = parse_caption(it["caption"])[0], detect(img)
        drawn = found[0].as_object().shape if found else "none"
        counts[f"{truth.size} {truth.shape}->{drawn}"] += 1
    return dict(sorted(counts.items()))


@torch.no_grad()
def axis_check(tok, n: int = 128, world_seed: int = 1, shift: int = 4) -> dict[str, float]:
    """Does the tokenizer keep both image axes? On one-object test scenes: the share of ids that change when the image
    is shifted ``shift`` px down / right (an encoder blind to one axis barely changes), and the share of decodes (all
    K tokens; 1 Euler step = the expected image at t = 1, and the tokenizer's own steps) whose largest object is in the
    right row / column of the 3x3 grid (chance 1/3)."""
    from mmgen.data import build_dataset
    from mmgen.data.shapes import parse_caption
    from mmgen.eval.judge import detect

    ds = build_dataset("shapes:objects=1", size=tok.image_size, seed=world_seed, split="test")
    items = [ds[i] for i in range(n)]
    x = torch.stack([it["pixels"] for it in items])
    cells = [parse_caption(it["caption"])[0].cell for it in items]
    ids = tok.encode(x).ids
    out = {"ids_changed_shift_down": float((tok.encode(x.roll(shift, -2)).ids != ids).float().mean()),
           "ids_changed_shift_right": float((tok.encode(x.roll(shift, -1)).ids != ids).float().mean())}
    for steps in sorted({1, tok.config.flow_steps}):
        found = [detect(img) for img in tok.decode(ids, steps=steps)]
        got = [d[0].as_object().cell if d else (-1, -1) for d in found]
        out[f"row_right_{steps}_steps"] = sum(g[0] == c[0] for g, c in zip(got, cells)) / n
        out[f"column_right_{steps}_steps"] = sum(g[1] == c[1] for g, c in zip(got, cells)) / n
    return out


@torch.no_grad()
def first_token_colour(tok, n_train: int, n: int = 256, world_seed: int = 1) -> dict[str, float]:
    """How much of the colour that the first token holds does the decoder draw? Every one-object training scene of
    ``n_train`` (world seed 0) is encoded and each first id gets the colour it holds most often; on ``n`` one-object
    test scenes that lookup (the ceiling of any decoder reading one id) is set beside the judged colour of the decode
    from that id alone. ``seen``: test ids that occur among the training scenes; ``purity``: the lookup on its own scenes."""
    from collections import Counter, defaultdict

    from mmgen.data import build_dataset
    from mmgen.data.shapes import parse_caption
    from mmgen.eval.judge import detect

    def first_ids(ds, count):
        items = [ds[i] for i in range(count)]
        ids = torch.cat([tok.encode(torch.stack([it["pixels"] for it in items[s : s + 256]])).ids[:, :1]
                         for s in range(0, count, 256)])
        return ids, [parse_caption(it["caption"])[0].color for it in items]

    ids, colours = first_ids(build_dataset("shapes:objects=1", size=tok.image_size, seed=0, split="train"), n_train)
    table: dict[int, Counter] = defaultdict(Counter)
    for i, c in zip(ids[:, 0].tolist(), colours):
        table[i][c] += 1
    ids, colours = first_ids(build_dataset("shapes:objects=1", size=tok.image_size, seed=world_seed, split="test"), n)
    drawn = [d[0].color if (d := detect(img)) else "none" for img in tok.decode(ids)]
    lookup = [table[i].most_common(1)[0][0] if i in table else None for i in ids[:, 0].tolist()]
    return {"distinct_first_ids": len(table), "purity": sum(max(c.values()) for c in table.values()) / n_train,
            "seen": sum(v is not None for v in lookup) / n, "lookup": sum(a == c for a, c in zip(lookup, colours)) / n,
            "decode": sum(a == c for a, c in zip(drawn, colours)) / n}


def decoder_sweep(tok, n: int, ks: tuple[int, ...], steps: list[int], cfgs: list[float], seeds: list[int],
                  world_seed: int, noise_scales: tuple[float, ...] = (), world: str = "shapes") -> list[dict]:
    """Inference-only knobs of a shapes FlexTok: flow steps, decoder CFG, the start-noise seed and scale (one at a
    time around the tokenizer's own settings); judge (whole, colour) and PSNR vs k for each."""
    cf = tok.config
    base = {"steps": cf.flow_steps, "cfg_scale": cf.cfg_scale, "seed": cf.decode_seed, "noise_scale": cf.decode_noise_scale}
    variants = [base] + [{**base, "steps": s} for s in steps if s != base["steps"]] \
        + [{**base, "cfg_scale": c} for c in cfgs if c != base["cfg_scale"]] + [{**base, "seed": s} for s in seeds if s != base["seed"]] \
        + [{**base, "noise_scale": s} for s in noise_scales if s != base["noise_scale"]]
    rows = []
    for v in variants:
        r = recon_vs_k(tok, world, n, ks, world_seed=world_seed, **v)
        rows.append({"decode": v, **r})
        print(f"{v}: judge " + " ".join(f"{r['judge_whole'][k]:.3f}" for k in ks)
              + " | colour " + " ".join(f"{r['judge_attributes']['color'][k]:.3f}" for k in ks)
              + " | PSNR " + " ".join(f"{r['psnr_db'][k]:.2f}" for k in ks), flush=True)
    return rows


@torch.no_grad()
def decode_grid(tok, world: str, ks: tuple[int, ...], path: Path, n: int = 12) -> None:
    """A picture of the same thing: test images (top row), then their decodes from k tokens, one row per k."""
    from torchvision.utils import save_image

    from mmgen.data import build_dataset

    ds = build_dataset(world, size=tok.image_size, split="test")
    x = torch.stack([ds[i * 7]["pixels"] for i in range(n)])  # spread over the test photos / scenes
    tokens = tok.encode(x)
    rows = [x, *(tok.decode(tokens.prefix(k)) for k in ks)]
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = torch.nn.functional.interpolate(torch.cat(rows).float().clamp(-1, 1), scale_factor=3, mode="nearest")  # readable
    save_image(grid * 0.5 + 0.5, path, nrow=n, padding=4, pad_value=1.0)


def monotone(values: list[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


def load_pipe(path: str):
    import mmgen
    from mmgen.pipeline import SAMPLER_FILE
    from mmgen.sampler import SamplerConfig

    pipe = mmgen.load(path)  # reads the folder's sampler.json into pipe.sampler
    return pipe, pipe.sampler if (pipe.path / SAMPLER_FILE).is_file() else SamplerConfig(cfg_scale=1.5, temperature=0.6)


def judge(pipe, sampler, n: int) -> dict[str, float]:
    from mmgen.eval.generation import judge_pipeline

    out = {}
    for objects in (1, 2):
        r = judge_pipeline(pipe, n=n, objects=objects, sampler=sampler, progress=False)
        out[f"whole_{objects}obj"] = r["whole"]
        out[f"images_per_second_{objects}obj"] = r["images_per_second"]
    return out


@torch.no_grad()
def subobject_round_trip(tok, n: int) -> dict[str, float]:
    from mmgen.data import build_dataset
    from mmgen.eval.judge import judge_batch

    ds = build_dataset("shapes", size=tok.image_size, split="test")
    items = [ds[i] for i in range(n)]
    x, captions = torch.stack([it["pixels"] for it in items]), [it["caption"] for it in items]
    seqae = judge_batch(tok.decode(tok.encode(x)), captions)
    exact = judge_batch(tok.paint(tok.segment(x), fill="mean"), captions)
    return {"seqae_whole": seqae["whole"], "seqae_count": seqae["count"], "exact_whole": exact["whole"],
            "segments_per_image": float(tok.segment(x).count().float().mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flextok", help="FlexTok tokenizer trained on shapes (folder)")
    ap.add_argument("--photos-flextok", help="FlexTok tokenizer trained on photos (folder)")
    ap.add_argument("--generator", help="raster pipeline over FlexTok sequences (folder)")
    ap.add_argument("--subobject", help="subobject tokenizer trained on shapes (folder)")
    ap.add_argument("--subobject-generator", help="raster pipeline over subobject segments (folder)")
    ap.add_argument("--n", type=int, default=256, help="test images per PSNR / round-trip measurement")
    ap.add_argument("--n-prompts", type=int, default=200, help="fresh prompts per object count for the judge")
    ap.add_argument("--ks", default=",".join(map(str, KS)))
    ap.add_argument("--json", default=None)
    ap.add_argument("--grid-dir", default=None, help="write flextok_<world>_grid.png: test images, then a row of decodes per k")
    ap.add_argument("--world-seed", type=int, default=0, help="world seed of the shapes test images (1, 2, 3: fresh captions)")
    ap.add_argument("--sweep", action="store_true", help="--flextok only: judge/PSNR vs k against decoder flow steps, CFG, noise seed")
    ap.add_argument("--probe", type=int, default=0, help="--flextok only: MLP probe of the codes on this many one-object images")
    ap.add_argument("--probe-attrs", default=",".join(PROBE_ATTRS), help="--probe: the attributes to probe")
    ap.add_argument("--shape-confusion", type=int, default=0, help="--flextok only: what shapes the decodes of this many one-object scenes draw")
    ap.add_argument("--first-token", type=int, default=0,
                    help="--flextok only: colour at k = 1, decode vs a lookup of the first id over this many training scenes")
    ap.add_argument("--axes", action="store_true", help="--flextok only: does it keep the row and the column (axis_check)")
    ap.add_argument("--steps", default="10,25,50")
    ap.add_argument("--cfgs", default="1.0,1.5,3.0")
    ap.add_argument("--decode-seeds", default="0,1,2")
    ap.add_argument("--noise-scales", default="", help="--sweep: start-noise scales of the decode, e.g. 1.0,0.5,0.3,0")
    ap.add_argument("--sweep-world", default="shapes", help="--sweep: the scenes, e.g. shapes:objects=1")
    args = ap.parse_args()
    torch.manual_seed(0)
    from mmgen.eval.recon import load_tokenizer

    ks = tuple(int(k) for k in args.ks.split(","))
    if not args.sweep_world.startswith("shapes"):
        ap.error(f"--sweep-world must be a shapes world (the judge reads its captions), got {args.sweep_world!r}")
    if bad := sorted(set(args.probe_attrs.split(",")) - set(PROBE_ATTRS)):
        ap.error(f"--probe-attrs: unknown {bad}; choose from {','.join(PROBE_ATTRS)}")
    out: dict = {"ks": list(ks)}
    for key, world in (("flextok", "shapes"), ("photos_flextok", "photos")):
        path = getattr(args, key)
        if not path:
            continue
        tok, _ = load_tokenizer(path)
        ks_ok = tuple(k for k in ks if k <= tok.num_registers)
        if args.probe and world == "shapes":
            out["code_probe"] = r = {"tokenizer": path, "n": args.probe, **code_probe(tok, args.probe, ks_ok, args.world_seed or 1,
                                                                                    attrs=tuple(args.probe_attrs.split(",")))}
            print("| attribute (MLP probe of the first k codes) | " + " | ".join(f"k={k}" for k in ks_ok) + " |")
            dec = recon_vs_k(tok, "shapes:objects=1", min(args.n, args.probe), ks_ok, world_seed=args.world_seed or 1)
            r["decode_judge"] = {"whole": dec["judge_whole"], **dec["judge_attributes"]}
            for a in (a for a in PROBE_ATTRS if a in r):
                print(f"| {a} | " + " | ".join(f"{r[a][k]:.3f}" for k in ks_ok) + " |")
                if a in r["decode_judge"]:  # the judge reads the 3x3 cell, not row and column apart (--axes does)
                    print(f"| {a}, judge of the decode | " + " | ".join(f"{r['decode_judge'][a][k]:.3f}" for k in ks_ok) + " |")
        if args.first_token and world == "shapes":
            out["first_token_colour"] = r = {"tokenizer": path, "n": args.n, "n_train": args.first_token,
                                             **first_token_colour(tok, args.first_token, args.n, args.world_seed or 1)}
            print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items() if k != "tokenizer"))
        if args.axes and world == "shapes":
            out["axes"] = r = {"tokenizer": path, **axis_check(tok, min(args.n, 256), args.world_seed or 1)}
            print("\n".join(f"{k}: {v:.3f}" for k, v in r.items() if k != "tokenizer"))
        if args.shape_confusion and world == "shapes":
            out["shape_confusion"] = r = {"tokenizer": path, "n": args.shape_confusion,
                                          **shape_confusion(tok, args.shape_confusion, args.world_seed or 1)}
            print("\n".join(f"{k}: {v}" for k, v in r.items() if k not in ("tokenizer", "n")))
        if args.sweep and world == "shapes":
            nums = lambda s, f: [f(v) for v in s.split(",")]  # noqa: E731
            out["decoder_sweep"] = {"tokenizer": path, "n": args.n, "world": args.sweep_world, "world_seed": args.world_seed,
                                    "rows": decoder_sweep(tok, args.n, ks_ok, nums(args.steps, int), nums(args.cfgs, float),
                                                          nums(args.decode_seeds, int), args.world_seed,
                                                          tuple(nums(args.noise_scales, float)) if args.noise_scales else (),
                                                          args.sweep_world)}
        if (args.probe or args.sweep or args.axes or args.shape_confusion or args.first_token) and world == "shapes":
            continue
        res = recon_vs_k(tok, world, args.n, ks_ok, world_seed=args.world_seed if world == "shapes" else 0)
        out[f"psnr_{world}"] = {"tokenizer": path, "n": args.n, **res, "monotone": monotone(list(res["psnr_db"].values()))}
        if args.grid_dir:
            decode_grid(tok, world, ks_ok, Path(args.grid_dir) / f"flextok_{world}_grid.png")
    if out.get("psnr_shapes") or out.get("psnr_photos"):
        print("\n| world | " + " | ".join(f"k={k}" for k in ks) + " | rises with k |")
        print("|---|" + "---|" * (len(ks) + 1))
        for world in ("shapes", "photos"):
            r = out.get(f"psnr_{world}")
            if r:
                cells = [f"{r['psnr_db'][k]:.2f}" if k in r["psnr_db"] else "—" for k in ks]
                print(f"| {world} | " + " | ".join(cells) + f" | {'✅' if r['monotone'] else '❌'} |")
                if "judge_whole" in r:
                    cells = [f"{r['judge_whole'][k]:.3f}" if k in r["judge_whole"] else "—" for k in ks]
                    print(f"| {world}: judge agreement of the decode | " + " | ".join(cells) + " | |")
                    for a, d in r["judge_attributes"].items():
                        print(f"| {world}: {a} right | " + " | ".join(f"{d[k]:.3f}" if k in d else "—" for k in ks) + " | |")
    if args.generator:
        pipe, sampler = load_pipe(args.generator)
        rows = {}
        for k in ks:
            if k <= pipe.generator.layout.num_tokens:
                rows[k] = judge(pipe, replace(sampler, token_budget=k), args.n_prompts)
        out["judge_vs_budget"] = {"generator": args.generator, "sampler": sampler.__dict__, "n_prompts": args.n_prompts, "rows": rows}
        print("\n| token budget | whole (1 object) | whole (2 objects) | images/s |\n|---|---|---|---|")
        for k, r in rows.items():
            print(f"| {k} | {r['whole_1obj']:.3f} | {r['whole_2obj']:.3f} | {r['images_per_second_1obj']:.1f} |")
    if args.subobject:
        tok, _ = load_tokenizer(args.subobject)
        out["subobject_round_trip"] = r = {"tokenizer": args.subobject, "n": args.n, **subobject_round_trip(tok, args.n)}
        print(f"\nsubobject round trip on {args.n} test images: SeqAE {r['seqae_whole']:.3f}, exact fill {r['exact_whole']:.3f} "
              f"(judge agreement with the caption), {r['segments_per_image']:.2f} segments/image")
    if args.subobject_generator:
        pipe, sampler = load_pipe(args.subobject_generator)
        r = judge(pipe, sampler, args.n_prompts)
        with torch.no_grad():
            cond = pipe.generator.make_condition(prompts=["a large red circle at the top left and a small blue square at the center"] * 64)
            ids = pipe.generator.generate(cond, sampler).ids
        r["segments_per_sample"] = float(pipe.generator.layout.count(ids).float().mean())
        out["subobject_generator"] = {"generator": args.subobject_generator, "sampler": sampler.__dict__, **r}
        print(f"subobject generator: whole {r['whole_1obj']:.3f} (1 object) / {r['whole_2obj']:.3f} (2 objects), "
              f"{r['segments_per_sample']:.2f} segments per two-object sample")
    if args.json:
        write_json_atomic(args.json, out)


if __name__ == "__main__":
    main()
