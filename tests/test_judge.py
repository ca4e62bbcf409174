"""Evaluation: the shapes-world judge and the digits classifier."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from mmgen.data import COLORS, POSITIONS, SHAPES, SIZES, DigitsWorld, ShapeObject, ShapesWorld, caption
from mmgen.eval import DigitsClassifier, detect, judge, judge_batch

torch.set_num_threads(1)


def _renders(size: int, n: int, seed: int):
    world = ShapesWorld(size=size, seed=seed, split="test")  # fresh scenes, not the training stream
    scenes = [world.scene(i) for i in range(n)]
    return [s[1] for s in scenes], [caption(s[0]) for s in scenes], [s[0] for s in scenes]


@pytest.mark.parametrize("size", [32, 64])
def test_judge_accuracy_on_1000_fresh_renders(size):
    images, captions, scenes = _renders(size, 1000, seed=2024)
    assert {len(s) for s in scenes} == {1, 2}
    scores = judge_batch(images, captions)
    assert scores["n"] == 1000 and scores["whole"] >= 0.99, scores
    assert scores["whole_1obj"] >= 0.99 and scores["whole_2obj"] >= 0.99
    assert all(scores[a] >= 0.99 for a in ("color", "shape", "size", "position", "count"))


def test_judge_accepts_float_tensors_and_degraded_images():
    world = ShapesWorld(size=32, seed=11)
    item = world[3]
    assert judge(item["pixels"], item["caption"]).whole
    rng = np.random.default_rng(0)
    images, captions, _ = _renders(32, 300, seed=7)
    degraded = [
        (ndimage.gaussian_filter(im.astype(float), sigma=(0.7, 0.7, 0)) + rng.normal(0, 25, im.shape)).clip(0, 255).astype(np.uint8)
        for im in images
    ]
    assert judge_batch(degraded, captions)["whole"] >= 0.97
    dim = [(im * 0.6).astype(np.uint8) for im in images[:100]]  # washed-out colours keep their hue
    assert judge_batch(dim, captions[:100])["whole"] >= 0.99
    batch = torch.stack([world[i]["pixels"] for i in range(8)])
    assert judge_batch(batch, [world[i]["caption"] for i in range(8)])["whole"] == 1.0


def _alternatives(obj: ShapeObject, attr: str, taken: set[str]) -> list[ShapeObject]:
    values = {"color": list(COLORS), "shape": SHAPES, "size": SIZES, "position": POSITIONS}[attr]
    return [dataclasses.replace(obj, **{attr: v}) for v in values if v != getattr(obj, attr) and not (attr == "position" and v in taken)]


@pytest.mark.parametrize("attr", ["color", "shape", "size", "position"])
def test_judge_rejects_a_caption_wrong_in_one_attribute(attr):
    rng = np.random.default_rng(3)
    images, _, scenes = _renders(32, 60, seed=99)
    for image, objects in zip(images, scenes):
        k = int(rng.integers(len(objects)))
        options = _alternatives(objects[k], attr, {o.position for o in objects})
        wrong = list(objects)
        wrong[k] = options[int(rng.integers(len(options)))]
        result = judge(image, caption(wrong))
        assert not result.whole and result.count
        assert not result.objects[k][attr]
        assert all(v for a, v in result.objects[k].items() if a != attr)  # only that attribute is blamed
        assert all(all(o.values()) for j, o in enumerate(result.objects) if j != k)
        assert judge(image, caption(objects)).whole


def test_judge_counts_objects():
    images, _, scenes = _renders(32, 40, seed=5)
    one = next(i for i, s in enumerate(scenes) if len(s) == 1)
    two = next(i for i, s in enumerate(scenes) if len(s) == 2)
    extra = scenes[one] + [ShapeObject("white", "square", "small", next(p for p in POSITIONS if p != scenes[one][0].position))]
    r = judge(images[one], caption(extra))
    assert not r.count and not r.whole and all(r.objects[0].values()) and not any(r.objects[1].values())
    r = judge(images[two], caption(scenes[two][:1]))
    assert not r.count and not r.whole and all(r.objects[0].values())
    blank = np.zeros((32, 32, 3), np.uint8)
    assert detect(blank) == [] and not judge(blank, caption(scenes[one])).whole
    speck = blank.copy()
    speck[5, 5] = 255  # a one-pixel speck is noise, not an object
    assert detect(speck) == []


def test_judge_input_errors():
    with pytest.raises(ValueError, match="got 2 images but 1 captions"):
        judge_batch([np.zeros((32, 32, 3), np.uint8)] * 2, ["a small red circle at the top"])
    with pytest.raises(ValueError, match="expected one image"):
        judge(np.zeros((32, 32), np.uint8), "a small red circle at the top")
    with pytest.raises(ValueError, match="'purple'"):
        judge(np.zeros((32, 32, 3), np.uint8), "a small purple circle at the top")


# ---------------------------------------------------------------- digits classifier
@pytest.fixture(scope="module")
def digits_clf():
    return DigitsClassifier.fit(seed=0)


def test_digits_classifier_on_held_out_real_digits(digits_clf):
    for size in (32, 16):
        test = DigitsWorld(size=size, split="test", seed=0)
        pixels = torch.stack([test[i]["pixels"] for i in range(len(test))])
        labels = torch.as_tensor(test.labels)
        acc = digits_clf.accuracy(pixels, labels)
        assert acc >= 0.97, (size, acc)
        assert digits_clf.accuracy(pixels, (labels + 1) % 10) < 0.05  # wrong requests are caught
    assert digits_clf.predict(pixels[:4]).shape == (4,)


def test_digits_classifier_errors(digits_clf):
    with pytest.raises(ValueError, match="at least 8x8"):
        digits_clf.predict(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        digits_clf.accuracy(torch.zeros(2, 3, 32, 32), [1, 2, 3])
    with pytest.raises(ValueError, match="split"):
        DigitsClassifier.fit(split="test")


def test_wilson_interval_bounds():
    from mmgen.eval.generation import wilson_interval

    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.404, abs=2e-3) and hi == pytest.approx(0.596, abs=2e-3)
    assert wilson_interval(0, 30)[0] == pytest.approx(0.0, abs=1e-12) and 0 < wilson_interval(0, 30)[1] < 0.15
    assert wilson_interval(30, 30)[1] == pytest.approx(1.0) and wilson_interval(30, 30)[0] > 0.85
    with pytest.raises(ValueError, match="positive"):
        wilson_interval(0, 0)


def test_judge_streams_pools_independent_prompt_streams(shipped):
    from mmgen.eval.generation import judge_pipeline, judge_streams, shapes_prompts

    pipe, _ = shipped("shapes-var")
    assert shapes_prompts(6, 2, seed=1) != shapes_prompts(6, 2, seed=2)
    r = judge_streams(pipe, n=6, objects=2, seeds=(1, 2), progress=False)
    single = [judge_pipeline(pipe, n=6, objects=2, seed=s, progress=False)["whole"] for s in (1, 2)]
    assert r["n"] == 12 and r["whole_per_stream"] == single
    assert r["whole"] == pytest.approx(np.mean(single))
    lo, hi = r["whole_ci95"]
    assert 0.0 <= lo <= r["whole"] <= hi <= 1.0
    with pytest.raises(ValueError, match="prompt seed"):
        judge_streams(pipe, n=6, seeds=())
