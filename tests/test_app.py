"""The web demo's handlers without a browser: validation, streaming order, settings, models, video path."""
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mmgen
from mmgen import SHIPPED
from mmgen.app import handlers as H
from mmgen.app.models import InputError, ModelRegistry, scan
from mmgen.app.streaming import GREY, stream_pipeline
from mmgen.sampler import SamplerConfig

PROMPT = "a large red circle at the top left"
pytestmark = pytest.mark.skipif(not (SHIPPED / "shapes-var" / "config.json").is_file(), reason="needs the shipped checkpoints")


def req(**kw):
    base = dict(model="shapes-var", prompt=PROMPT, n=2, cfg_scale=1.5, temperature=0.6, seed=3)
    return H.Request(**{**base, **kw})


# --- models -----------------------------------------------------------------------------------

def test_scan_lists_shipped_first_with_paradigm_tokenizer_size(registry):
    names = [m.name for m in registry.list()]
    assert set(names) >= {"shapes-var", "shapes-raster", "digits-var", "digits-raster"}
    assert names.index("shapes-var") < names.index("digits-var")  # text models first among the shipped
    var = registry.info("shapes-var")
    assert var.ok and var.shipped and var.paradigm == "VAR next-scale" and var.tokenizer == "MultiScaleVQTokenizer"
    assert var.params == registry.get("shapes-var").generator.num_params()
    assert "VAR next-scale" in var.label() and "3.0M" in var.label() and "| paradigm |" in var.markdown()
    assert registry.default().name == "shapes-var"
    videos = {p.name for p in SHIPPED.iterdir() if (p / "config.json").is_file() and mmgen.load(p).is_video}
    assert {m.name for m in registry.list(video=True)} == videos and all(m.frames >= 1 for m in registry.list(video=True))


def test_missing_and_corrupt_checkpoints_are_messages_not_crashes(tmp_path):
    shutil.copytree(SHIPPED / "shapes-var", tmp_path / "good")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    shutil.copytree(SHIPPED / "shapes-var", tmp_path / "notok", ignore=shutil.ignore_patterns("tokenizer"))
    shutil.copytree(SHIPPED / "shapes-var", tmp_path / "truncated")
    w = tmp_path / "truncated" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])  # header intact, tensors cut off
    reg = ModelRegistry(tmp_path)
    assert not reg.info("junk").ok and "corrupt" in reg.info("junk").problem and "unusable" in reg.info("junk").label()
    assert "missing tokenizer" in reg.info("notok").problem
    for name, text in [("junk", "cannot be used"), ("notok", "cannot be used"), ("truncated", "could not be loaded"), ("../etc", "unknown model")]:
        with pytest.raises(InputError, match=text):
            reg.get(name)
    shutil.rmtree(tmp_path / "good")  # deleted after the page listed it
    with pytest.raises(InputError, match="no longer exists"):
        reg.get("good")
    assert scan(tmp_path / "nowhere") == []


