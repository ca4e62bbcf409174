"""Judge for ``shapes-video``: does a generated clip show the prompt's object moving its way?

Every frame goes through the image judge's blob finder (:func:`mmgen.eval.judge.detect`).
The clip must show one object in (almost) every frame; its colour and shape are the majority
vote of the per-frame detections (one bad frame does not flip them); its motion direction comes
from a least-squares line through the centroid track: the dominant axis and sign, provided the
object travelled at least ``min_travel`` of the canvas and mostly along that axis.

The majority vote hides an object that morphs from frame to frame; ``frames_right`` does not:
the fraction of frames whose largest detection has the prompt's colour AND shape (a frame with
no object counts as wrong). :func:`frame_consistency_sources` gives the same number for the
world's own clips and for a tokenizer's round trip of them, so a generator's shortfall can be
split into what the tokenizer already loses and what the generator adds.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from mmgen.data.video import DIRECTIONS, parse_video_caption
from mmgen.eval.judge import Detection, detect
from mmgen.images import to_uint8

__all__ = ["VIDEO_ATTRIBUTES", "VideoJudgeResult", "to_uint8_video", "judge_video", "judge_video_batch", "video_prompts", "judge_video_pipeline",
           "caption_accuracy", "image_pipeline", "video_reconstruction", "sweep_video_sampler", "frame_consistency_sources"]

VIDEO_ATTRIBUTES = ("color", "shape", "direction")
EVAL_SEED = 10_009  # prompts drawn from a stream the training worlds never use


@dataclass
class VideoJudgeResult:
    caption: str
    detections: list[list[Detection]]  # per frame, largest first
    track: list[tuple[float, float] | None]  # centroid (x, y) of the largest detection per frame
    found: dict[str, str | None]  # what the judge saw: color, shape, direction
    attributes: dict[str, bool]
    count: bool  # one object in at least `min_frames` of the frames
    frames_with_one: float = 0.0
    displacement: tuple[float, float] = (0.0, 0.0)  # fitted (dx, dy) over the clip, pixels
    frames_right: float = 0.0  # frames whose largest detection has the prompt's colour and shape

    @property
    def whole(self) -> bool:
        return self.count and all(self.attributes.values())


def to_uint8_video(video: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 ``(T,H,W,3)`` from a uint8 THWC array / ``(3,T,H,W)`` uint8 tensor or a float ``(3,T,H,W)`` in [-1,1]."""
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    video = np.asarray(video)
    if video.ndim != 4:
        raise ValueError(f"expected one video (T,H,W,3) or (3,T,H,W), got shape {video.shape}")
    if video.shape[-1] != 3 and video.shape[0] == 3:
        video = np.transpose(video, (1, 2, 3, 0))
    if video.shape[-1] != 3:
        raise ValueError(f"a video must have 3 channels, got shape {video.shape}")
    if video.dtype == np.uint8:
        return video
    return to_uint8(torch.from_numpy(video)).numpy()


def _direction(track: list[tuple[float, float] | None], side: int, min_travel: float) -> tuple[str | None, tuple[float, float]]:
    pts = [(t, p) for t, p in enumerate(track) if p is not None]
    if len(pts) < 2:
        return None, (0.0, 0.0)
    t = np.array([a for a, _ in pts], dtype=np.float64)
    xy = np.array([p for _, p in pts], dtype=np.float64)
    span = len(track) - 1
    slope = np.polyfit(t, xy, 1)[0]  # (dx/dt, dy/dt)
    dx, dy = float(slope[0] * span), float(slope[1] * span)
    major, minor = (dx, dy) if abs(dx) >= abs(dy) else (dy, dx)
    if abs(major) < min_travel * side or abs(minor) > 0.5 * abs(major):
        return None, (dx, dy)
    if abs(dx) >= abs(dy):
        return ("right" if dx > 0 else "left"), (dx, dy)
    return ("down" if dy > 0 else "up"), (dx, dy)


