"""Video: frames layout, the shapes-video world, the video judge, video tokenizers, video pipelines and CLI."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import mmgen
from mmgen.cli import main
from mmgen.data import build_dataset, collate
from mmgen.data.shapes import COLORS, SHAPES
from mmgen.data.video import ShapesVideoWorld, parse_video_caption, render_video, video_caption
from mmgen.eval.video_judge import frame_consistency_sources, judge_video, judge_video_batch, video_prompts
from mmgen.models.base import tokenizer_overrides
from mmgen.pipeline import Pipeline, save_pipeline
from mmgen.tokens import FramesLayout, GridLayout, Tokens, layout_from_dict

SMALL = dict(transformer=dict(dim=32, depth=1, heads=2))


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def clips(n, seed=0, split="test"):
    world = ShapesVideoWorld(size=32, seed=seed, split=split)
    return world, collate([world[i] for i in range(n)])


def test_frames_layout_round_trip():
    lay = FramesLayout(5, 4, 4)
    assert layout_from_dict(lay.to_dict()) == lay and lay.num_tokens == 80 and lay.frame_tokens == 16
    assert layout_from_dict(GridLayout(8, 8).to_dict()) == GridLayout(8, 8)
    assert lay.with_frames(2) == FramesLayout(2, 4, 4)
    assert Tokens(lay, ids=torch.zeros(2, 80, dtype=torch.long)).batch_size == 2
    with pytest.raises(ValueError, match="do not fit"):
        Tokens(lay, ids=torch.zeros(2, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="positive"):
        FramesLayout(0, 4, 4)
    with pytest.raises(ValueError, match="known: grid, scales, frames"):
        layout_from_dict({"type": "cube"})


def test_world_is_deterministic_and_objects_move_inside_the_canvas():
    world = ShapesVideoWorld(size=32, seed=3, frames=8)
    a, b = world[5], world[5]
    assert torch.equal(a["pixels"], b["pixels"]) and a["pixels"].shape == (3, 8, 32, 32)
    assert not torch.equal(a["pixels"], ShapesVideoWorld(size=32, seed=3, split="test")[5]["pixels"])
    for i in range(50):
        scene = world.scene(i)
        video = render_video(scene, 32)
        assert (video.max(axis=(1, 2, 3)) > 0).all(), "the object is in every frame"
        lit = [(f.max(axis=2) > 0).sum() for f in video]
        assert len(set(lit)) == 1, "the whole object stays inside the canvas"
        dx, dy = np.subtract(scene.boxes[-1][:2], scene.boxes[0][:2])
        assert {"right": dx > 0, "left": dx < 0, "down": dy > 0, "up": dy < 0}[scene.direction]
        assert parse_video_caption(scene.caption) == (scene.color, scene.shape, scene.direction)
    ds = build_dataset("shapes-video:frames=4", size=32, seed=0)
    assert ds[0]["pixels"].shape == (3, 4, 32, 32)
    with pytest.raises(ValueError, match="unknown option"):
        build_dataset("shapes-video:fps=3")
    with pytest.raises(ValueError, match="direction"):
        parse_video_caption("a red circle moving sideways")
    with pytest.raises(ValueError, match="unknown direction"):
        video_caption("red", "circle", "north")


def test_frames_world_mixes_video_frames_and_still_scenes():
    ds = build_dataset("shapes-frames:stills=0.5", size=32, seed=0)
    items = [ds[i] for i in range(200)]
    assert all(it["pixels"].shape == (3, 32, 32) for it in items) and torch.equal(ds[7]["pixels"], items[7]["pixels"])
    video = ShapesVideoWorld(size=32, seed=0)
    for i, it in enumerate(items[:40]):
        if "moving" in it["caption"]:  # one of the clip's own frames
            assert any(torch.equal(it["pixels"], f) for f in video[i]["pixels"].unbind(1))
    stills = [it for it in items if "moving" not in it["caption"]]
    assert 70 <= len(stills) <= 130 and any(" and " in it["caption"] for it in stills)  # two-object scenes too
    assert all("moving" in ds_it["caption"] for ds_it in (build_dataset("shapes-frames:stills=0", size=32)[i] for i in range(20)))
    with pytest.raises(ValueError, match="stills"):
        build_dataset("shapes-frames:stills=1.5", size=32)


def test_video_tokenizer_reconstruction_reads_an_image_world_as_one_frame_clips():
    from mmgen.eval.video_judge import video_reconstruction

    tok = mmgen.create_tokenizer("video-fsq-tiny").eval()
    r = video_reconstruction(tok, "shapes:objects=2", n=4, progress=False)
    assert r["frames"] == 1 and r["tokens_per_clip"] == 16 and r["judge_on_reconstructions"]["n"] == 4
    assert "whole_2obj" in r["judge_on_reconstructions"]  # the image judge, on the scenes' own captions


def test_video_judge_is_right_on_real_clips_and_catches_wrong_motion():
    _, batch = clips(40)
    scores = judge_video_batch(batch["pixels"], batch["caption"])
    assert scores["whole"] == 1.0 and scores["n"] == 40
    x, caption = batch["pixels"][0], batch["caption"][0]
    direction = parse_video_caption(caption)[2]
    backwards = judge_video(x.flip(1), caption)  # time reversed: the opposite direction
    assert not backwards.attributes["direction"] and backwards.attributes["color"] and not backwards.whole
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[direction]
    assert backwards.found["direction"] == opposite
    frozen = judge_video(x[:, :1].expand_as(x), caption)  # no motion at all
    assert frozen.found["direction"] is None and not frozen.whole
    color = parse_video_caption(caption)[0]
    other = "blue" if color != "blue" else "red"
    assert not judge_video(x, caption.replace(color, other, 1)).whole
    blank = judge_video(torch.full_like(x, -1.0), caption)
    assert not blank.count and not blank.whole
    assert len(set(video_prompts(50))) > 20 and all(parse_video_caption(p) for p in video_prompts(5))


def test_frame_consistency_is_one_on_real_clips_and_sees_frames_that_morph():
    world, batch = clips(40)
    assert judge_video_batch(batch["pixels"], batch["caption"])["frame_consistency"] == 1.0
    scene = world.scene(0)
    video = render_video(scene, 32)
    other_shape = render_video(replace(scene, shape=next(s for s in SHAPES if s != scene.shape)), 32)
    other_color = render_video(replace(scene, color=next(c for c in COLORS if c != scene.color)), 32)
    morphing = video.copy()
    morphing[[2, 5]] = other_shape[[2, 5]]  # two frames of another shape on the same track
    morphing[6] = other_color[6]  # one of another colour
    res = judge_video(morphing, scene.caption)
    assert res.whole, "the majority vote still calls the clip right"
    assert res.frames_right == pytest.approx(5 / 8), "but three of its eight frames are wrong"
    scores = judge_video_batch(np.stack([video, morphing]), [scene.caption] * 2)
    assert scores["frame_consistency"] == pytest.approx((1 + 5 / 8) / 2) and scores["whole"] == 1.0
    assert scores["frame_consistency_whole"] == pytest.approx((1 + 5 / 8) / 2)
    blank = video.copy()
    blank[0] = 0  # no object: a wrong frame too
    assert judge_video(blank, scene.caption).frames_right == pytest.approx(7 / 8)


def test_frame_consistency_sources_split_world_from_tokenizer():
    torch.manual_seed(0)
    tok = mmgen.create_tokenizer("video-fsq-tiny").eval()  # untrained: its round trip keeps no shape
    out = frame_consistency_sources(tok, n=8, batch_size=4)
    assert out["world"] == 1.0 and out["round_trip"] < 0.5 and out["n"] == 8


def _decoder_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "finetune_video_decoder.py"
    spec = importlib.util.spec_from_file_location("finetune_video_decoder", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_decoder_fine_tune_moves_codes_one_fsq_level_in_one_channel():
    script = _decoder_script()
    tok = mmgen.create_tokenizer("video-fsq-tiny").eval()
    fsq = tok.quantizer.fsq
    ids = torch.randint(0, fsq.codebook_size, (64, 16))
    codes = fsq.ids_to_codes(ids).reshape(64, 4, 4, -1).permute(0, 3, 1, 2)  # (N, d, h, w)
    moved = script.perturb_codes(codes, fsq, 0.5, torch.Generator().manual_seed(0))
    steps = ((moved - codes).permute(0, 2, 3, 1) * fsq._half_width).round()  # per channel, in grid levels
    changed = steps.abs().sum(-1)
    assert set(changed.unique().tolist()) == {0.0, 1.0}, "a moved token changes one channel by one level"
    assert 0.4 < (changed == 1).float().mean() < 0.6
    back = fsq.codes_to_ids(moved.permute(0, 2, 3, 1))
    assert torch.allclose(fsq.ids_to_codes(back), moved.permute(0, 2, 3, 1)), "moved codes stay on the FSQ grid"
    assert torch.equal(script.perturb_codes(codes, fsq, 0.0, torch.Generator()), codes)


def test_a_larger_decoder_keeps_every_id_and_round_trips_through_save_and_load(tmp_path):
    tok = mmgen.create_tokenizer("video-fsq-tiny").eval()
    big = _decoder_script().with_new_decoder(tok, (32, 64, 64, 64), 2, seed=0)
    assert big.config.decoder_channels == (32, 64, 64, 64) and big.config.decoder_layers_per_block == 2
    size = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert size(big.decoder) > 1.5 * size(tok.decoder) and size(big.encoder) == size(tok.encoder)
    clip = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    a, b = tok.encode(clip), big.encode(clip)
    assert torch.equal(a.ids, b.ids), "the encoder, quant_conv and quantizer are copied: the same ids"
    assert big.decode(b).shape == (2, 3, 3, 32, 32)
    big.save_pretrained(tmp_path / "tok")
    again = mmgen.modeling.load_module(tmp_path / "tok")
    assert torch.equal(again.decode(b), big.decode(b))
    deeper = _decoder_script().with_new_decoder(tok, (), 3, seed=0)  # same widths, more blocks: starts as the old decoder
    assert size(deeper.decoder) > size(tok.decoder)
    assert torch.allclose(deeper.decode(a), tok.decode(a), atol=1e-6)
    with pytest.raises(ValueError, match="levels"):
        mmgen.create_tokenizer("video-fsq-tiny", decoder_channels=(32, 64))
    with pytest.raises(ValueError, match="ldm"):
        mmgen.create_tokenizer("vq-tiny", backbone="maskgit", level_attention=False, mid_attention=False, decoder_layers_per_block=2)


@pytest.mark.parametrize("name", ["video-vq-tiny", "video-fsq-tiny", "video-vq3d-tiny"])
def test_video_tokenizers_take_any_clip_length_and_images(name):
    tok = mmgen.create_tokenizer(name).eval()
    _, batch = clips(2)
    x = batch["pixels"][:, :, :5]
    tokens = tok.encode(x)
    assert tokens.layout == FramesLayout(tok.latent_frames(5), 4, 4)
    assert tok.decode(tokens, frames=5).shape == x.shape
    image = tok.encode(x[:, :, 0])
    assert image.layout == FramesLayout(1, 4, 4) and tok.decode(image).shape == (2, 3, 1, 32, 32)
    assert tok.decode(tok.encode(batch["pixels"])).shape == batch["pixels"].shape  # default clip length


def test_causal_tokenizer_first_frame_depends_on_the_first_frame_only():
    torch.manual_seed(0)
    tok = mmgen.create_tokenizer("video-vq3d-tiny").eval()
    with torch.no_grad():
        for p in tok.parameters():  # random weights: causality must hold by construction, not by training
            p.add_(torch.randn_like(p) * 0.05)
    _, batch = clips(2)
    x = batch["pixels"]
    y = x.clone()
    y[:, :, 1:] = torch.rand_like(y[:, :, 1:]) * 2 - 1
    a, b = tok.encode(x).ids, tok.encode(y).ids
    f = tok.layout.frame_tokens
    assert torch.equal(a[:, :f], b[:, :f]) and not torch.equal(a[:, f:], b[:, f:])
    assert torch.equal(a[:, :f], tok.encode(x[:, :, 0]).ids), "frame 0 of a clip encodes like the image alone"
    with torch.no_grad():  # the decoder is causal too: a prefix of latent frames decodes to a prefix of the clip
        full = tok.decode(Tokens(tok.layout, ids=a), frames=9)
        head = tok.decode(Tokens(tok.layout.with_frames(2), ids=a[:, : 2 * f]))
    assert head.shape[2] == 3 and torch.allclose(full[:, :, :3], head, atol=1e-5)


def test_frame_vq_is_the_image_vq_per_frame():
    tok = mmgen.create_tokenizer("video-vq-tiny").eval()
    _, batch = clips(2)
    x = batch["pixels"]
    ids = tok.encode(x).ids.reshape(2, 8, -1)
    assert torch.equal(ids[:, 3], tok.encode(x[:, :, 3]).ids)


@pytest.fixture(scope="module")
def video_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "nbp"
    tok = mmgen.create_tokenizer("video-vq3d-tiny")
    gen = mmgen.create_generator("nbp-tiny", **tokenizer_overrides(tok), **SMALL)
    save_pipeline(path, gen, tok)
    return path


def test_pipeline_returns_clips_and_checks_frames(video_ckpt):
    pipe = mmgen.load(video_ckpt)
    assert pipe.is_video and pipe.max_frames == 8 and pipe.describe()["frames"] == 8
    v = pipe(prompt="a red circle moving right", n=2, seed=1)
    assert v.dtype == torch.uint8 and v.shape == (2, 3, 8, 32, 32)
    assert pipe(prompt="a red circle moving right", frames=3, seed=1).shape == (1, 3, 3, 32, 32)
    for bad in (0, 9, 2.5):
        with pytest.raises(ValueError, match="not supported by this model"):
            pipe(prompt="a red circle moving right", frames=bad)


def test_cli_writes_gif_mp4_and_frame_grid(video_ckpt, tmp_path):
    import imageio.v3 as iio

    base = ["sample", "--ckpt", str(video_ckpt), "--prompt", "a red circle moving right", "--n", "2", "--seed", "0"]
    assert main(base + ["--out", str(tmp_path / "clip.mp4"), "--frames", "8"]) == 0
    mp4 = iio.imread(tmp_path / "clip.mp4", plugin="pyav")
    assert mp4.shape[0] == 8 and mp4.shape[-1] == 3
    assert len(list((tmp_path / "clip").glob("*.mp4"))) == 2
    meta = json.loads((tmp_path / "clip.json").read_text())
    assert meta["frames"] == 8 and meta["sampler"]["seed"] == 0 and meta["num_images"] == 2
    assert main(base + ["--out", str(tmp_path / "clip.gif"), "--frames", "4", "--fps", "8"]) == 0
    assert iio.imread(tmp_path / "clip.gif").shape[0] == 4
    assert main(base + ["--out", str(tmp_path / "grid.png")]) == 0
    w, h = Image.open(tmp_path / "grid.png").size
    assert w > 8 * 32 and h > 2 * 32 and w > h  # one row per sample, one column per frame


def test_cli_bad_video_input_is_a_clear_error(video_ckpt, tmp_path, capsys):
    base = ["sample", "--ckpt", str(video_ckpt), "--prompt", "a red circle moving right", "--n", "1"]
    assert main(base + ["--out", str(tmp_path / "x.avi")]) == 2
    assert "unknown output extension '.avi'" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "x.mp4"), "--frames", "16"]) == 2
    assert "frames=16 is not supported" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(video_ckpt), "--prompt", "a red circle moving right and left " * 3, "--out", str(tmp_path / "x.gif")]) == 2
    assert "text context holds" in capsys.readouterr().err


def test_image_model_rejects_frames_and_video_extensions(tmp_path, capsys):
    tok = mmgen.create_tokenizer("vq-tiny")
    gen = mmgen.create_generator("raster-tiny", **tokenizer_overrides(tok), **SMALL)
    save_pipeline(tmp_path / "img", gen, tok)
    base = ["sample", "--ckpt", str(tmp_path / "img"), "--prompt", "a small red circle at the top", "--n", "1"]
    assert main(base + ["--out", str(tmp_path / "x.mp4")]) == 2
    assert "allowed: .png, .jpg, .jpeg" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "x.png"), "--frames", "8"]) == 2
    assert "generates images" in capsys.readouterr().err
    pipe = Pipeline(gen, tok)
    with pytest.raises(ValueError, match="does not caption"):
        pipe.caption(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
