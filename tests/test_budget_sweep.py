"""The L-inf budget sweep (robench.app.budget_sweep): configs, rows from records, the table and the plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from robench.app.budget_sweep import (
    LIBRARY_APGD,
    OWN_LINF,
    SWEEP_BUDGETS,
    library_labels,
    sweep_config,
    sweep_markdown,
    sweep_plot,
    sweep_row,
    sweep_table,
)
from robench.runs.runner import run
from robench.runs.sanity import attack_names_of, record_flags
from robench.scoring import records as R
from robench.specs.threats import THREATS

GM = Path(__file__).resolve().parent.parent / "reports" / "regression" / "models" / "gm.pt"


def test_the_sweep_covers_the_white_box_threats_linf_attacks_and_the_issues_budgets():
    assert SWEEP_BUDGETS == (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    white = {spec.label: spec for spec in THREATS.get("white-box").attacks}
    assert set(OWN_LINF) <= set(white) and all(white[label].attack in ("pgd", "apgd") for label in OWN_LINF)
    assert {label for label, spec in white.items() if spec.attack in ("pgd", "apgd")} == set(OWN_LINF)  # none left out
    assert [a["params"]["loss"] for a in LIBRARY_APGD] == ["ce", "dlr"] and all(
        a["params"]["steps"] == 100 for a in LIBRARY_APGD
    )
    config = sweep_config(GM, 0.15)
    assert config.threat == "white-box" and config.cascade == "none"
    assert all(config.settings[f"{label}.eps"] == 0.15 for label in OWN_LINF)
    assert all(a["params"]["eps"] == 0.15 for a in config.extra_attacks) and set(config.attacks) == {
        *OWN_LINF,
        *library_labels(),
    }


def test_a_short_sweep_row_compares_both_sides_on_the_same_samples(tmp_path):
    own = ("PGD-10-un", "APGD-CE")
    config = sweep_config(
        GM,
        0.15,
        n=16,
        batch_size=16,
        device="cpu",
        model_name="gm",
        own=own,
        library_steps=5,
        own_settings={"PGD-10-un.steps": 5, "APGD-CE.steps": 5},
    )
    result = run(config, out=tmp_path / "run", progress=False, echo=lambda line: None)
    records = result.records
    assert set(records[R.ATTACK]) == {*own, *library_labels()}
    per_attack = records.groupby(R.ATTACK)[R.SAMPLE].apply(frozenset)
    assert len(set(per_attack)) == 1  # paired: every attack saw the same samples
    row = sweep_row(records, 0.15, own=own)
    assert (
        0 <= row["threat_worst_case"] <= row["best_own"] <= 1
        and 0 <= row["library_worst_case"] <= row["best_library"] <= 1
    )
    assert row["gap"] == pytest.approx(row["threat_worst_case"] - row["library_worst_case"])
    assert row["within_goal"] == (row["threat_worst_case"] <= row["library_worst_case"] + 0.01 + 1e-12)
    # the sweep's library labels are known as library attacks from run.json, so the sanity check compares both sides
    (flag,) = [
        f
        for f in record_flags(records, attack_names=attack_names_of([result.info]))
        if f.check == "library-attack-beats-threat"
    ]
    assert flag.value == pytest.approx(row["gap"]) and flag.flagged == (row["gap"] > flag.threshold)
    table = sweep_table([row, {**row, "eps": 0.05}])
    assert list(table["eps"]) == [0.05, 0.15]
    markdown = sweep_markdown(table)
    assert markdown.count("\n| gm |") == 2 and "torchattacks APGD-CE+DLR" in markdown
    sweep_plot(table, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="one model"):
        sweep_row(records.assign(**{R.MODEL: records[R.SAMPLE].astype(str)}), 0.15, own=own)