def judge_video(video: np.ndarray | torch.Tensor, caption: str, min_frames: float = 1.0, min_travel: float = 0.125) -> VideoJudgeResult:
    """Score one clip against ``a COLOUR SHAPE moving DIRECTION``.

    Args:
        min_frames: fraction of frames that must show exactly one object.
        min_travel: fitted travel over the clip, as a fraction of the side, below which the object
            counts as not moving (no direction).
    """
    color, shape, direction = parse_video_caption(caption)
    frames = to_uint8_video(video)
    side = frames.shape[1]
    dets = [detect(f) for f in frames]
    main = [d[0] if d else None for d in dets]
    track = [None if d is None else ((d.box[1] + d.box[3]) / 2, (d.box[0] + d.box[2]) / 2) for d in main]
    vote = lambda attr: Counter(getattr(d, attr) for d in main if d is not None).most_common(1)[0][0] if any(main) else None  # noqa: E731
    moved, disp = _direction(track, side, min_travel)
    found = {"color": vote("color"), "shape": vote("shape"), "direction": moved}
    one = float(np.mean([len(d) == 1 for d in dets]))
    attrs = {"color": found["color"] == color, "shape": found["shape"] == shape, "direction": moved == direction}
    right = float(np.mean([d is not None and d.color == color and d.shape == shape for d in main]))
    return VideoJudgeResult(caption, dets, track, found, attrs, count=one >= min_frames - 1e-9, frames_with_one=one, displacement=disp,
                            frames_right=right)


def judge_video_batch(videos, captions: list[str], **kw: Any) -> dict[str, float]:
    """Accuracies over a batch of clips (uint8 ``(B,3,T,H,W)`` / ``(B,T,H,W,3)`` or float ``(B,3,T,H,W)``).

    Returns ``color``, ``shape``, ``direction``, ``count`` (fraction of clips with one object per
    frame), ``whole`` (everything right), ``frame_consistency`` (fraction of all frames whose
    largest object has the prompt's colour and shape), ``frame_consistency_whole`` (the same over
    the clips judged whole; NaN if none) and ``n``.
    """
    if len(videos) != len(captions):
        raise ValueError(f"got {len(videos)} videos but {len(captions)} captions")
    if not captions:
        raise ValueError("judge_video_batch needs at least one video")
    results = [judge_video(v, c, **kw) for v, c in zip(videos, captions)]
    out = {a: float(np.mean([r.attributes[a] for r in results])) for a in VIDEO_ATTRIBUTES}
    out["count"] = float(np.mean([r.count for r in results]))
    out["whole"] = float(np.mean([r.whole for r in results]))
    out["frame_consistency"] = float(np.mean([r.frames_right for r in results]))
    whole = [r.frames_right for r in results if r.whole]
    out["frame_consistency_whole"] = float(np.mean(whole)) if whole else float("nan")
    out["n"] = len(results)
    return out


def video_prompts(n: int, seed: int = EVAL_SEED) -> list[str]:
    """``n`` random ``shapes-video`` captions (uniform over colour, shape and direction)."""
    from mmgen.data.shapes import COLORS, SHAPES
    from mmgen.data.video import video_caption
    from mmgen.eval.generation import check_count

    check_count("n", n)
    rng = np.random.default_rng([seed, 3])
    return [video_caption(list(COLORS)[rng.integers(len(COLORS))], SHAPES[rng.integers(len(SHAPES))], list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]) for _ in range(n)]


@torch.no_grad()
def judge_video_pipeline(pipe, n: int = 300, sampler=None, frames: int | None = None, batch_size: int = 50, seed: int = EVAL_SEED, progress: bool = True) -> dict[str, Any]:
    """Generate one clip per fresh prompt and score it; also the generation speed in frames/s."""
    from tqdm.auto import tqdm

    from mmgen.sampler import SamplerConfig

    sampler = sampler or SamplerConfig()
    prompts = video_prompts(n, seed)
    clips, seconds = [], 0.0
    for start in tqdm(range(0, n, batch_size), desc="judge video", disable=not progress, leave=False):
        t0 = time.perf_counter()
        clips.append(pipe(prompt=prompts[start:start + batch_size], sampler=replace(sampler, seed=sampler.seed + start), frames=frames))
        seconds += time.perf_counter() - t0
    clips = torch.cat(clips)  # uint8 (n, 3, T, H, W)
    scores = judge_video_batch(clips, prompts)
    return {"task": "text-to-video", "n": n, **scores, "frames": int(clips.shape[2]), "videos_per_second": n / seconds,
            "frames_per_second": n * clips.shape[2] / seconds, "sampler": asdict(sampler), "videos": clips, "prompts": prompts}


