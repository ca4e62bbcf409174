"""The arena and the page's words without a browser: grammar chips and errors, honest labels, tiles, leaderboard, no paths."""
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmgen import SHIPPED
from mmgen.app import arena as A
from mmgen.app import grammar, view
from mmgen.app import handlers as H
from mmgen.app.models import InputError, ModelInfo, ModelRegistry, without_paths

PROMPT = "a large red circle at the top left"
pytestmark = pytest.mark.skipif(not (SHIPPED / "shapes-var" / "config.json").is_file(), reason="needs the shipped checkpoints")


# --- the grammar in view -----------------------------------------------------------------------

def test_chip_words_are_the_worlds_words():
    from mmgen.data import shapes
    from mmgen.data.video import DIRECTIONS

    words = grammar.image_words()
    assert words["size"] == list(shapes.SIZES) and words["colour"] == list(shapes.COLORS) and words["shape"] == list(shapes.SHAPES)
    assert words["position"] == list(shapes.POSITIONS)  # spelled out, in the 3x3 grid's order
    assert grammar.video_words() == {"colour": list(shapes.COLORS), "shape": list(shapes.SHAPES), "direction": list(DIRECTIONS)}
    for text in grammar.example_prompts() + [f"a small {c} {s} at the {p}" for c in words["colour"] for s in words["shape"] for p in words["position"]]:
        grammar.check_prompt(text, video=False)  # every chip combination and example is a valid prompt
    for text in grammar.video_example_prompts():
        grammar.check_prompt(text, video=True)


@pytest.mark.parametrize("text, video, message", [
    ("a large purple circle at the top left", False, "'purple' does not fit after 'a large'; the colour can be: red, green, blue, yellow, magenta, cyan, white"),
    ("a large red circle at the middle", False, "the position can be: top, bottom, left, center, right"),
    ("a large red circle at the top left and", False, "stops early: after '.*' comes the 'a': a"),
    ("a large red circle at the center and a small blue square at the top and a", False, "'and' does not fit after '.* at the top'; the side \\(or the end\\) can be: left, right\\. Prompts read"),
    ("a large red circle at the center and a small blue square at the top left and", False, "'and' comes after a complete prompt"),
    ("a large red circle at the top left", True, "this is an image prompt; .*left, right, up, down"),
    ("a red circle moving sideways", True, "the direction can be: left, right, up, down"),
    ("a red circle", True, "stops early: after 'a red circle' comes the 'moving'"),
])
def test_prompt_errors_name_the_allowed_words(text, video, message):
    with pytest.raises(InputError, match=message):
        grammar.check_prompt(text, video=video)


def test_the_arenas_video_prompt():
    assert grammar.video_prompt_for("a small blue square at the top and a large red circle at the left", "down") == "a blue square moving down"
    assert grammar.video_prompt_for("a red circle  moving up", "down") == "a red circle moving up"  # a video prompt is taken as it is
    with pytest.raises(InputError, match="needs a colour"):
        grammar.video_prompt_for("a large thing", "up")


def test_example_thumbnails_draw_what_the_prompt_asks_for():
    img = grammar.thumbnail("a large red circle at the top left", size=48)
    red = (img[..., 0] > 200) & (img[..., 1] < 50)
    ys, xs = np.nonzero(red)
    assert img.shape == (48, 48, 3) and red.sum() > 20 and ys.mean() < 16 and xs.mean() < 16  # red, in the top-left cell
    clip = grammar.thumbnail("a blue square moving up", size=48)
    assert ((clip[..., 2] > 200) & (clip[..., 0] < 50)).sum() > 20


def test_class_names_offline():
    def info(n):
        return ModelInfo(name="m", path=Path("m"), cond="class", num_classes=n)

    assert grammar.class_names(info(10))[7] == "digit 7"
    names = grammar.class_names(info(1000))  # a converted ImageNet model: torchvision's names, no download
    assert len(names) == 1000 == len(set(names)) and names[207] == "golden retriever"
    assert grammar.class_names(info(21))[:2] == ["red circle", "red square"]  # the shapes world's colour x shape labels
    assert grammar.class_names(info(5)) == ["0", "1", "2", "3", "4"]
    from mmgen.app.tab import GenerateTab

    assert GenerateTab._labels(info(1000))[207] == ("207: golden retriever", 207)  # what the class picker offers


# --- honest labels -----------------------------------------------------------------------------

def test_paradigm_names_match_the_readme(registry):
    names = {m.name: m.paradigm for m in registry.list()}
    assert names["shapes-video-raster"] == "token by token" and names["shapes-video-nbp"] == "NBP next-block"
    assert names["shapes-unified"] == "Emu3-style unified" and names["shapes-var"] == "VAR next-scale"
    assert names["shapes-raster"] == "raster next-token" and names["shapes-xar"].startswith("xAR") and names["shapes-rar"].startswith("RAR")
    flextok = registry.info("shapes-flextok")
    assert flextok.experimental and "experimental" in flextok.label() and not registry.info("shapes-var").experimental
    assert [m.name for m in registry.list()][-1] == "shapes-flextok"  # listed last, not first
    assert A.default_models(registry)[-1] == "shapes-flextok" and len(A.default_models(registry)) == len(registry.list())