def test_model_loads_once_and_is_shared(registry):
    got = []
    threads = [threading.Thread(target=lambda: got.append(registry.get("shapes-raster"))) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(got) == 4 and all(p is got[0] for p in got)


# --- validation -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def free_text(registry):
    """shapes-var as a model without the shapes grammar (a free-text model): only its tokenizer checks the prompt."""
    from dataclasses import replace

    info = replace(registry.info("shapes-var"), name="free-text", grammar=False)
    registry.put(info, registry.get("shapes-var"))
    return "free-text"


INTERNAL = ("cfg_scale", "top_k", "top_p", "[None", "prompt: prompt", "Error:")


@pytest.mark.parametrize("kw, message", [
    (dict(prompt="   "), "prompt is empty"),
    (dict(prompt="a purple elephant"), "'purple' does not fit after 'a'; the size can be: small, large"),
    (dict(prompt="a large purple circle at the top left"), "the colour can be: red, green, blue, yellow, magenta, cyan, white"),
    (dict(prompt="a large red circle at the top"), None),  # valid: 'top' alone is a position
    (dict(prompt="a large red circle"), "stops early: after 'a large red circle' comes the 'at'"),
    (dict(prompt="a red circle moving right"), "'red' does not fit"),  # a video prompt on an image model
    (dict(prompt="x" * 600), "at most 500"),
    (dict(negative_prompt="a purple elephant"), "the negative prompt: 'purple'"),
    (dict(top_p=0), r"top-p must be above 0 and at most 1"),
    (dict(top_p=1.5), r"top-p must be above 0 and at most 1"),
    (dict(cfg_scale=-1), "the CFG scale must be between 0 and 50, got -1"),
    (dict(cfg_scale=1e9), "the CFG scale must be between 0 and 50, got 1000000000"),
    (dict(temperature=0), "temperature must be > 0"),
    (dict(temperature=100), "the temperature must be between 0 and 10, got 100"),
    (dict(top_k=-3), "the top-k must be between 0 and 1000000"),
    (dict(n=0), "the number of samples must be between 1 and 64"),
    (dict(n=100000), "the number of samples must be between 1 and 64"),
    (dict(n=2.5), "whole number"),
    (dict(n=None), "the number of samples is required"),
    (dict(seed=-1), "the seed must be between 0 and 4294967295"),
    (dict(seed=1.5), r"the seed must be a whole number, got 1\.5"),  # never rounded to 2
    (dict(temperature=float("nan")), "finite"),
    (dict(cfg_scale="abc"), "must be a number"),
    (dict(cfg_schedule="cosine"), "the CFG schedule must be one of constant, "),
    (dict(model="nope"), "unknown model 'nope'; available: digits-raster, "),
    (dict(model=None), "choose a model"),
])
def test_bad_input_gets_a_clear_message(registry, kw, message):
    if message is None:
        sampler, kwargs = H.validate(req(**kw), registry.info("shapes-var"), registry.get("shapes-var"))
        assert kwargs["prompt"] == kw["prompt"]
        return
    with pytest.raises(InputError, match=message) as err:
        list(H.generate(registry, req(**kw)))
    assert not any(word in str(err.value) for word in INTERNAL), str(err.value)


def test_a_free_text_model_reports_its_tokenizer_limits(registry, free_text):
    with pytest.raises(InputError, match="outside this model's text vocabulary"):
        list(H.generate(registry, req(model=free_text, prompt="a purple elephant")))
    with pytest.raises(InputError, match="text context"):
        list(H.generate(registry, req(model=free_text, prompt=" ".join(["a large red circle at the top left and"] * 4))))


def test_an_image_prompt_on_the_video_tab_names_the_motion_words(registry):
    with pytest.raises(InputError, match="this is an image prompt; .*DIRECTION one of left, right, up, down"):
        list(H.generate(registry, req(model="shapes-video-nbp"), video=True))
    with pytest.raises(InputError, match="the direction can be: left, right, up, down"):
        list(H.generate(registry, req(model="shapes-video-nbp", prompt="a red circle moving sideways"), video=True))


def test_class_conditional_models_take_a_label_not_a_prompt(registry):
    info = registry.info("digits-var")
    sampler, kw = H.validate(req(model="digits-var", prompt="", label=7), info)
    assert kw == {"n": 2, "label": 7} and sampler.seed == 3
    with pytest.raises(InputError, match="the class label must be between 0 and 9, got 10"):
        H.validate(req(model="digits-var", label=10), info)
    with pytest.raises(InputError, match="does not make videos"):
        list(H.generate(registry, req(model="digits-var", label=1), video=True))


# --- streaming and results --------------------------------------------------------------------

def test_var_streams_every_scale_in_order_then_the_exact_settings(registry):
    ups = list(H.generate(registry, req(n=3), min_interval=0))
    partial, final = ups[:-1], ups[-1]
    assert [u.step for u in partial] == [1, 2, 3, 4, 5, 6] and all(u.total == 6 for u in partial)
    assert all(u.images.shape == (3, 32, 32, 3) and u.images.dtype == np.uint8 for u in partial)
    assert final.final and final.images.shape == (3, 32, 32, 3) and np.array_equal(final.images, partial[-1].images)
    assert partial[0].images.std() < final.images.std()  # coarse first, then it sharpens
    s = json.loads(json.dumps(final.settings))  # JSON-serializable as is
    assert s["model"] == "shapes-var" and s["prompt"] == PROMPT and s["n"] == 3 and s["num_images"] == 3
    assert s["sampler"] == {**s["sampler"], "cfg_scale": 1.5, "temperature": 0.6, "seed": 3, "top_p": 1.0, "cfg_schedule": "constant"}
    assert "--seed 3" in s["command"] and "--cfg 1.5" in s["command"]
    # the recorded settings reproduce the images exactly
    again = registry.get("shapes-var")(prompt=PROMPT, n=3, sampler=SamplerConfig(**s["sampler"]))
    assert np.array_equal(again.movedim(1, -1).numpy(), final.images)


def test_raster_reports_progress_per_token_and_rows_as_they_fill(registry):
    ups = list(H.generate(registry, req(model="shapes-raster", n=1), min_interval=0))
    steps = [u.step for u in ups[:-1]]
    assert steps == list(range(1, 65))  # token by token, in order
    with_image = [u for u in ups[:-1] if u.images is not None]
    assert [u.step for u in with_image] == [8, 16, 24, 32, 40, 48, 56, 64]  # one per completed row
    half = with_image[3].images[0]
    assert (half[16:] == GREY).all() and not (half[:16] == GREY).all()  # 4 of 8 token rows sampled
    assert ups[-1].status.startswith("done")


def test_progress_only_updates_are_thinned(registry):
    ups = list(H.generate(registry, req(model="shapes-raster", n=1), min_interval=60))
    assert [u.step for u in ups[:-1]] == [1, 8, 16, 24, 32, 40, 48, 56, 64]


def test_closing_the_stream_stops_the_worker():
    calls = []

    class Slow:
        def __call__(self, callback=None, **kw):
            for i in range(1, 1000):
                calls.append(i)
                time.sleep(0.005)
                callback(i, 999, None)
            return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)

        def decode_partial(self, tokens, step):
            return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)

    gen = stream_pipeline(Slow(), min_interval=0)
    next(gen)
    gen.close()
    time.sleep(0.2)
    n = len(calls)
    time.sleep(0.2)
    assert len(calls) == n < 999


