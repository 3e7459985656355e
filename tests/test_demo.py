"""The demo job end to end, with tiny stand-ins for the bundled models so it runs in seconds."""

import pandas as pd
from tiny import make_tiny

from robench.bundle import save_bundle
from robench.demo import DEMO_DEFENSES, run_demo
from robench.suite import load_suite


def test_demo_reuses_models_runs_the_suite_and_writes_tables(tmp_path):
    models = tmp_path / "models"
    for defense in DEMO_DEFENSES:
        model, meta = make_tiny(defense)
        save_bundle(models / f"{defense}.pt", model, meta)
    lines = []
    out = tmp_path / "demo"
    import torch

    summary = run_demo(out, models, torch.device("cpu"), seed=0, progress=False, echo=lines.append, n=6)
    assert any("reusing" in line for line in lines)
    assert set(summary["model"]) == set(DEMO_DEFENSES)
    assert set(summary["threat"]) == {"semi-white-box", "noise", "rotation"}
    assert pd.read_csv(out / "summary.csv").shape[0] == len(summary)
    assert pd.read_csv(out / "models.csv")["model"].tolist() == list(DEMO_DEFENSES)
    pairs = load_suite(out / "suite.toml")  # the written suite is valid and points at the models
    assert {p.config.model.resolve() for p in pairs} == {(models / f"{d}.pt").resolve() for d in DEMO_DEFENSES}
