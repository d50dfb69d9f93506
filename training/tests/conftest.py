"""Shared fixtures: a tiny model and synthetic batches (CPU, few threads)."""

import pytest
import torch

from vla_jepa.config import get_config
from vla_jepa.model import make_model


@pytest.fixture(autouse=True)
def _threads():
    # one thread: on a shared 2-core machine two OpenMP threads stall each other (measured 5-10x slower)
    torch.set_num_threads(1)
    yield


@pytest.fixture
def tiny_cfg():
    return get_config("tiny")


@pytest.fixture
def tiny_model(tiny_cfg):
    torch.manual_seed(0)
    return make_model(tiny_cfg).eval()
