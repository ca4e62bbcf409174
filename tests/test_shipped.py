"""The shipped quickstart checkpoints load, match their recipes and generate."""
from pathlib import Path

import pytest
import torch

import mmgen

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p for p in (ROOT / "checkpoints").glob("*") if (p / "config.json").is_file())


@pytest.mark.skipif(not SHIPPED, reason="no shipped checkpoints in checkpoints/")
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_checkpoint_generates(path):
    pipe = mmgen.load(path)
    assert (path / "REPRODUCE.md").is_file(), "every shipped checkpoint says how to reproduce it"
    assert (path / "model.safetensors").stat().st_size < 20 * 2**20  # fp16; subobject's 15k-code vocabulary is the largest
    side = pipe.config.image_size
    if pipe.is_video:
        clips = pipe(prompt=["a red circle moving right"] * 2, seed=0)
        assert clips.shape == (2, 3, pipe.max_frames, side, side) and clips.dtype == torch.uint8
        assert clips.float().std() > 5 and (clips[:, :, 0] != clips[:, :, -1]).any()  # something is drawn, and it moves
        return
    kw = {"label": [0, 1]} if pipe.config.cond == "class" else {"prompt": ["a large red circle at the top left"] * 2}
    images = pipe(**kw, seed=0)
    assert images.shape == (2, 3, side, side) and images.dtype == torch.uint8
    assert images.float().std() > 5  # not a blank canvas