def test_messages_never_show_a_path(tmp_path):
    assert without_paths(f"cannot read {tmp_path}/m/model.safetensors: bad") == "cannot read model.safetensors: bad"
    assert without_paths("top left and/or 1/2") == "top left and/or 1/2"
    shutil.copytree(SHIPPED / "shapes-var", tmp_path / "broken")
    w = tmp_path / "broken" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    reg = ModelRegistry(tmp_path)
    for name in ("broken", "junk", "nope", None):
        with pytest.raises(InputError) as err:
            reg.get(name)
        assert str(tmp_path) not in str(err.value) and not re.search(r"(^|\s|')/\w", str(err.value)), str(err.value)
    s = H.settings_record(reg.info("broken"), H.SamplerConfig(), {"n": 1, "prompt": PROMPT}, np.zeros((1, 3, 32, 32), np.uint8), 0.1)
    assert not Path(s["checkpoint"]).is_absolute() and str(tmp_path) not in s["command"]


def test_user_message_uses_the_labels_of_the_page():
    msg = H.user_message(ValueError("cfg_scale must be >= 0, got -1; top_k must be >= 0; token_budget"))
    assert msg == "CFG scale must be >= 0, got -1; top-k must be >= 0; token budget"


# --- the arena ---------------------------------------------------------------------------------

def test_arena_runs_image_video_and_class_models_on_one_prompt_and_seed(registry):
    names = ["shapes-var", "shapes-video-nbp", "digits-var"]
    statuses = []
    for last in A.run_arena(registry, names, PROMPT, motion="up", label=7, seed=5, min_interval=0):
        statuses.append([t.status for t in last.tiles])
    assert statuses[0] == ["waiting"] * 3 and ["done", "running", "waiting"] in statuses and last.done
    var, nbp, digits = last.tiles
    assert var.condition == PROMPT and nbp.condition == "a red circle moving up" and digits.condition == "class 7: digit 7"
    assert var.preview.shape == (32, 32, 3) and nbp.frames.shape == (8, 32, 32, 3) and digits.frames is None
    assert var.passes == "6 forward passes" and nbp.passes == "23 forward passes"
    assert var.verdict[0][0] == "large red circle" and set(var.verdict[0][1]) == {"color", "shape", "size", "position"}
    assert set(nbp.verdict[0][1]) == {"color", "shape", "direction", "one object"} and digits.whole is None and digits.verdict == []
    assert var.whole == all(var.verdict[0][1].values())
    # the same seed and settings as the image tab: the tile is that model's first sample
    again = registry.get("shapes-var")(prompt=PROMPT, n=1, sampler=replace(registry.info("shapes-var").recommended, seed=5))
    assert np.array_equal(again[0].movedim(0, -1).numpy(), var.preview)
    board = A.record(A.record(None, last), last)
    rows = A.leaderboard(board)
    assert [r["runs"] for r in rows] == [2, 2, 2] and rows[-1]["model"] == "digits-var" and rows[-1]["accuracy"] is None
    assert {r["model"]: r["judged"] for r in rows}["shapes-var"] == 2


def test_arena_streams_the_running_tile(registry):
    runs = []
    for r in A.run_arena(registry, ["shapes-raster"], PROMPT, seed=1, min_interval=0):
        runs.append((r.tiles[0].status, r.tiles[0].step, r.tiles[0].preview is not None))
    running = [r for r in runs if r[0] == "running"]
    assert len(running) >= 8 and [s for s, _, _ in runs][-1] == "done"
    steps = [step for _, step, _ in running]
    assert steps == sorted(steps) and any(has for _, _, has in running)  # progress in order, with live previews


@pytest.mark.parametrize("kw, message", [
    (dict(names=[]), "choose at least one model"),
    (dict(prompt=""), "the prompt is empty"),
    (dict(seed=1.5), r"the seed must be a whole number, got 1\.5"),
    (dict(prompt="a large purple circle at the top left"), "the colour can be"),
    (dict(motion="sideways"), "the motion must be one of left, right, up, down"),
    (dict(label=10), "the class label must be between 0 and 9"),
    (dict(names=["nope"]), "unknown model"),
])
def test_arena_input_errors_are_one_message(registry, kw, message):
    args = dict(names=["shapes-var", "shapes-video-nbp", "digits-var"], prompt=PROMPT, motion="right", label=3, seed=0) | kw
    with pytest.raises(InputError, match=message):
        next(A.run_arena(registry, **args))


def test_a_broken_model_is_one_error_tile_not_a_failed_arena(tmp_path):
    shutil.copytree(SHIPPED / "shapes-var", tmp_path / "good")
    shutil.copytree(SHIPPED / "shapes-var", tmp_path / "broken")
    w = tmp_path / "broken" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    reg = ModelRegistry(tmp_path)
    last = list(A.run_arena(reg, ["broken", "good"], PROMPT, min_interval=0))[-1]
    broken, good = last.tiles
    assert broken.status == "error" and "could not be loaded" in broken.error and str(tmp_path) not in broken.error
    assert good.status == "done" and "1 of 2 models" in last.status


def test_tiles_and_leaderboard_render_without_paths(registry):
    last = list(A.run_arena(registry, ["shapes-var", "shapes-video-nbp"], PROMPT, min_interval=0))[-1]
    page = view.arena_html(last)
    assert page.count("data-model=") == 2 and "data:video/mp4;base64," in page and "data:image/png;base64," in page
    assert "VAR next-scale" in page and "6 forward passes" in page and re.search("position <span class='mmgen-(ok|no)'>", page)
    board = view.leaderboard_html(A.leaderboard(A.record(None, last)))
    assert board.count("<tr>") == 3 and "%" in board
    assert "/tmp/" not in page and "/work/" not in page
