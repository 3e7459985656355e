"""Shared fixtures: tiny models and bundles that build in milliseconds; slow/GPU markers."""

from __future__ import annotations

import os

import pytest
import torch

from tiny import make_tiny


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("ROBENCH_SLOW") == "1"
    has_cuda = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: set ROBENCH_SLOW=1 (make test-all)"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture
def tiny_softmax():
    return make_tiny("softmax")


@pytest.fixture
def tiny_gm():
    return make_tiny("gm")
