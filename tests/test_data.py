"""Data: shapes/digits worlds, image folders, WebDataset shards, spec strings, collate."""
from __future__ import annotations

import io
import itertools
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmgen.data import DigitsWorld, ImageFolderDataset, ShapesWorld, ShardDataset, build_dataset, collate, pack
from mmgen.data.shapes import COLORS, POSITIONS, SHAPES, SIZE_FRACTION, SIZES, ShapeObject, caption, class_label, compatible, parse_caption, place, render_with_masks, sample_scene, vocabulary

torch.set_num_threads(1)
ALL_OBJECTS = [ShapeObject(c, s, z, p) for c in COLORS for s in SHAPES for z in SIZES for p in POSITIONS]


# ---------------------------------------------------------------- shapes world
def test_shapes_world_is_a_pure_function_of_seed_and_index():
    a, b = ShapesWorld(seed=3), ShapesWorld(seed=3)
    assert torch.equal(a[17]["pixels"], b[17]["pixels"]) and a[17]["caption"] == b[17]["caption"]
    assert not torch.equal(a[17]["pixels"], a[18]["pixels"])
    assert not torch.equal(a[17]["pixels"], ShapesWorld(seed=4)[17]["pixels"])
    assert not torch.equal(a[17]["pixels"], ShapesWorld(seed=3, split="test")[17]["pixels"])
    item = a[10**8]  # huge virtual length: resume is "start at index k"
    assert item["pixels"].shape == (3, 32, 32) and item["pixels"].dtype == torch.float32
    assert set(item["pixels"].unique().tolist()) <= {-1.0, 1.0}
    assert item["label"] == class_label(parse_caption(item["caption"])[0])
    with pytest.raises(IndexError):
        a[10**9]


@pytest.mark.parametrize("size", [32, 64, 128])
def test_render_invariants(size):
    rng = np.random.default_rng(size)
    for _ in range(150 if size < 128 else 60):
        objects = sample_scene(rng, int(rng.integers(1, 3)))
        image, masks = render_with_masks(objects, size, rng)
        assert image.dtype == np.uint8 and image.shape == (size, size, 3)
        # crisp: every pixel is black or exactly its object's colour
        assert not masks.sum(0).max() > 1
        expected = np.zeros_like(image)
        for obj, m in zip(objects, masks):
            expected[m] = COLORS[obj.color]
        np.testing.assert_array_equal(image, expected)
        for obj, m in zip(objects, masks):
            ys, xs = np.nonzero(m)
            side = max(np.ptp(ys), np.ptp(xs)) + 1
            assert side == round(SIZE_FRACTION[obj.size] * size)
            row, col = int((ys.min() + ys.max() + 1) / 2 / size * 3), int((xs.min() + xs.max() + 1) / 2 / size * 3)
            assert POSITIONS[row * 3 + col] == obj.position
        if len(objects) == 2:  # separate blobs: no pixel of one touches the other, even diagonally
            from scipy.ndimage import binary_dilation

            assert not (binary_dilation(masks[0], np.ones((3, 3))) & masks[1]).any()
            assert objects[0].position != objects[1].position


def test_all_378_single_objects_render_and_round_trip():
    assert len(ALL_OBJECTS) == 378
    rng = np.random.default_rng(0)
    for obj in ALL_OBJECTS:
        image, masks = render_with_masks([obj], 32, rng)
        assert masks[0].sum() > 20 and (image[masks[0]] == COLORS[obj.color]).all()
        assert parse_caption(caption([obj])) == [obj]
    assert sorted({class_label(o) for o in ALL_OBJECTS}) == list(range(21))


def test_caption_round_trip_over_all_pairs():
    pairs = [(a, b) for a, b in itertools.product(ALL_OBJECTS[::5], ALL_OBJECTS[::7]) if compatible(a, b)]
    assert len(pairs) > 500
    vocab = set(vocabulary())
    for a, b in pairs:
        text = caption([a, b])
        assert parse_caption(text) == [a, b] and set(text.split()) <= vocab
    assert caption([ShapeObject("red", "circle", "large", "top left"), ShapeObject("blue", "square", "small", "center")]) == (
        "a large red circle at the top left and a small blue square at the center")


def test_two_object_rule():
    big_center = ShapeObject("red", "circle", "large", "center")
    assert not any(compatible(big_center, ShapeObject("red", "circle", z, p)) for z in SIZES for p in POSITIONS)
    small = lambda p: ShapeObject("red", "circle", "small", p)  # noqa: E731
    assert compatible(small("top"), small("center")) and not compatible(small("top"), small("top"))
    rng = np.random.default_rng(1)
    scenes = [sample_scene(rng, 2) for _ in range(300)]
    assert all(compatible(a, b) for a, b in scenes)
    assert len({a.position for a, _ in scenes}) == 9  # every cell reachable as the first object


