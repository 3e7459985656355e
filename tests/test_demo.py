"""The demo job end to end, with tiny stand-ins for the bundled models so it runs in seconds."""

import pandas as pd

from robench.app.demo import DEMO_DEFENSES, DemoBudget, run_demo
from robench.checkpoints.bundle import save_bundle
from robench.runs.suite import load_suite
from tiny import make_tiny

QUICK = DemoBudget(cw_steps=5, cw_wb_steps=5, spsa_steps=2)


def test_demo_reuses_models_runs_the_suite_and_writes_tables(tmp_path):
    models = tmp_path / "models"
    for defense in DEMO_DEFENSES:
        model, meta = make_tiny(defense)
        save_bundle(models / f"{defense}.pt", model, meta)
    lines = []
    out = tmp_path / "demo"
    import torch

    summary = run_demo(out, models, torch.device("cpu"), seed=0, progress=False, echo=lines.append, n=6, budget=QUICK)
    assert any("reusing" in line for line in lines)
    assert set(summary["model"]) == set(DEMO_DEFENSES)
    assert set(summary["threat"]) == {"semi-white-box", "white-box", "black-box", "spsa", "noise", "rotation"}
    black = summary[summary["threat"] == "black-box"]
    assert set(zip(black["model"], black["crafted_on"])) == {("softmax", "gm"), ("gm", "softmax")}
    for name in ("tables.tex", "tables.md", "baseline.json"):
        assert (out / name).stat().st_size > 0
    assert "\\toprule" in (out / "tables.tex").read_text() and "| " in (out / "tables.md").read_text()
    assert list((out / "plots").glob("*.png"))
    assert pd.read_csv(out / "summary.csv").shape[0] == len(summary)
    assert pd.read_csv(out / "models.csv")["model"].tolist() == list(DEMO_DEFENSES)
    pairs = load_suite(out / "suite.toml")  # the written suite is valid and points at the models
    assert {p.config.model.resolve() for p in pairs} == {(models / f"{d}.pt").resolve() for d in DEMO_DEFENSES}
    rerun: list[str] = []
    run_demo(
        out, models, torch.device("cpu"), seed=0, progress=False, echo=rerun.append, n=6, budget=QUICK, reports=False
    )  # resumes: nothing recomputed
    assert sum("reused" in line and "finished parts" in line for line in rerun) == len(pairs)