def test_grid_and_display_scale():
    imgs = torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8)
    g = H.grid(imgs, scale=4)
    assert g.shape == (2 * 130 + 2, 3 * 130 + 2, 3) and H.display_scale(32) == 4 and H.display_scale(256) == 1
    assert np.array_equal(g[2:130:4, 2:130:4].transpose(2, 0, 1), imgs[0].numpy())


# --- video path: the shipped video checkpoint, as the page runs it ------------------------------

VIDEO = "shapes-video-nbp"


def test_video_streams_frames_and_writes_a_gif(registry, tmp_path):
    import imageio.v3 as iio

    info = registry.info(VIDEO)
    rec = H.page_defaults(info)
    r = req(model=VIDEO, prompt="a red circle moving right", frames=5, cfg_scale=rec["cfg_scale"], temperature=rec["temperature"])
    ups = list(H.generate(registry, r, video=True, min_interval=0))
    steps = [u.step for u in ups[:-1]]
    assert steps == sorted(steps) and steps[-1] == ups[0].total and len(steps) > 5  # in order, to the last step
    final = ups[-1]
    assert final.images.shape == (2, 5, 32, 32, 3) and final.images.dtype == np.uint8
    assert (final.images[:, 0] != final.images[:, -1]).any()  # it moves
    s = final.settings
    assert s["task"] == "text-to-video" and s["frames"] == 5 and "--frames 5" in s["command"] and "--out samples.mp4" in s["command"]
    again = registry.get(VIDEO)(prompt="a red circle moving right", n=2, frames=5, sampler=SamplerConfig(**s["sampler"]))
    assert np.array_equal(again.permute(0, 2, 3, 4, 1).numpy(), final.images)  # the recorded settings reproduce it
    gif = H.write_gif(torch.from_numpy(final.images).permute(0, 4, 1, 2, 3), tmp_path, scale=2)
    frames = iio.imread(gif, index=None)
    assert frames.shape[:3] == (5, 68, 134)  # 5 frames of a 1x2 grid of 64-px (2x) samples, 2-px borders
    with pytest.raises(InputError, match="the frames must be between 1 and 64"):
        list(H.generate(registry, req(model=VIDEO, frames=1000), video=True))
    with pytest.raises(InputError, match="does not make images"):
        list(H.generate(registry, req(model=VIDEO)))


