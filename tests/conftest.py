"""Shared fixtures: tiny models and bundles that build in milliseconds; slow/GPU markers."""

from __future__ import annotations

import os

import pytest
import torch

from robench.checkpoints.bundle import save_bundle
from tiny import make_tiny


def pytest_configure(config):
    # Tests see only their own robench processes: another robench run on the machine (a benchmark, a
    # second pytest) must not add a shared-cores warning line to the CLI output the tests check.
    # Under pytest-xdist (make test runs two workers) each worker gets its own registry and one torch thread:
    # two workers on two cores, neither warned about the other.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if "ROBENCH_ACTIVE_DIR" not in os.environ or worker:
        import tempfile

        os.environ["ROBENCH_ACTIVE_DIR"] = tempfile.mkdtemp(prefix=f"robench-active-tests-{worker or 'main'}-")
    if worker:
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("ROBENCH_SLOW") == "1"
    has_cuda = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: set ROBENCH_SLOW=1 (make test-all)"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture
def float64():
    """Run in double precision: in float32 the convolutions round differently for different batch sizes (or shifted
    inputs), and many optimiser steps amplify that to ~1e-3, which would hide what batched-vs-single tests check."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def tiny_softmax():
    return make_tiny("softmax")


@pytest.fixture
def tiny_gm():
    return make_tiny("gm")


@pytest.fixture
def bundles(tmp_path):
    """Tiny untrained softmax and GM bundles saved as tmp_path / "softmax.pt" and "gm.pt": {name: path}."""
    paths = {}
    for name in ("softmax", "gm"):
        model, meta = make_tiny(name)
        paths[name] = tmp_path / f"{name}.pt"
        save_bundle(paths[name], model, meta)
    return paths


@pytest.fixture(scope="session")
def trained_tiny():
    """A small softmax and a small GM cnn trained briefly on mnist-5k (~85-90% clean accuracy), once per session.

    Returns {"softmax": ModelBundle, "gm": ModelBundle, "data": Dataset}.
    """
    from robench.checkpoints.train_bundle import train_bundle
    from robench.core.data import load_dataset

    arch = {"width": 8, "hidden": 32, "feature_dim": 16, "dropout": 0.0}
    overrides = {"epochs": 2, "lr": 3e-3, "shift": 0}
    bundles = {
        name: train_bundle(defense=name, arch_kwargs=arch, train_overrides=overrides, progress=False)
        for name in ("softmax", "gm")
    }
    for bundle in bundles.values():
        bundle.model.eval()
    return {**bundles, "data": load_dataset("mnist-5k")}


@pytest.fixture(autouse=True)
def _threat_registry_is_left_as_found():
    """A test that registers a threat (a threat file it loads) must unload it: under xdist the next test on the
    same worker would see it, and which tests share a worker changes from run to run."""
    from robench.specs import threat_files
    from robench.specs.threats import THREATS

    before = set(THREATS.names())
    yield
    leaked = sorted(set(THREATS.names()) - before)
    for name in leaked:
        if threat_files.threat_file(name) is not None:
            threat_files.unload(name)
        else:
            THREATS.unregister(name)
    assert not leaked, f"the test left threats registered: {leaked}"