@torch.no_grad()
def caption_accuracy(pipe, n: int = 300, objects: int = 1, batch_size: int = 100, seed: int = EVAL_SEED, constrained: bool = True) -> dict[str, Any]:
    """Image -> caption of a unified model on fresh ``shapes`` images: exact match of every attribute.

    ``attributes``: fraction of images whose caption names exactly the true objects (any order)
    with every attribute right; per-attribute rates compare the first caption object with its
    best-matching true object; ``valid``: captions that parse.
    """
    from mmgen.data.shapes import ShapesWorld, parse_caption
    from mmgen.eval.generation import check_count
    from mmgen.eval.judge import ATTRIBUTES

    check_count("n", n)
    world = ShapesWorld(size=pipe.config.image_size, seed=seed, objects=str(objects), split="test")
    scenes = [world.scene(i) for i in range(n)]
    images = torch.from_numpy(np.stack([img for _, img, _ in scenes])).permute(0, 3, 1, 2)
    t0 = time.perf_counter()
    captions = [c for s in range(0, n, batch_size) for c in pipe.caption(images[s:s + batch_size], constrained=constrained)]
    seconds = time.perf_counter() - t0
    exact, valid, per = [], [], {a: [] for a in ATTRIBUTES}
    for (truth, _, _), cap in zip(scenes, captions):
        try:
            said = parse_caption(cap)
        except ValueError:
            said = None
        valid.append(said is not None)
        exact.append(said is not None and sorted(map(repr, said)) == sorted(map(repr, truth)))
        best = max(truth, key=lambda o: sum(getattr(o, a) == getattr(said[0], a) for a in ATTRIBUTES)) if said else None
        for a in ATTRIBUTES:
            per[a].append(bool(said) and getattr(said[0], a) == getattr(best, a))
    return {"task": "image-to-caption", "objects": objects, "n": n, "exact": float(np.mean(exact)), "valid": float(np.mean(valid)),
            **{a: float(np.mean(v)) for a, v in per.items()}, "images_per_second": n / seconds, "constrained": constrained, "captions": captions}


def image_pipeline(pipe):
    """A unified (video) pipeline seen as a text-to-image one (``frames=1``), for the image judge."""

    def call(**kw):
        return pipe(frames=1, **kw)[:, :, 0]

    return call