def test_video_tab_runs_the_real_model_end_to_end(demo):
    import imageio.v3 as iio

    tab = demo.mmgen_tabs["video"]
    outs = list(tab.run(VIDEO, "a blue square moving up", "", 0, 0, 1, 2.0, "constant", 1.0, 0, 1.0, 25, 0, 3, []))
    status, live, mp4, strip, gif, settings, file, history, state = outs[-1]
    assert status.startswith("<b>done") and Path(gif).suffix == ".gif" and settings["frames"] == 3
    clip = iio.imread(mp4, index=None, plugin="pyav")  # H.264: even sides, all frames
    assert clip.shape == (3, 128, 128, 3) and iio.improps(mp4, plugin="pyav").shape[0] == 3
    assert len(strip) == 3 and Image.open(strip[0]).size == (64, 64)  # the frame strip: every frame of the first sample
    assert history == state and len(history) == 1 and "a blue square moving up" in history[0][1]
    assert json.loads(Path(file).read_text())["command"] == settings["command"]


@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED.iterdir() if (p / "config.json").is_file()))
def test_reproduce_command_is_complete_for_every_model(registry, name):
    """The page's command, parsed by the CLI, gives back exactly the sampler, count, frames and condition it recorded."""
    import shlex
    from dataclasses import asdict

    from mmgen.cli import build_parser
    from mmgen.sample.cli import sampler_from_args

    info = registry.info(name)
    rec = H.page_defaults(info)
    r = req(model=name, label=3, seed=11, cfg_scale=2.5, temperature=0.9, top_k=4, top_p=0.95, cfg_schedule="linear",
            flow_steps=7, token_budget=5 if info.flextok else 0, frames=3 if info.video else None)
    sampler, kwargs = H.validate(r, info)
    s = H.settings_record(info, sampler, kwargs, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), 1.0)
    argv = shlex.split(s["command"])
    assert argv[:2] == ["mmgen", "sample"]
    args = build_parser().parse_args(argv[1:])
    assert asdict(sampler_from_args(args, info.recommended)) == s["sampler"] == asdict(sampler)
    assert sampler.flow_steps == (7 if info.flow else rec["flow_steps"])
    assert args.n == 2 and args.frames == kwargs.get("frames") and args.seed == 11
    assert (args.prompt == [PROMPT]) if info.cond == "text" else (args.label == [3])


# --- the gradio app ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo():
    from mmgen.app import build_app

    return build_app(SHIPPED, concurrency=2, preload=False)


def test_app_mounts_in_fastapi_and_serves_the_page(demo):
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from mmgen.app import page_style

    app = gr.mount_gradio_app(FastAPI(), demo, path="/demo", **page_style())
    with TestClient(app) as client:
        page = client.get("/demo/")
        assert page.status_code == 200 and "mmgen demo" in page.text
        assert client.get("/demo/gradio_api/file=" + str(SHIPPED / "shapes-var" / "config.json")).status_code in (403, 404)


