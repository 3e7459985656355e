"""Budgets as data: parsing, the ball with its tolerance, a threat's budgets per family, the worst case at each budget,
and the budget-aware cascade."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robench.core.errors import ConfigError
from robench.scoring import records as R
from robench.scoring.budgets import ATOL, RTOL, Budget, budgets_of, format_budgets, parse_budget, parse_budgets
from robench.scoring.cascade import Aim, still_in
from robench.scoring.metrics import DETECTOR, metric_value, summarize
from robench.scoring.worst_case import budget_of, is_worst_case, worst_case_label, worst_case_records
from robench.specs import budgets as B
from robench.specs.run_config import RunConfig
from robench.specs.threat_files import parse_threat_file
from robench.specs.threats import THREATS, AttackSpec
from test_cli import assert_one_line_error
from test_cli import run as run_cli

ROOT = Path(__file__).resolve().parents[1]
SOFTMAX = ROOT / "reports" / "regression" / "models" / "softmax.pt"


# -- parsing and the ball ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "norm", "eps"),
    [("linf:0.3", "linf", 0.3), ("L2:2", "l2", 2.0), ("Linf:8/255", "linf", 8 / 255), ("l-inf:0", "linf", 0.0)],
)
def test_parse_budget(text, norm, eps):
    budget = parse_budget(text)
    assert (budget.norm, budget.eps) == (norm, eps)
    assert parse_budget(budget.spec) == budget  # the record column's text reads back exactly


@pytest.mark.parametrize("text", ["0.3", "l1:0.3", "linf:", "linf:abc", "linf:-0.1", "linf:nan", "linf:inf", "l2:1/0"])
def test_bad_budgets_are_one_line_errors(text):
    with pytest.raises(ConfigError) as info:
        parse_budget(text)
    assert "\n" not in str(info.value)


def test_ball_tolerance_is_relative_plus_absolute():
    b = Budget("linf", 0.3)
    edge = 0.3 * (1 + RTOL) + ATOL
    inside = b.contains(np.array([0.0, 0.3, np.nextafter(edge, 0), edge, np.nextafter(edge, 1), np.nan, np.inf]))
    assert inside.tolist() == [True, True, True, True, False, False, False]
    assert Budget("l2", 0.0).contains(np.array([0.0, 1e-8, 1e-6])).tolist() == [True, True, False]


def test_an_attack_is_at_a_budget_only_at_its_eps():
    """One rule for the worst case's flags, the per-budget copies and the cascade: the same eps up to a float's
    round trip, far tighter than the ball's tolerance for distances."""
    budget = Budget("linf", 0.1)
    assert budget.is_at(0.1) and budget.is_at(0.1 + 1e-13)
    assert not budget.is_at(0.1 * (1 + RTOL / 2)) and not budget.is_at(math.nan) and not budget.is_at(0.3)
    assert list(budget.is_at(np.array([0.1, 0.2, math.nan]))) == [True, False, False]


def test_budgets_sorted_without_repeats_and_carried_by_records():
    budgets = parse_budgets(["l2:2", "linf:0.3", "linf:0.1", "linf:0.3"])
    assert [b.label for b in budgets] == ["Linf 0.1", "Linf 0.3", "L2 2"]
    frame = pd.DataFrame({R.BUDGETS: [format_budgets(budgets), "linf:0.2"]})
    assert [b.label for b in budgets_of(frame)] == ["Linf 0.1", "Linf 0.2", "Linf 0.3", "L2 2"]
    assert budgets_of(frame.drop(columns=R.BUDGETS)) == ()


def test_worst_case_labels_round_trip():
    for budget in (Budget("linf", 8 / 255), Budget("l2", 0.5), Budget("linf", 0.3)):
        label = worst_case_label(budget)
        assert is_worst_case(label) and budget_of(label) == Budget(budget.norm, float(f"{budget.eps:g}"))
    assert not is_worst_case("worst-casey") and budget_of("PGD") is None


# -- a threat's budgets --------------------------------------------------------------------------------------------


