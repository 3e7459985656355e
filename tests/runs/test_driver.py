"""The driver and the local backend: names in part keys, probe results kept per run, nothing held after a run."""

from __future__ import annotations

import shutil

import pandas as pd

import robench.runs.driver as driver
from robench.runs import tasks
from robench.runs.runner import RunConfig, run
from robench.runs.sanity import SANITY_CHECKS
from robench.runs.suite import run_suite
from tiny import two_model_suite


def _config(model, **kwargs) -> RunConfig:
    base = {"threat": "semi-white-box", "n": 8, "batch_size": 8, "device": "cpu", "detectors": ("max-prob",)}
    return RunConfig(model=model, **{**base, "sanity": False, **kwargs})


def test_a_renamed_model_does_not_reuse_parts_that_name_the_old_one(bundles, tmp_path):
    """The records of a part carry the model's name, so the name is part of the part's key."""
    out = tmp_path / "out"
    run(_config(bundles["softmax"], attacks=("FGSM",)), out, progress=False)
    renamed = tmp_path / "softmax_v2.pt"
    shutil.copy(bundles["softmax"], renamed)
    result = run(_config(renamed, attacks=("FGSM", "BIM")), out, progress=False, echo=lambda _line: None)
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["model"]) == {"softmax_v2"} and "worst-case Linf 0.1" in set(summary["attack"])
    assert result.info["parts"]["reused"] == 0


def test_the_local_backend_holds_nothing_after_a_run(bundles, tmp_path):
    run(_config(bundles["gm"], attacks=("FGSM",)), tmp_path / "out", progress=False)
    assert not tasks._BUILT and not tasks._ADOPTED


def test_a_run_keeps_its_probes_when_the_process_cache_evicts_them(bundles, tmp_path, monkeypatch):
    """The process cache of probe results keeps a few; a suite of more models still reports every model's probes."""
    monkeypatch.setattr(driver, "_PROBES_KEPT", 1)
    monkeypatch.setattr(driver, "_PROBES", {})
    suite = tmp_path / "suite.toml"
    suite.write_text(two_model_suite(8, '\n[[threat]]\nname = "noise"\n'))
    run_suite(suite, tmp_path / "out", progress=False, echo=lambda _line: None)
    sanity = pd.read_csv(tmp_path / "out" / "sanity.csv")
    probes = [name for name in SANITY_CHECKS.names() if SANITY_CHECKS.get(name).kind == "model"]
    assert probes, "the model probes are registered as checks of kind 'model'"
    probed = set(sanity[sanity["check"].isin(probes)]["model"])
    assert {"softmax", "gm"} <= probed