def test_page_handler_streams_and_turns_bad_input_into_an_error(demo):
    import gradio as gr

    tab = demo.mmgen_tabs["image"]
    args = ["shapes-var", PROMPT, "", 0, 0, 2, 1.5, "constant", 0.6, 0, 1.0, 25, 0, 8, [("older.png", "an older result")]]
    outs = list(tab.run(*args))
    status, live, gallery, settings, file, history, state = outs[-1]
    assert status.startswith("<b>done") and len(gallery) == 2
    assert Image.open(live).size == (2 * 130 + 2, 130 + 2) and Image.open(gallery[0]).size == (32, 32)
    assert json.loads(Path(file).read_text()) == settings
    assert history == state and [c for _, c in history] == [f"shapes-var · {PROMPT}", "an older result"]  # newest first, the old one kept
    bad = list(args)
    bad[10] = 1.5  # top-p
    outs = list(tab.run(*bad))
    assert "loading" in outs[0][0] and len(outs) == 2  # the status line: first "loading", then the message
    assert "mmgen-error" in outs[-1][0] and "top-p must be above 0 and at most 1" in outs[-1][0]
    assert all(o is gr.skip() or isinstance(o, type(gr.skip())) for o in outs[-1][1:])  # the other panels keep their content


def test_video_tab_says_when_there_is_no_video_model(tmp_path):
    from mmgen.app import build_app

    shutil.copytree(SHIPPED / "shapes-var", tmp_path / "shapes-var")  # image models only
    tab = build_app(tmp_path, concurrency=1, preload=False).mmgen_tabs["video"]
    assert tab.none.visible and "No video model was found in the models folder" in tab.none.value and not tab.go.interactive


def test_cli_demo_defaults_bind_localhost():
    from mmgen.cli import build_parser

    a = build_parser().parse_args(["demo"])
    assert (a.host, a.port, a.share, a.concurrency) == ("127.0.0.1", 7860, "false", 2) and Path(a.models_dir) == SHIPPED.resolve()


def test_demo_temp_folder_is_removed_with_the_app(tmp_path):
    from mmgen.app import build_app

    shutil.copytree(SHIPPED / "shapes-var", tmp_path / "m" / "shapes-var")
    app = build_app(tmp_path / "m", preload=False)
    out = app.mmgen_outdir
    assert out.is_dir() and out.name.startswith("mmgen-demo-")
    app.mmgen_cleanup()
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        build_app(tmp_path / "missing")


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_mmgen_demo_removes_its_temp_folder_at_exit(tmp_path, sig):
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "tmp").mkdir()
    shutil.copytree(SHIPPED / "shapes-var", tmp_path / "m" / "shapes-var")
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    # Ctrl-C as in a terminal: a test run started in the background ('pytest &' in a script) has SIGINT ignored, the child
    # would inherit that and Python would install no KeyboardInterrupt handler, so restore the default disposition first
    proc = subprocess.Popen([sys.executable, "-m", "mmgen.cli", "demo", "--port", str(port), "--models-dir", str(tmp_path / "m")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in proc.stdout:
            if "mmgen demo ready" in line:
                break
        assert list((tmp_path / "tmp").glob("mmgen-demo-*")), "the demo made its folder"
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list((tmp_path / "tmp").glob("mmgen-demo-*"))


def test_a_long_prompt_is_not_repeated_in_the_message(registry, free_text):
    long = "a red circle " * 35  # under the page's 500-character cap, far over the model's text context
    with pytest.raises(InputError) as err:
        list(H.generate(registry, req(model=free_text, prompt=long)))
    msg = str(err.value)
    assert "text context holds" in msg and f"({len(long.strip())} characters)" in msg and len(msg) < 300 and not msg.startswith("prompt: prompt")