def test_threat_budgets_follow_its_attacks_norms_and_the_family():
    white = THREATS.get("white-box")
    labels = [b.label for b in white.budgets_for("mnist")]
    assert labels == ["Linf 0.1", "Linf 0.2", "Linf 0.3", "L2 1", "L2 2"]  # C&W is L2, PGD / APGD L-inf
    assert [b.label for b in THREATS.get("semi-white-box").budgets_for("mnist")][:3] == [
        "Linf 0.1",
        "Linf 0.2",
        "Linf 0.3",
    ]
    assert [b.label for b in THREATS.get("spsa").budgets_for("mnist")] == ["Linf 0.3"]  # its own: 004 Table 3's one
    assert [b.spec for b in THREATS.get("white-box").budgets_for("cifar10")] == [
        f"linf:{8 / 255!r}",
        f"linf:{16 / 255!r}",
        "l2:0.5",
    ]
    assert THREATS.get("noise").budgets_for("mnist") == ()  # a corruption has no ball
    assert THREATS.get("white-box").budgets_for("unknown-family") == ()
    # the run's own budgets win, for any attack threat
    assert [b.label for b in THREATS.get("spsa").budgets_for("mnist", ("l2:1.5",))] == ["L2 1.5"]
    assert THREATS.get("rotation").budgets_for("mnist", ("l2:1.5",)) == ()
    only_linf = white.only(["PGD-10-un", "APGD-CE"])
    assert {b.norm for b in only_linf.budgets_for("mnist")} == {"linf"}


def test_per_budget_attacks_run_at_every_other_budget_of_their_norm():
    white = THREATS.get("white-box").with_overrides({"APGD-CE.steps": 7})
    expanded = white.at_budgets("mnist")
    added = {s.label: s for s in expanded.attacks if s.label not in white.labels()}
    assert set(added) == {
        "APGD-CE@Linf 0.1",
        "APGD-CE@Linf 0.2",
        "APGD-DLR@Linf 0.1",
        "APGD-DLR@Linf 0.2",
        "SPGD@Linf 0.1",
        "SPGD@Linf 0.2",
        "SPGD-L2@L2 1",
    }
    assert added["APGD-CE@Linf 0.1"].params == {"objective": "adaptive", "steps": 7, "eps": 0.1}  # overrides kept
    assert added["APGD-CE@Linf 0.1"].build("mnist").eps == 0.1
    # the run's budgets decide; an attack already at the budget is not copied
    assert {s.label for s in white.at_budgets("mnist", ("linf:0.3", "l2:2")).attacks} == set(white.labels())
    assert THREATS.get("spsa").at_budgets("mnist").labels() == THREATS.get("spsa").labels()


def test_nominal_budgets_are_cited_in_the_module():
    doc = B.__doc__ or ""
    for family, budgets in B.NOMINAL.items():
        assert budgets, family
    for fragment in ("001 Sec. 4.4.1", "004 Fig. 3", "004 Sec. 4.3", "RobustBench"):
        assert fragment in doc


def test_threat_file_budgets(tmp_path):
    path = tmp_path / "tight.toml"
    path.write_text(
        'name = "tight"\naccess = "grey-box"\n[budgets]\nmnist = ["linf:0.05", "linf:0.15"]\n'
        '[[attack]]\nlabel = "P"\nattack = "pgd"\n[[attack]]\nlabel = "F"\nattack = "fgsm"\n'
    )
    threat = parse_threat_file(path)
    assert [b.label for b in threat.budgets_for("mnist")] == ["Linf 0.05", "Linf 0.15"]
    assert [b.label for b in threat.budgets_for("cifar10")] == ["Linf 0.0313725", "Linf 0.0627451"]
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "bad"\naccess = "grey-box"\n[budgets]\nmnist = ["l3:0.05"]\n[[attack]]\nlabel = "P"\nattack = "pgd"\n'
    )
    with pytest.raises(ConfigError, match="l3"):
        parse_threat_file(bad)


def test_reserved_worst_case_labels():
    with pytest.raises(ConfigError, match="reserved"):
        AttackSpec("worst-case Linf 0.3", "pgd")


def test_run_config_budgets_are_checked_and_normalised():
    config = RunConfig(model=SOFTMAX, threat="white-box", budgets=("linf:8/255", "linf:8/255", "l2:2"))
    assert config.budgets == (f"linf:{8 / 255!r}", "l2:2.0")
    with pytest.raises(ConfigError):
        RunConfig(model=SOFTMAX, threat="white-box", budgets=("linf",))
    with pytest.raises(ConfigError):
        RunConfig(model=SOFTMAX, threat="white-box", budgets="linf:0.3")