@torch.no_grad()
def _frames(clips: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) clips -> (B*T, C, H, W) frames, clip-major."""
    return clips.transpose(1, 2).flatten(0, 1)


@torch.no_grad()
def video_reconstruction(tok, data: str = "shapes-video", n: int = 256, split: str = "test", batch_size: int = 32, progress: bool = True,
                         tokenizer_path=None) -> dict[str, Any]:
    """A video tokenizer on ``n`` clips: PSNR per frame index (and mean), SSIM, codebook usage, judge on reconstructions.

    An image world (``shapes``: items of one frame) is read as one-frame clips, the images a unified model decodes
    with the same tokenizer; its reconstructions are then scored by the image judge.
    """
    from tqdm.auto import tqdm

    from mmgen.data import build_dataset
    from mmgen.eval.generation import check_count
    from mmgen.eval.recon import codebook_usage, psnr, ssim, tokenizer_identity

    check_count("n", n)
    ds = build_dataset(data, size=tok.image_size, split=split) if isinstance(data, str) else data
    device = next(tok.parameters()).device
    per_frame, ssims, ids, recs, caps = [], [], [], [], []
    for s in tqdm(range(0, n, batch_size), desc="reconstruct", disable=not progress, leave=False):
        items = [ds[i] for i in range(s, min(n, s + batch_size))]
        x = torch.stack([it["pixels"] for it in items]).to(device)
        if x.ndim == 4:  # images: one-frame clips
            x = x[:, :, None]
        tokens = tok.encode(x)
        rec = tok.decode(tokens, frames=x.shape[2]).float().clamp(-1, 1)
        b, t = x.shape[0], x.shape[2]
        per_frame.append(psnr(_frames(rec), _frames(x)).reshape(b, t).cpu())
        ssims.append(ssim(_frames(rec), _frames(x)).cpu())
        ids.append(tokens.ids.cpu())
        recs.append(rec.cpu())
        caps += [it["caption"] for it in items]
    pf = torch.cat(per_frame)
    out = {"data": str(data), "split": split, "n": len(pf), "frames": int(pf.shape[1]), "psnr_db": float(pf.mean()),
           "psnr_per_frame_db": [round(float(v), 2) for v in pf.mean(0)], "ssim": float(torch.cat(ssims).mean()),
           "tokens_per_clip": int(ids[0].shape[1]), "vocab": tok.vocab_size, **codebook_usage(torch.cat(ids), tok.vocab_size)}
    from mmgen.data.shapes import parse_caption

    if all(_parses(parse_video_caption, c) for c in caps):
        out["judge_on_reconstructions"] = judge_video_batch(torch.cat(recs), caps)
    elif out["frames"] == 1 and all(_parses(parse_caption, c) for c in caps):
        from mmgen.eval.judge import judge_batch

        out["judge_on_reconstructions"] = judge_batch(torch.cat(recs)[:, :, 0], caps)
    out["tokenizer"] = tokenizer_identity(tok, tokenizer_path)
    return out


def sweep_video_sampler(pipe, cfgs=(1.0, 1.5, 2.0, 3.0), temperatures=(1.0, 0.8, 0.6), n: int = 100, seed: int = 4242) -> list[dict[str, Any]]:
    """Video-judge accuracy per (cfg, temperature) on *validation* prompts (``seed`` != ``EVAL_SEED``), best first.

    Pick a recommended ``sampler.json`` with it, then report accuracy on the evaluation prompts.
    """
    from mmgen.sampler import SamplerConfig

    rows = []
    for cfg in cfgs:
        for temp in temperatures:
            s = SamplerConfig(cfg_scale=cfg, temperature=temp)
            res = judge_video_pipeline(pipe, n=n, sampler=s, seed=seed, progress=False)
            rows.append({"cfg_scale": cfg, "temperature": temp, "whole": res["whole"], "direction": res["direction"], "shape": res["shape"], "color": res["color"]})
    return sorted(rows, key=lambda r: -r["whole"])


@torch.no_grad()
def frame_consistency_sources(tok, n: int = 300, seed: int = 0, split: str = "test", batch_size: int = 50) -> dict[str, float]:
    """Per-frame consistency of ``n`` of the world's own clips and of ``tok``'s round trip of the same clips.

    The ceiling a generator on ``tok`` can reach: if the round trip already morphs, the tokenizer
    must improve; if only the generator's clips do, the sampler or the generator must.
    """
    from mmgen.data import collate
    from mmgen.data.video import ShapesVideoWorld
    from mmgen.eval.generation import check_count

    check_count("n", n)
    world = ShapesVideoWorld(size=tok.image_size, seed=seed, split=split)
    device = next(tok.parameters()).device
    truth, trip = [], []
    for s in range(0, n, batch_size):
        batch = collate([world[i] for i in range(s, min(n, s + batch_size))])
        x = batch["pixels"].to(device)
        rec = tok.decode(tok.encode(x), frames=x.shape[2]).float().clamp(-1, 1).cpu()
        truth.append(judge_video_batch(batch["pixels"], batch["caption"])["frame_consistency"] * len(x))
        trip.append(judge_video_batch(rec, batch["caption"])["frame_consistency"] * len(x))
    return {"world": sum(truth) / n, "round_trip": sum(trip) / n, "n": n}


def _parses(parse, text: str) -> bool:
    """Whether ``parse`` (a caption grammar's parser) accepts ``text``."""
    try:
        parse(text)
    except ValueError:
        return False
    return True
