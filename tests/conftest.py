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