def test_cli_bad_budget_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(
        capsys,
        "run",
        "--model",
        str(SOFTMAX),
        "--threat",
        "spsa",
        "--budget",
        "linf:lots",
        "--out",
        str(tmp_path / "x"),
    )
    assert_one_line_error(code, err, "linf:lots")


# -- the worst case at each budget ---------------------------------------------------------------------------------


def _records(rows, budgets: str) -> pd.DataFrame:
    """(attack, order, sample, label, clean_pred, adv_pred, l2, linf, kd score of the output); clean kd = 1.0."""
    frame = pd.DataFrame(
        rows, columns=["attack", "order", "sample", "label", "clean_pred", "adv_pred", "l2", "linf", "kd"]
    )
    return pd.DataFrame(
        {
            R.MODEL: "m",
            R.THREAT: "t",
            R.ATTACK: frame["attack"],
            R.CORRUPTION: False,
            R.CRAFTED_ON: "m",
            R.SAMPLE: frame["sample"],
            R.LABEL: frame["label"],
            R.TARGET: -1,
            R.CLEAN_PRED: frame["clean_pred"],
            R.ADV_PRED: frame["adv_pred"],
            R.SUCCESS: (frame["adv_pred"] != frame["label"]) & (frame["clean_pred"] == frame["label"]),
            R.BEST_ATTEMPT: False,
            R.CRAFTED_SUCCESS: False,
            R.L2: frame["l2"],
            R.LINF: frame["linf"],
            R.DISTORTION: frame["l2"] / 28,
            R.INPUT_RANGE: 1.0,
            R.IMAGE_PASSES: 1.0,
            R.ORDER: frame["order"],
            R.CASCADE: "none",
            R.BUDGETS: budgets,
            R.score_clean("kd"): 1.0 + frame["sample"] / 100,
            R.score_adv("kd"): frame["kd"],
        }
    )


ROWS = [
    # sample 0: an unbounded L2 attack breaks it far away (L-inf 0.9, L2 5); the L-inf attack does not
    ("CW", 1, 0, 1, 1, 2, 5.0, 0.9, 2.0),
    ("PGD", 0, 0, 1, 1, 1, 3.0, 0.3, 2.0),
    # sample 1: PGD breaks it at L-inf 0.1 (L2 1.5), unflagged; CW too, closer in L2, flagged
    ("CW", 1, 1, 3, 3, 4, 0.8, 0.4, -5.0),
    ("PGD", 0, 1, 3, 3, 5, 1.5, 0.1, 2.0),
    # sample 2: nothing breaks it
    ("CW", 1, 2, 0, 0, 0, 0.0, 0.0, 2.0),
    ("PGD", 0, 2, 0, 0, 0, 2.0, 0.3, 2.0),
    # sample 3: PGD breaks it at L-inf 0.3 + float round-off
    ("CW", 1, 3, 2, 2, 2, 0.0, 0.0, 2.0),
    ("PGD", 0, 3, 2, 2, 7, 2.5, 0.3 * (1 + 1e-6), 2.0),
]


def test_an_output_counts_only_inside_the_ball_whatever_its_attack():
    records = _records(ROWS, "linf:0.1;linf:0.3;l2:1.0;l2:2.0")
    derived = worst_case_records(records)
    by = {
        (label, s): b for label, s, b in derived[[R.ATTACK, R.SAMPLE, R.BROKEN_BY]].itertuples(index=False, name=None)
    }
    survival = {label: metric_value("survival", group) for label, group in derived.groupby(R.ATTACK, sort=False)}
    assert survival == {
        "worst-case Linf 0.1": 3 / 4,  # sample 1 only
        "worst-case Linf 0.3": 2 / 4,  # samples 1, 3 (within the tolerance); sample 0's CW output lies at 0.9
        "worst-case L2 1": 3 / 4,  # sample 1 by CW (L2 0.8), the first in the ball although PGD comes first in order
        "worst-case L2 2": 3 / 4,  # sample 1 only: sample 0's outputs lie at L2 3 and 5
    }
    assert by[("worst-case Linf 0.1", 1)] == "PGD" and by[("worst-case L2 1", 1)] == "CW"
    assert by[("worst-case Linf 0.3", 0)] == "" and by[("worst-case Linf 0.3", 3)] == "PGD"
    # detector-aware: in the L2 1 ball only CW's flagged output broke sample 1; in L2 2 PGD's unflagged one did
    rows = summarize(records)
    detected = rows[rows[DETECTOR] == "kd"].set_index(R.ATTACK)
    assert detected.loc["worst-case L2 1", "survival_detected"] == 1.0
    assert detected.loc["worst-case L2 2", "survival_detected"] == 3 / 4


