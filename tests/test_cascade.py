"""The worst case per sample over a threat's attacks, and the cascade that runs later attacks on the samples still
in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robench.attacks import ATTACKS
from robench.core.errors import ConfigError
from robench.report.bootstrap import bootstrap_intervals
from robench.runs.runner import RunConfig, run
from robench.scoring import records as R
from robench.scoring.budgets import Budget
from robench.scoring.cascade import (
    Aim,
    aimed_budgets,
    attacked_budgets,
    cascade_aims,
    cascade_order,
    cell_label,
    flag_thresholds,
    still_in,
)
from robench.scoring.metrics import summarize
from robench.scoring.worst_case import with_worst_case, worst_case_label, worst_case_records
from robench.specs.threats import AttackSpec
from test_cli import assert_one_line_error
from test_cli import run as run_cli

ROOT = Path(__file__).resolve().parents[1]
SOFTMAX = ROOT / "reports" / "regression" / "models" / "softmax.pt"
WORST_CASE = worst_case_label(Budget("linf", 0.1))  # the hand-made records' one budget


def _records(rows: list[tuple[str, int, int, int, int, float]], order: dict[str, int]) -> pd.DataFrame:
    """Hand-made records: (attack, sample, label, clean_pred, adv_pred, adversarial kd score); clean kd scores =
    sample id."""
    frame = pd.DataFrame(rows, columns=["attack", "sample", "label", "clean_pred", "adv_pred", "score_adv:kd"])
    n = len(frame)
    return frame.assign(
        model="m",
        threat="t",
        corruption=False,
        crafted_on="m",
        target=-1,
        success=lambda f: (f["adv_pred"] != f["label"]) & (f["clean_pred"] == f["label"]),
        best_attempt=False,
        crafted_success=lambda f: f["success"],
        l2=np.arange(n, dtype=float),
        linf=0.1,
        distortion=np.arange(n, dtype=float) / 28,
        input_range=1.0,
        order=lambda f: f["attack"].map(order),
        cascade_mode="none",
        worst_case_budgets="linf:0.1",
        **{"score_clean:kd": lambda f: f["sample"].astype(float)},
    )


def test_worst_case_survives_only_what_every_attack_left_and_names_the_first_breaker():
    rows = [
        # sample 0: clean-correct, broken by B only -> broken_by B
        ("A", 0, 1, 1, 1, 0.0),
        ("B", 0, 1, 1, 2, 9.0),
        # sample 1: broken by both; A comes first in cascade order although B is listed first
        ("B", 1, 3, 3, 4, 5.0),
        ("A", 1, 3, 3, 5, 1.0),
        # sample 2: survives both
        ("A", 2, 0, 0, 0, 0.0),
        ("B", 2, 0, 0, 0, 0.0),
        # sample 3: misclassified clean: never survives, never "successful"
        ("A", 3, 2, 7, 7, 0.0),
        ("B", 3, 2, 7, 7, 0.0),
    ]
    derived = worst_case_records(_records(rows, {"A": 0, "B": 1})).set_index("sample")
    assert list(derived.index) == [0, 1, 2, 3] and set(derived["attack"]) == {WORST_CASE}
    assert list(derived["broken_by"]) == ["B", "A", "", "A"]
    assert list(derived["success"]) == [True, True, False, False]
    assert list(derived["adv_pred"]) == [2, 5, 0, 7]  # the first breaker's prediction; survivors keep their label
    # the most clean-looking misclassified output per sample (sample 1: B's 5.0 beats A's 1.0)
    assert derived.loc[0, "score_adv:kd"] == 9.0 and derived.loc[1, "score_adv:kd"] == 5.0
    assert np.isnan(derived.loc[2, "score_adv:kd"])
    assert derived.loc[1, "l2"] == 3.0  # A's row of sample 1 is the fourth record
    summary = summarize(_records(rows, {"A": 0, "B": 1})).set_index("attack")
    assert summary.loc[WORST_CASE, "survival"] == pytest.approx(1 / 3)  # of the 3 clean-correct samples, sample 2
    assert summary.loc[WORST_CASE, "robust_accuracy"] == pytest.approx(1 / 4)
    assert summary.loc["A", "survival"] == pytest.approx(2 / 3) and summary.loc["B", "survival"] == pytest.approx(1 / 3)


def test_detector_aware_worst_case_needs_an_unflagged_misclassification():
    # clean kd scores 0..19 (the sample ids): at 5% the threshold is the 1st smallest, 1.0, so a score < 1 is flagged
    rows = []
    for s in range(20):
        rows.append(("A", s, 0, 0, 1 if s < 4 else 0, 0.5))  # samples 0-3 misclassified by A, but flagged (0.5 < 1)
        rows.append(("B", s, 0, 0, 1 if s in (2, 3) else 0, 3.0 if s == 3 else 0.2))  # 2 flagged, 3 evades
    summary = summarize(_records(rows, {"A": 0, "B": 1}))
    worst = summary[(summary["attack"] == WORST_CASE) & (summary["detector"] == "kd")].iloc[0]
    assert worst["survival"] == pytest.approx(16 / 20)
    assert worst["survival_detected"] == pytest.approx(19 / 20)  # only sample 3 is misclassified and unflagged
    a = summary[(summary["attack"] == "A") & (summary["detector"] == "kd")].iloc[0]
    assert a["survival_detected"] == pytest.approx(1.0)


def test_no_worst_case_for_a_single_attack_and_none_twice():
    rows = [("A", s, 0, 0, s % 2, 0.0) for s in range(6)]
    records = _records(rows, {"A": 0})
    assert worst_case_records(records).empty
    assert WORST_CASE not in set(summarize(records)["attack"])
    two = _records(rows + [("B", s, 0, 0, 0, 0.0) for s in range(6)], {"A": 0, "B": 1})
    once = with_worst_case(two)
    assert len(with_worst_case(once)) == len(once)  # idempotent: earlier worst-case rows are replaced


def test_worst_case_rows_get_bootstrap_intervals():
    rows = [(a, s, 0, 0, int(s % 3 == i), 0.0) for i, a in enumerate("AB") for s in range(30)]
    intervals = bootstrap_intervals(_records(rows, {"A": 0, "B": 1}), n_resamples=50)
    worst = intervals[intervals["attack"] == WORST_CASE].iloc[0]
    assert worst["survival_low"] <= 10 / 30 <= worst["survival_high"]


def test_cascade_order_is_cheapest_first_and_stable():
    attacks = [ATTACKS.get(name)() for name in ("cw-wb", "pgd", "fgsm", "cw-l2", "bim", "mim")]
    assert [type(attacks[i]).name for i in cascade_order(attacks)] == ["fgsm", "pgd", "mim", "bim", "cw-l2", "cw-wb"]


def test_still_in_per_mode():
    rows = [("A", 0, 0, 0, 1, 5.0), ("A", 1, 0, 0, 1, -1.0), ("A", 2, 0, 0, 0, 0.0), ("A", 3, 0, 1, 1, 0.0)]
    records = _records(rows, {"A": 0})
    samples = np.arange(4)
    pgd, linf = ATTACKS.get("pgd")(eps=0.1), Budget("linf", 0.1)
    (plain,) = cascade_aims([pgd], "misclassified", [linf], ["kd"], ["kd"])
    assert plain == Aim(((linf, None),))
    assert list(still_in(records, samples, plain, {})) == [False, False, True, False]
    thresholds = flag_thresholds(records, ["kd"])
    assert thresholds == {"kd": 0.0}  # the smallest clean score (k = floor(0.05 * 4) = 0)
    # no attack of the threat targets KD: the blind one stands for it, so a misclassified but flagged sample
    # (1: -1 < 0) stays to meet the next attack
    (blind,) = cascade_aims([pgd], "undetected", [linf], ["kd"], ["kd"])
    assert blind == Aim(((linf, None), (linf, "kd")))
    assert list(still_in(records, samples, blind, thresholds)) == [False, True, True, False]


def test_still_in_after_corruptions_only():
    """A corruption's outputs close no cell, but its records still say whose clean input is misclassified (a threat
    file may list a noise attack first): that sample meets no later attack."""
    rows = [("noise", 0, 0, 0, 1, 0.0), ("noise", 1, 0, 1, 1, 0.0), ("noise", 2, 0, 0, 0, 0.0)]
    records = _records(rows, {"noise": 0}).assign(corruption=True)
    linf = Budget("linf", 0.1)
    (plain,) = cascade_aims([ATTACKS.get("pgd")(eps=0.1)], "misclassified", [linf], [], [])
    # 0: misclassified by the noise, which breaks nothing in the worst case; 1: misclassified clean; 2: robust
    assert list(still_in(records, np.arange(4), plain, {})) == [True, False, True, True]


def test_cascade_aims_follow_each_attacks_ball_and_detectors():
    budgets = (Budget("linf", 0.1), Budget("linf", 0.3), Budget("l2", 1.0), Budget("l2", 2.0))
    linf1, linf3, l21, l22 = budgets
    pgd3, pgd1 = ATTACKS.get("pgd")(eps=0.3), ATTACKS.get("pgd")(eps=0.1)
    spgd_kd = ATTACKS.get("selective-pgd")(eps=0.3, detector="kd")
    spgd_kdbu = ATTACKS.get("selective-pgd")(eps=0.3, detector="kd+bu")
    cw, cw_wb = ATTACKS.get("cw-l2")(), ATTACKS.get("cw-wb")()
    # a bounded attack is run for the balls that hold its own; an unbounded one for every ball of its norm
    assert aimed_budgets(pgd3, budgets) == (linf3,)
    assert aimed_budgets(pgd1, budgets) == (linf1, linf3)
    assert aimed_budgets(cw, budgets) == (l21, l22)
    assert aimed_budgets(ATTACKS.get("pgd")(eps=0.5), budgets) == (linf1, linf3)  # none holds it: its norm's
    assert aimed_budgets(pgd3, (l21,)) == (l21,)  # none of its norm: wherever its outputs fall
    live, scored = ["kd", "max-prob"], ["kd", "max-prob", "kd+bu"]
    aims = cascade_aims([pgd3, spgd_kd, cw, cw_wb, spgd_kdbu], "undetected", budgets, live, scored)
    # KD is attacked at L-inf 0.3 (SPGD) and in L2 (C&W-wb): blind attacks are not run for its cells there;
    # no attack targets max-prob: every attack stands for it
    assert aims[0] == Aim(((linf3, None), (linf3, "max-prob")))
    assert aims[1] == Aim(((linf3, None), (linf3, "kd"), (linf3, "max-prob")))
    assert aims[2] == Aim(((l21, None), (l22, None), (l21, "max-prob"), (l22, "max-prob")))
    assert aims[3].cells == ((l21, None), (l22, None), (l21, "kd"), (l21, "max-prob"), (l22, "kd"), (l22, "max-prob"))
    assert aims[4].untracked == ("kd+bu",)  # fitted after the run: the cascade cannot judge its flags
    # a detector counts as attacked at a budget only by an attack run at that budget: selective PGD on KD at L-inf
    # 0.1 alone leaves KD's L-inf 0.3 cell to the blind PGD there
    spgd_kd1 = ATTACKS.get("selective-pgd")(eps=0.1, detector="kd")
    assert attacked_budgets(spgd_kd1, budgets) == (linf1,) and attacked_budgets(cw, budgets) == (l21, l22)
    assert attacked_budgets(ATTACKS.get("pgd")(eps=0.5), budgets) == ()
    blind, joint = cascade_aims([pgd3, spgd_kd1], "undetected", budgets, ["kd"], ["kd"])
    assert blind == Aim(((linf3, None), (linf3, "kd"))) and (linf3, "kd") in joint.cells
    # misclassified: the plain cells only
    assert all(
        all(d is None for _, d in a.cells)
        for a in cascade_aims([pgd3, spgd_kd], "misclassified", budgets, live, scored)
    )
    assert cell_label((linf3, "kd")) == "Linf 0.3/kd" and cell_label((None, None)) == "anywhere"


def test_worst_case_is_a_reserved_label():
    with pytest.raises(ConfigError, match="reserved"):
        AttackSpec(WORST_CASE, "fgsm")


# ---------------------------------------------------------------------------- the runner

_DETERMINISTIC = {
    "FGSM.target_mode": "none",
    "BIM.target_mode": "none",
    "BIM.steps": 5,
    "ILCM.steps": 5,
    "FGSM.eps": 0.15,
    "BIM.eps": 0.1,
}


def _config(cascade: str, **kw) -> RunConfig:
    base = dict(
        model=SOFTMAX,
        threat="semi-white-box",
        n=48,
        batch_size=16,
        device="cpu",
        attacks=("BIM", "FGSM", "ILCM"),
        settings=_DETERMINISTIC,
        detectors=("max-prob", "kd"),
        sanity=False,
        cascade=cascade,
        budgets=("linf:0.3",),  # one ball that holds every output of these attacks: "broken" is misclassified
    )
    return RunConfig(**{**base, **kw})


RUN_WORST_CASE = worst_case_label(Budget("linf", 0.3))


@pytest.fixture(scope="module")
def full_and_cascaded():
    return {mode: run(_config(mode), progress=False) for mode in ("none", "misclassified", "undetected")}


def _worst(result, detector="max-prob"):
    s = result.summary
    return s[(s["attack"] == RUN_WORST_CASE) & (s["detector"] == detector)].iloc[0]


def test_cascade_gives_the_full_runs_worst_case_with_fewer_passes(full_and_cascaded):
    full, cascaded, undetected = (full_and_cascaded[m] for m in ("none", "misclassified", "undetected"))
    # deterministic attacks (no random targets or starts): the cascade's worst case is the full run's exactly
    assert _worst(cascaded)["survival"] == _worst(full)["survival"]
    for detector in ("max-prob", "kd"):
        assert _worst(undetected, detector)["survival"] == _worst(full, detector)["survival"]
        assert _worst(undetected, detector)["survival_detected"] == _worst(full, detector)["survival_detected"]
        # leaving at misclassification skips later attacks on flagged samples:
        # the detector-aware worst case can only be higher
        assert _worst(cascaded, detector)["survival_detected"] >= _worst(full, detector)["survival_detected"]
    passes = {m: sum(r.info["image_passes"].values()) for m, r in full_and_cascaded.items()}
    assert passes["misclassified"] < passes["undetected"] <= passes["none"]
    assert passes["misclassified"] < 0.8 * passes["none"]


def test_cascaded_records_run_cheapest_first_on_the_samples_still_in(full_and_cascaded):
    records = full_and_cascaded["misclassified"].records
    first = records[records["order"] == 0]
    assert set(first["attack"]) == {"FGSM"} and len(first) == 48  # the cheapest attack meets every sample
    broken = set(first.loc[first["adv_pred"] != first["label"], "sample"]) | set(
        first.loc[first["clean_pred"] != first["label"], "sample"]
    )
    later = records[records["order"] > 0]
    assert not broken & set(later["sample"])  # a sample that left never meets a later attack
    assert (records[R.CASCADE] == "misclassified").all()
    assert (full_and_cascaded["none"].records[R.CASCADE] == "none").all()
    summary = full_and_cascaded["misclassified"].summary
    assert set(summary[R.CASCADE]) == {"misclassified"}
    assert summary.loc[summary["attack"] == "BIM", "n"].iloc[0] < 48


def test_cascade_resumes_from_its_parts_and_shares_the_first_attack_with_a_full_run(tmp_path):
    out = tmp_path / "run"
    first = run(_config("misclassified", n=32), out, progress=False)
    derived = pd.read_parquet(out / "worst_case.parquet")  # the derived rows, written beside the records
    pd.testing.assert_frame_equal(derived, worst_case_records(first.records))
    assert len(derived) == 32 and set(derived["broken_by"]) <= {"", "FGSM", "ILCM", "BIM"}
    again = run(_config("misclassified", n=32), out, progress=False)
    assert again.info["parts"]["computed"] == 0 and again.info["parts"]["reused"] == first.info["parts"]["computed"]
    pd.testing.assert_frame_equal(first.records, again.records)
    full = run(_config("none", n=32), out, progress=False)
    assert full.info["parts"]["reused"] >= 2  # FGSM's two batches are the same parts with or without a cascade
    assert (full.records[R.CASCADE] == "none").all()


def test_cli_cascade_flag_and_bad_mode(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "run",
        "--model",
        str(SOFTMAX),
        "--threat",
        "semi-white-box",
        "--attack",
        "FGSM",
        "--attack",
        "BIM",
        "--n",
        "16",
        "--device",
        "cpu",
        "--detector",
        "max-prob",
        "--no-sanity",
        "--no-progress",
        "--set",
        "BIM.steps=2",
        "--threads",
        "1",
    ]
    code, _, err = run_cli(capsys, *args, "--out", str(out), "--cascade")
    assert code == 0, err
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["cascade"] == "misclassified" and info["execution"]["threads"] == 1
    # the semi-white-box threat's nominal MNIST budgets in its attacks' norm (L-inf)
    assert {worst_case_label(Budget("linf", e)) for e in (0.1, 0.2, 0.3)} <= set(
        pd.read_csv(out / "summary.csv")["attack"]
    )
    code, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "bad"), "--cascade", "sometimes")
    assert_one_line_error(code, err, "sometimes")


# ---------------------------------------------------------------------------- the cells of a white-box cascade


@pytest.fixture(scope="module")
def white_box_full_and_undetected():
    """The white-box threat's PGD-10-un and its selective PGD per detector and budget, deterministic, with and
    without the undetected cascade."""
    config = dict(
        threat="white-box",
        attacks=("PGD-10-un", "SPGD"),
        settings={"PGD-10-un.random_start": False, "SPGD.steps": 10},
        detectors=("kd", "max-prob"),
        budgets=("linf:0.1", "linf:0.3"),
    )
    return {mode: run(_config(mode, **config), progress=False) for mode in ("none", "undetected")}


def _survival(records: pd.DataFrame, budget: Budget, detector: str | None) -> float:
    """The worst case's survival (detector None) or survival_detected in one cell, over ``records``."""
    rows = summarize(records)
    row = rows[(rows["attack"] == worst_case_label(budget)) & (rows["detector"] == (detector or "kd"))].iloc[0]
    return float(row["survival" if detector is None else "survival_detected"])