@pytest.mark.parametrize("text, word", [
    ("a large purple circle at the top", "purple"),
    ("a huge red circle at the top", "huge"),
    ("a large red hexagon at the top", "hexagon"),
    ("a large red circle at the middle", "middle"),
    ("a large red circle at the top left or a small red circle at the center", "or"),
])
def test_parse_caption_names_the_bad_word(text, word):
    with pytest.raises(ValueError, match=f"'{word}'.*allowed"):
        parse_caption(text)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="ends"):
        parse_caption("a large red circle at the top and")
    with pytest.raises(ValueError, match="unknown color 'pink'"):
        ShapeObject("pink", "circle", "large", "top")
    with pytest.raises(ValueError, match="objects must be one of"):
        ShapesWorld(objects="3")
    with pytest.raises(ValueError, match="canvas size"):
        render_with_masks([ALL_OBJECTS[0]], 8)
    with pytest.raises(ValueError, match="num_objects"):
        sample_scene(np.random.default_rng(0), 3)


def test_objects_option_and_jitter():
    assert all(len(parse_caption(ShapesWorld(objects="2")[i]["caption"])) == 2 for i in range(20))
    counts = {len(parse_caption(ShapesWorld(objects="1-2")[i]["caption"])) for i in range(40)}
    assert counts == {1, 2}
    obj = [ShapeObject("red", "square", "small", "center")]
    boxes = {place(obj, 128, np.random.default_rng(i))[0] for i in range(30)}
    centred = place(obj, 128)[0]
    assert len(boxes) > 1 and all(abs(b[0] - centred[0]) <= 3 and abs(b[1] - centred[1]) <= 3 for b in boxes)


# ---------------------------------------------------------------- digits
def test_digits_world_split_and_items():
    all_, train, test = DigitsWorld(split="all"), DigitsWorld(split="train"), DigitsWorld(split="test")
    assert len(all_) == 1797 and len(train) + len(test) == 1797 and 340 <= len(test) <= 380
    item = test[5]
    assert item["pixels"].shape == (3, 32, 32) and -1 <= item["pixels"].min() < item["pixels"].max() <= 1
    assert item["caption"] == f"a handwritten digit {item['label']}" and 0 <= item["label"] <= 9
    assert torch.equal(DigitsWorld(split="test")[5]["pixels"], item["pixels"])
    assert set(test.indices).isdisjoint(train.indices)
    with pytest.raises(ValueError, match="split must be one of"):
        DigitsWorld(split="val")