def test_records_without_budgets_get_no_worst_case():
    records = _records(ROWS, "").drop(columns=R.BUDGETS)
    assert worst_case_records(records).empty
    assert not summarize(records)[R.ATTACK].map(is_worst_case).any()


def test_budget_aware_cascade_keeps_samples_broken_only_outside_the_ball():
    records = _records(ROWS, "linf:0.1;linf:0.3")
    samples = np.arange(4)
    budgets = budgets_of(records)
    every = Aim(tuple((b, None) for b in budgets))
    keep = still_in(records, samples, every, {})
    # sample 1 is broken in every ball (L-inf 0.1), sample 0 only far away, sample 3 only in the larger ball
    assert keep.tolist() == [True, False, True, True]
    # an attack aimed at the larger ball alone no longer meets sample 3, broken there
    assert still_in(records, samples, Aim(((budgets[1], None),)), {}).tolist() == [True, False, True, False]
    assert still_in(records, samples, Aim(((None, None),)), {}).tolist() == [False, False, True, False]  # no budget
    # with KD's cells: sample 1's output in the L-inf 0.1 ball is PGD's, unflagged (2.0 >= the clean threshold)
    threshold = {"kd": 1.0}
    cells = Aim(tuple((b, d) for b in budgets for d in (None, "kd")))
    assert still_in(records, samples, cells, threshold).tolist() == [True, False, True, True]
    # a corruption's outputs close no cell (the worst case leaves corruptions out too)
    # (sample 1, broken in every ball above, stays when only a corruption broke it)
    noisy = records.assign(**{R.CORRUPTION: True})
    assert still_in(pd.concat([records[records[R.SAMPLE] != 1], noisy]), samples, every, {}).tolist()[1]
    assert not still_in(
        pd.concat([records[records[R.SAMPLE] != 1], noisy.assign(**{R.CORRUPTION: False})]), samples, every, {}
    ).tolist()[1]
    # a detector the cascade cannot judge (fitted after the run): every clean-correct sample stays
    assert still_in(records, samples, Aim(every.cells, ("kd+bu",)), {}).tolist() == [True, True, True, True]


def test_median_distance_metrics():
    records = _records(ROWS, "linf:0.3")
    pgd = records[records[R.ATTACK] == "PGD"]
    # PGD misclassifies samples 1 (L2 1.5) and 3 (2.5) of 4 clean-correct: sorted [1.5, 2.5, inf, inf] -> 2.5
    assert metric_value("median_l2", pgd) == 2.5
    cw = records[records[R.ATTACK] == "CW"]
    # CW misclassifies samples 0 (L-inf 0.9) and 1 (0.4): [0.4, 0.9, inf, inf] -> 0.9
    assert math.isclose(metric_value("median_linf", cw), 0.9)
    assert math.isnan(metric_value("median_l2", pgd[pgd[R.SAMPLE].isin([0, 2])]))  # never broken: undefined


def test_budget_not_attacked_flag():
    from robench.runs.budget_checks import BUDGET_NOT_ATTACKED, budget_flags

    records = _records(ROWS, "linf:0.1;linf:0.3;l2:2.0").assign(
        **{
            R.ATTACK_NORM: lambda f: np.where(f[R.ATTACK] == "CW", "l2", "linf"),
            R.ATTACK_EPS: lambda f: np.where(f[R.ATTACK] == "CW", np.nan, 0.3),
        }
    )
    flags = {r.threat: r.flagged for r in budget_flags(records) if r.check == BUDGET_NOT_ATTACKED}
    # PGD ran at 0.3 only: the 0.1 ball got its outputs by chance; CW minimises L2: every L2 ball is attacked
    assert flags == {"t/worst-case Linf 0.1": True, "t/worst-case Linf 0.3": False, "t/worst-case L2 2": False}
    assert budget_flags(_records(ROWS, "linf:0.1")) == []  # records without the attacks' norm and eps: not judged
