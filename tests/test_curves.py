"""Robustness curves (robench.scoring.curves): smallest distances per sample; curves that agree with the worst case."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from robench.core.errors import ConfigError
from robench.scoring import records as R
from robench.scoring.budgets import Budget, format_budgets
from robench.scoring.curves import (
    BEST_ATTACK,
    DETECTOR,
    DISTANCE,
    DISTANCE_COLUMNS,
    NORM,
    ROBUST_ACCURACY,
    clean_thresholds,
    curve_groups,
    eps_grid,
    median_distance,
    robustness_curve,
    smallest_distances,
)
from robench.scoring.metrics import summarize
from robench.scoring.worst_case import worst_case_label

BUDGETS = (Budget("linf", 0.1), Budget("linf", 0.3), Budget("l2", 2.0))


def attack(
    name: str,
    order: int,
    adv_pred,
    linf,
    l2,
    *,
    label=(0, 0, 0, 0),
    clean_pred=(0, 0, 0, 0),
    samples=None,
    scores=None,
    budgets=BUDGETS,
    model: str = "m",
    threat: str = "white-box",
) -> pd.DataFrame:
    n = len(adv_pred)
    samples = np.arange(n) if samples is None else np.asarray(samples)
    label, clean_pred = np.asarray(label)[samples], np.asarray(clean_pred)[samples]
    adv_pred = np.asarray(adv_pred)
    frame = pd.DataFrame(
        {
            R.MODEL: model, R.THREAT: threat, R.ATTACK: name, R.CORRUPTION: False, R.CRAFTED_ON: model,
            R.SAMPLE: samples, R.LABEL: label, R.TARGET: -1, R.CLEAN_PRED: clean_pred, R.ADV_PRED: adv_pred,
            R.SUCCESS: (clean_pred == label) & (adv_pred != label), R.BEST_ATTEMPT: False, R.CRAFTED_SUCCESS: False,
            R.L2: np.asarray(l2, dtype=float), R.LINF: np.asarray(linf, dtype=float),
            R.DISTORTION: np.asarray(l2, dtype=float) / 28, R.INPUT_RANGE: 1.0, R.IMAGE_PASSES: 10.0,
            R.ORDER: order, R.CASCADE: R.NO_CASCADE, R.BUDGETS: format_budgets(budgets),
        }
    )  # fmt: skip
    for detector, (clean, adv) in (scores or {}).items():
        frame[R.score_clean(detector)] = np.asarray(clean, dtype=float)[samples]
        frame[R.score_adv(detector)] = np.asarray(adv, dtype=float)
    return frame


def two_attacks() -> pd.DataFrame:
    """Sample 0: FGSM breaks it at Linf 0.3, PGD at 0.1; 1: only PGD at 0.3 (L2 3); 2: nothing; 3: clean-wrong."""
    fgsm = attack("FGSM", 0, [1, 0, 0, 1], [0.3, 0.3, 0.3, 0.3], [1.0, 1.0, 1.0, 1.0], clean_pred=(0, 0, 0, 1))
    pgd = attack("PGD", 1, [1, 2, 0, 1], [0.1, 0.3, 0.2, 0.2], [1.5, 3.0, 1.0, 1.0], clean_pred=(0, 0, 0, 1))
    return pd.concat([fgsm, pgd], ignore_index=True)


def test_smallest_distances_per_sample_norm_and_the_attack_that_reached_it():
    distances = smallest_distances(two_attacks())
    assert tuple(distances.columns) == DISTANCE_COLUMNS
    linf = distances[(distances[NORM] == "linf") & (distances[DETECTOR] == "-")].set_index(R.SAMPLE)
    assert linf[DISTANCE].tolist() == [0.1, 0.3, np.inf, 0.0]
    assert linf[BEST_ATTACK].tolist() == ["PGD", "PGD", "", ""]
    l2 = distances[distances[NORM] == "l2"].set_index(R.SAMPLE)
    assert l2[DISTANCE].tolist() == [1.0, 3.0, np.inf, 0.0] and l2[BEST_ATTACK].tolist() == ["FGSM", "PGD", "", ""]
    assert set(distances[NORM]) == {"linf", "l2"}


def test_ties_go_to_the_first_attack_in_cascade_order_and_nan_distances_never_break():
    first = attack("cheap", 0, [1, 1, 0, 0], [0.2, np.nan, 0, 0], [1, 1, 0, 0])
    second = attack("dear", 1, [1, 1, 0, 0], [0.2, 0.4, 0, 0], [1, 1, 0, 0])
    linf = smallest_distances(pd.concat([second, first], ignore_index=True))  # row order is not cascade order
    linf = linf[linf[NORM] == "linf"].set_index(R.SAMPLE)
    assert linf.loc[0, BEST_ATTACK] == "cheap" and linf.loc[1, BEST_ATTACK] == "dear" and linf.loc[1, DISTANCE] == 0.4


def test_records_without_budgets_get_both_norms_and_corruptions_and_worst_case_rows_are_left_out():
    plain = attack("FGSM", 0, [1, 0, 0, 0], [0.3] * 4, [1.0] * 4, budgets=())
    noise = attack("noise", 1, [1, 1, 1, 1], [0.01] * 4, [0.1] * 4, budgets=()).assign(**{R.CORRUPTION: True})
    derived = plain.assign(**{R.ATTACK: "worst-case Linf 0.3", R.LINF: 0.0})
    distances = smallest_distances(pd.concat([plain, noise, derived], ignore_index=True))
    assert set(distances[NORM]) == {"linf", "l2"}
    assert distances.loc[distances[NORM] == "linf", DISTANCE].tolist() == [0.3, np.inf, np.inf, np.inf]
    only_linf = smallest_distances(attack("FGSM", 0, [1, 0, 0, 0], [0.3] * 4, [1.0] * 4, budgets=BUDGETS[:1]))
    assert set(only_linf[NORM]) == {"linf"}
    empty = smallest_distances(noise)
    assert empty.empty and tuple(empty.columns) == DISTANCE_COLUMNS


def random_run(seed: int, n: int = 200, attacks: int = 3, scores: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 10, n)
    clean_pred = np.where(rng.random(n) < 0.85, label, (label + 1) % 10)
    clean_score = rng.normal(1.5, 1.0, n)
    parts = []
    for i in range(attacks):
        broken = rng.random(n) < 0.6
        adv_pred = np.where(broken, (label + 1 + i) % 10, clean_pred)
        linf = np.round(rng.uniform(0.0, 0.5, n), 2)  # ties with the budgets and between attacks
        linf[rng.random(n) < 0.1] = 0.3 * (1 + 5e-5)  # inside the budget's float tolerance
        l2 = rng.uniform(0.0, 4.0, n)
        adv_score = rng.normal(0.5, 1.0, n)
        parts.append(
            attack(
                f"A{i}", i, adv_pred, linf, l2, label=label, clean_pred=clean_pred,
                scores={"kd": (clean_score, adv_score), "bu": (clean_score[::-1], -adv_score)} if scores else None,
            )
        )  # fmt: skip
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_curve_at_a_budget_is_clean_accuracy_times_the_worst_case_survival(seed):
    records = random_run(seed)
    summary = summarize(records)
    distances = smallest_distances(records)
    n = records[R.SAMPLE].nunique()
    for key, group in curve_groups(distances):
        for budget in (b for b in BUDGETS if b.norm == key[NORM]):
            curve = robustness_curve(group, [budget.eps], resamples=0)
            value = float(curve[ROBUST_ACCURACY].iloc[0])
            rows = summary[summary[R.ATTACK] == worst_case_label(budget)]
            if key[DETECTOR] == "-":
                row = rows.iloc[0]
                expected = row["clean_accuracy"] * row["survival"]
                survivors = row["survival"] * row["clean_accuracy"] * n
            else:
                row = rows[rows["detector"] == key[DETECTOR]].iloc[0]
                expected = row["clean_accuracy"] * row["survival_detected"]
                survivors = row["survival_detected"] * row["clean_accuracy"] * n
            # the same samples survive: equal counts, and the same fraction up to the product's rounding
            assert round(value * n) == round(survivors), (key, budget)
            assert value == pytest.approx(expected, abs=1e-12), (key, budget)


def test_the_detector_threshold_is_the_clean_five_percent_rule():
    records = random_run(3)
    clean = records.drop_duplicates(R.SAMPLE)[R.score_clean("kd")].to_numpy()
    assert clean_thresholds(records, ["kd"])["kd"] == np.sort(clean)[int(np.floor(0.05 * len(clean)))]


def test_bands_are_seeded_vectorised_and_hold_the_point():
    records = random_run(4, scores=False)
    distances = smallest_distances(records)
    group = distances[(distances[NORM] == "linf") & (distances[DETECTOR] == "-")]
    grid = eps_grid(group, BUDGETS[:2])
    assert {0.0, 0.1, 0.3} <= set(grid) and np.all(np.diff(grid) > 0)
    curve = robustness_curve(group, grid, resamples=300, seed=7)
    again = robustness_curve(group, grid, resamples=300, seed=7)
    pd.testing.assert_frame_equal(curve, again)
    assert (curve["low"] <= curve[ROBUST_ACCURACY] + 1e-12).all() and (
        curve[ROBUST_ACCURACY] <= curve["high"] + 1e-12
    ).all()
    assert np.all(np.diff(curve[ROBUST_ACCURACY]) <= 0)  # more budget, never more accuracy
    assert curve[ROBUST_ACCURACY].iloc[0] <= group["clean_correct"].mean()
    assert robustness_curve(group, grid, resamples=0)[["low", "high"]].isna().all().all()
    with pytest.raises(ConfigError, match="one norm"):
        robustness_curve(distances[distances[DETECTOR] == "-"], grid)
    with pytest.raises(ConfigError, match="resamples"):
        robustness_curve(group, grid, resamples=-1)


def test_median_distance_over_the_clean_correct_samples():
    distances = smallest_distances(two_attacks())
    linf = distances[(distances[NORM] == "linf") & (distances[DETECTOR] == "-")]
    assert median_distance(linf) == 0.3  # 0.1, 0.3, inf: the clean-wrong sample's 0 does not count
    broken_once = linf.assign(**{DISTANCE: [0.1, np.inf, np.inf, 0.0]})
    assert np.isnan(median_distance(broken_once))


def test_detector_aware_distances_skip_flagged_outputs():
    # kd clean scores 0..3 (threshold at 5% of 4 samples: the smallest, 0.0): an output scored below 0 is flagged
    clean = [0.0, 1.0, 2.0, 3.0]
    fgsm = attack("FGSM", 0, [1, 1, 0, 0], [0.1, 0.1, 0, 0], [1, 1, 0, 0], scores={"kd": (clean, [-1.0, 0.5, 0, 0])})
    pgd = attack("PGD", 1, [1, 1, 0, 0], [0.2, 0.2, 0, 0], [1, 1, 0, 0], scores={"kd": (clean, [0.5, -1.0, 0, 0])})
    distances = smallest_distances(pd.concat([fgsm, pgd], ignore_index=True))
    kd = distances[(distances[NORM] == "linf") & (distances[DETECTOR] == "kd")].set_index(R.SAMPLE)
    assert kd[DISTANCE].tolist()[:2] == [0.2, 0.1] and kd[BEST_ATTACK].tolist()[:2] == ["PGD", "FGSM"]
    plain = distances[(distances[NORM] == "linf") & (distances[DETECTOR] == "-")].set_index(R.SAMPLE)
    assert plain[DISTANCE].tolist()[:2] == [0.1, 0.1]


def test_distances_parquet_and_the_report_tables(tmp_path):
    from click.testing import CliRunner

    from robench.cli.report import report
    from robench.runs.output import write_run

    records = random_run(5, n=60)
    write_run(tmp_path / "run", records, summarize(records), {"model": {"name": "m"}})
    written = pd.read_parquet(tmp_path / "run" / "distances.parquet")
    pd.testing.assert_frame_equal(written, smallest_distances(records), check_dtype=False)
    runner = CliRunner()
    done = runner.invoke(report, [str(tmp_path / "run"), "--format", "markdown"])
    assert done.exit_code == 0, done.output
    assert "**Robustness curves at the budgets" in done.stdout and "**Attack audit" in done.stdout
    assert "| Robust Acc. (%) / Linf 0.1" in done.stdout and "Linf / Optimality" in done.stdout
    done = runner.invoke(report, [str(tmp_path / "run"), "--layout", "curves", "--format", "csv", "--ci"])
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Model,Threat,Detector,Robust Acc. (%) / Linf 0.1") and len(lines) == 4  # -, bu, kd
    assert re.search(r'"\d+\.\d \[\d+\.\d, \d+\.\d\]"', lines[1])
    done = runner.invoke(report, [str(tmp_path / "run"), "--layout", "audit", "--format", "latex", "--standalone"])
    assert done.exit_code == 0, done.output
    assert "\\label{tab:robench-audit}" in done.stdout and "tab:robench-curves" not in done.stdout