# ---------------------------------------------------------------- folders
def _png(path: Path, color, size=(40, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_with_classes_captions_and_a_corrupt_file(tmp_path, caplog):
    _png(tmp_path / "cats" / "a.png", (255, 0, 0))
    (tmp_path / "cats" / "a.txt").write_text("a red cat\n")
    _png(tmp_path / "dogs" / "b.png", (0, 0, 255))
    _png(tmp_path / "dogs" / "sub" / "c.png", (0, 255, 0))
    (tmp_path / "captions.jsonl").write_text('{"file": "dogs/b.png", "caption": "a blue dog"}\n{"file": "c.png", "caption": "green"}\n')
    (tmp_path / "dogs" / "broken.png").write_bytes(b"not a png at all")
    with caplog.at_level(logging.WARNING):
        ds = ImageFolderDataset(tmp_path, size=16)
    assert ds.stats == {"images": 3, "skipped": 1, "uncaptioned": 0} and "broken.png" in caplog.text
    assert ds.classes == ["cats", "dogs"]
    items = [ds[i] for i in range(len(ds))]
    assert [it["caption"] for it in items] == ["a red cat", "a blue dog", "green"]
    assert [it["label"] for it in items] == [0, 1, 1]
    assert items[0]["pixels"].shape == (3, 16, 16)
    assert torch.allclose(items[0]["pixels"][0], torch.ones(16, 16)) and torch.allclose(items[0]["pixels"][1], -torch.ones(16, 16))


def test_image_folder_late_corruption_and_empty_folder(tmp_path):
    _png(tmp_path / "x.png", (255, 255, 255))
    _png(tmp_path / "y.png", (0, 0, 0))
    ds = ImageFolderDataset(tmp_path, size=8, captions=False)
    assert "caption" not in ds[0] and "label" not in ds[0]
    (tmp_path / "x.png").write_bytes(b"garbage")  # breaks after start-up: the next image is served
    assert ds[0]["pixels"].max() == -1 and ds.stats["skipped"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(empty)


# ---------------------------------------------------------------- shards
@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    shards = pack(build_dataset("shapes", size=16, seed=5), out, num_samples=25, samples_per_shard=10, progress=False)
    return out, shards


def test_pack_then_stream_round_trip(packed):
    out, shards = packed
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    world = ShapesWorld(size=16, seed=5)
    items = list(ShardDataset(out, size=16))
    assert len(items) == 25
    for i, it in enumerate(items):
        ref = world[i]
        assert torch.equal(it["pixels"], ref["pixels"]) and it["caption"] == ref["caption"] and it["label"] == ref["label"]
    up = next(iter(build_dataset(f"shards:{out}/shard-{{000000..000001}}.tar", size=32)))
    assert up["pixels"].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="infinite world: pass num_samples"):
        pack(build_dataset("shapes"), out / "x", progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        pack(build_dataset("shapes"), out, num_samples=2, progress=False)


def test_stream_skip_ranks_and_workers(packed):
    out, _ = packed
    full = [it["caption"] for it in ShardDataset(out, size=16)]
    assert [it["caption"] for it in ShardDataset(out, size=16, start=7)] == full[7:]
    assert [it["caption"] for it in ShardDataset(out, size=16).skip(20)] == full[20:]
    # 3 shards over 2 ranks: sample-level split, balanced and disjoint
    r0 = [it["caption"] for it in ShardDataset(out, size=16, rank=0, world_size=2)]
    r1 = [it["caption"] for it in ShardDataset(out, size=16, rank=1, world_size=2)]
    assert r0 == full[0::2] and r1 == full[1::2]
    thirds = [[it["caption"] for it in ShardDataset(out, size=16, rank=r, world_size=3)] for r in range(3)]
    assert thirds == [full[0:10], full[10:20], full[20:25]]  # shard count divides: whole shards per rank
    # endless, per-epoch shuffled shard order; resuming deep into epoch 2 lands on the same samples
    first = [it["caption"] for _, it in zip(range(60), ShardDataset(out, size=16, repeat=True, shuffle=True, seed=1))]
    assert sorted(first[:25]) == sorted(full) == sorted(first[25:50])
    resumed = [it["caption"] for _, it in zip(range(20), ShardDataset(out, size=16, repeat=True, shuffle=True, seed=1, start=40))]
    assert resumed == first[40:60]
    # DataLoader workers hand batches out in exactly the single-process order, resume included
    ds = ShardDataset(out, size=16, start=4, batch_size=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    assert [c for batch in loader for c in batch["caption"]] == full[4:]


def _rewrite(src: Path, dst: Path, corrupt_member: str) -> None:
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            if m.name == corrupt_member:
                data = b"\x89PNG" + bytes(len(data) - 4)
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))


def test_corrupt_members_are_skipped_and_counted(packed, tmp_path, caplog):
    out, shards = packed
    bad = tmp_path / "bad"
    bad.mkdir()
    _rewrite(shards[0], bad / "shard-000000.tar", "000000003.png")
    data = shards[1].read_bytes()
    (bad / "shard-000001.tar").write_bytes(data[: len(data) // 2])  # truncated mid-member
    (bad / "shard-000002.tar").write_bytes(shards[2].read_bytes())
    ds = ShardDataset(bad, size=16)
    with caplog.at_level(logging.WARNING):
        items = list(ds)
    assert ds.stats["skipped"] >= 2 and "000000003" in caplog.text
    assert 9 + 5 <= len(items) < 25 and ds.stats["yielded"] == len(items)
    assert all(set(it) == {"pixels", "caption", "label"} for it in items)  # no half-read sample leaks
    assert items[-1]["caption"] == ShapesWorld(size=16, seed=5)[24]["caption"]
    resumed = ShardDataset(bad, size=16, start=10)  # shard 0 is stepped over by its header count...
    assert next(iter(resumed))["caption"] == ShapesWorld(size=16, seed=5)[10]["caption"]
    assert resumed.stats["skipped"] == 0  # ...so its corrupt member is never even read


def test_empty_shard_sets_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .tar shards"):
        ShardDataset(tmp_path)
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    with pytest.raises(ValueError, match="no readable samples"):
        list(ShardDataset(tmp_path / "empty.tar"))
    with pytest.raises(FileNotFoundError, match="missing"):
        ShardDataset(str(tmp_path / "s-{0..2}.tar"))


def test_pack_a_folder_and_digits(tmp_path):
    for k in range(3):
        _png(tmp_path / "imgs" / f"{k}.png", (80 * k, 0, 0))
        (tmp_path / "imgs" / f"{k}.txt").write_text(f"red level {k}")
    pack(build_dataset(str(tmp_path / "imgs"), size=8), tmp_path / "out", progress=False)
    items = list(ShardDataset(tmp_path / "out", size=8))
    assert [it["caption"] for it in items] == ["red level 0", "red level 1", "red level 2"] and "label" not in items[0]
    pack(DigitsWorld(size=8, split="test"), tmp_path / "dig", num_samples=6, progress=False)
    assert [it["label"] for it in ShardDataset(tmp_path / "dig", size=8)] == DigitsWorld(split="test").labels[:6].tolist()


# ---------------------------------------------------------------- spec strings + collate
def test_build_dataset_specs(tmp_path):
    ds = build_dataset("shapes:objects=1,length=50", size=64, seed=1)
    assert isinstance(ds, ShapesWorld) and len(ds) == 50 and ds.size == 64 and ds.objects == "1"
    assert isinstance(build_dataset("digits", split="test"), DigitsWorld)
    _png(tmp_path / "a.png", (1, 2, 3))
    assert len(build_dataset(f"folder:{tmp_path}", size=8)) == 1
    with pytest.raises(ValueError, match=r"unknown dataset spec 'imagenet'.*digits.*folder.*shapes.*shards"):
        build_dataset("imagenet")
    with pytest.raises(ValueError, match=r"unknown option 'colour' for 'shapes'; allowed: \['length', 'objects'\]"):
        build_dataset("shapes:colour=red")
    with pytest.raises(ValueError, match="needs a path"):
        build_dataset("folder")


def test_collate():
    batch = collate([ShapesWorld()[i] for i in range(4)])
    assert batch["pixels"].shape == (4, 3, 32, 32) and batch["label"].dtype == torch.long
    assert len(batch["caption"]) == 4 and isinstance(batch["caption"][0], str)
    with pytest.raises(ValueError, match="keys"):
        collate([{"pixels": torch.zeros(3)}, {"pixels": torch.zeros(3), "label": 1}])


def test_shapes_two_fraction_sets_the_share_of_two_object_scenes():
    def share(world, n=200):
        return sum(len(world.scene(i)[0]) == 2 for i in range(n)) / n

    assert share(ShapesWorld(two_fraction=1.0)) == 1.0 and share(ShapesWorld(two_fraction=0.0)) == 0.0
    assert 0.7 < share(ShapesWorld(two_fraction=0.8)) < 0.9
    with pytest.raises(ValueError, match="two_fraction"):
        ShapesWorld(objects="1", two_fraction=0.5)
    with pytest.raises(ValueError, match="two_fraction"):
        ShapesWorld(two_fraction=1.5)


# ---------------------------------------------------------------- layering
def _imports(path: Path) -> set[str]:
    """Every module a source file imports, function-level imports included."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update([node.module] + [f"{node.module}.{a.name}" for a in node.names])
    return found


@pytest.mark.parametrize("module, forbidden", [
    ("mmgen/data/shards.py", "mmgen.data.build"),  # build -> shards only
    ("mmgen/data/video.py", "mmgen.data.build"),  # build registers the video kinds itself (build -> video only)
    ("mmgen/registry.py", "mmgen.models"),  # models register into the registry, never the reverse
    ("mmgen/registry.py", "mmgen.tokenizers_vis"),
])
def test_no_import_cycles(module, forbidden):
    root = Path(__file__).resolve().parent.parent
    imported = _imports(root / module)
    assert not any(m == forbidden or m.startswith(forbidden + ".") for m in imported), sorted(imported)


LAYERS = {  # folder -> packages it must never import (the layers read top-down: core <- tokenizers/models <- tools)
    "mmgen/nn": ("mmgen.models", "mmgen.tokenizers_vis", "mmgen.data", "mmgen.eval", "mmgen.sample", "mmgen.app", "mmgen.train"),
    "tokenizers_vis": ("mmgen.models", "mmgen.sample", "mmgen.app", "mmgen.train"),
    "mmgen/data": ("mmgen.models", "mmgen.sample", "mmgen.app", "mmgen.train"),
    "mmgen/eval": ("mmgen.sample", "mmgen.app", "mmgen.train", "mmgen.bench"),
    "models": ("mmgen.sample", "mmgen.app", "mmgen.train", "mmgen.bench"),
}


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_layers_import_only_downwards(folder):
    root = Path(__file__).resolve().parent.parent
    bad = {f"{path.relative_to(root)}: {m}" for path in sorted((root / folder).rglob("*.py")) for m in _imports(path)
           if any(m == f or m.startswith(f + ".") for f in LAYERS[folder])}
    assert not bad, sorted(bad)


def test_text_tokenizer_knows_no_data_world():
    import subprocess
    import sys

    code = "import sys, mmgen.text, mmgen.registry; print(sorted(m for m in sys.modules if m.startswith(('mmgen.data', 'mmgen.models', 'mmgen.tokenizers_vis'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
