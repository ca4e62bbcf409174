import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MMGEN_ATTN_BACKEND", "auto")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """One torch thread for the test (modules opt in with ``pytestmark``): small ops, no oversubscription."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shipped():
    """``shipped(name) -> (pipeline, recommended sampler settings dict)`` of ``checkpoints/name``, loaded once; skips if absent."""
    import json
    from pathlib import Path

    import mmgen

    root, loaded = Path(__file__).resolve().parent.parent / "checkpoints", {}

    def load(name):
        path = root / name
        if not (path / "config.json").is_file():
            pytest.skip(f"no shipped checkpoint {name}")
        if name not in loaded:
            rec = path / "sampler.json"
            loaded[name] = mmgen.load(path), json.loads(rec.read_text()) if rec.is_file() else {}
        return loaded[name]

    return load


@pytest.fixture(scope="module")
def registry():
    """The demo's model registry over the shipped checkpoints, one per test module (tests may rescan or add folders)."""
    from mmgen import SHIPPED
    from mmgen.app.models import ModelRegistry

    return ModelRegistry(SHIPPED)
