import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MMGEN_ATTN_BACKEND", "auto")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