def test_undetected_cascade_runs_each_joint_attack_for_its_own_cells(white_box_full_and_undetected):
    full, cascaded = white_box_full_and_undetected["none"], white_box_full_and_undetected["undetected"]
    aims = cascaded.info["execution"]["cascade_aims"]["white-box"]
    # a selective PGD is run for the plain cells and its own detector's, not the other detector's (which has its
    # own selective PGD at each budget); PGD-10-un, the cheapest, runs first on every sample and has no aim
    assert "PGD-10-un" not in aims
    assert aims["SPGD[kd]"] == ["Linf 0.3", "Linf 0.3/kd"]
    assert aims["SPGD[max-prob]@Linf 0.1"] == ["Linf 0.1", "Linf 0.3", "Linf 0.1/max-prob", "Linf 0.3/max-prob"]
    records, everything = cascaded.records, full.records
    met = records.groupby("attack")["sample"].nunique()
    assert met["PGD-10-un"] == 48 and met["SPGD[kd]"] < 48  # PGD already took some samples past KD at L-inf 0.3
    for budget in (Budget("linf", 0.1), Budget("linf", 0.3)):
        for detector in (None, "kd", "max-prob"):
            cascade_value = _survival(records, budget, detector)
            assert _survival(everything, budget, detector) <= cascade_value
            if detector is not None:  # never above what the first attack and those run for the cell give
                run_for = {f"SPGD[{detector}]@Linf 0.1"} | ({f"SPGD[{detector}]"} if budget.eps == 0.3 else set())
                own = everything[everything["attack"].isin({"PGD-10-un"} | run_for)]
                assert cascade_value <= _survival(own, budget, detector)
    passes = {mode: sum(r.info["image_passes"].values()) for mode, r in white_box_full_and_undetected.items()}
    assert passes["undetected"] < passes["none"]
    # at L-inf 0.3 PGD's outputs already evade max-prob on many samples; inside 0.1 hardly any sample is broken
    assert met["SPGD[max-prob]"] < met["SPGD[max-prob]@Linf 0.1"]
