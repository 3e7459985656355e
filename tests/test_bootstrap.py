"""Bootstrap intervals: the weighted (count-matrix) metrics equal robench.scoring.metrics on the explicit resample."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from robench.core.errors import ConfigError
from robench.report.bootstrap import bootstrap_intervals, group_metrics
from robench.scoring.metrics import metric_names, resample_counts, summarize
from test_rundir import synthetic_records

KEY = ["model", "threat", "attack", "detector"]


def _with_summary(records: pd.DataFrame, **kwargs) -> pd.DataFrame:
    return summarize(records).merge(bootstrap_intervals(records, **kwargs), on=[*KEY, "n"], validate="one_to_one")


def test_one_row_per_summary_row_and_point_inside_interval() -> None:
    records = synthetic_records(n=300, attacks=("FGSM", "BIM", "PGD-10-un"))
    table = _with_summary(records, n_resamples=400)
    assert len(table) == len(summarize(records)) == 8  # 3 attacks and their worst case, x 2 detectors
    for metric in metric_names():
        if metric.startswith("median_"):
            # a percentile interval of a median need not hold the point estimate; NaN on the worst-case rows
            defined = table[table[metric].notna()]
            assert (defined[f"{metric}_low"] <= defined[f"{metric}_high"]).all(), metric
            continue
        assert (table[f"{metric}_low"] <= table[metric]).all() and (table[metric] <= table[f"{metric}_high"]).all(), (
            metric
        )
        assert (table[f"{metric}_low"] < table[f"{metric}_high"]).all(), metric
    assert table[["auc_roc_low", "auc_roc_high"]].stack().between(0, 1).all()


def test_width_shrinks_with_more_samples() -> None:
    def width(n: int) -> pd.Series:
        table = bootstrap_intervals(synthetic_records(n=n, attacks=("PGD-10-un",), detectors=("kd",)), n_resamples=500)
        return (
            table[[f"{m}_high" for m in metric_names()]].to_numpy()
            - table[[f"{m}_low" for m in metric_names()]].to_numpy()
        )[0]

    small, large = width(100), width(1600)
    assert (large < small / 2).all()  # ~ 1/sqrt(n): a quarter, with room for noise


def test_seeded_and_reproducible() -> None:
    records = synthetic_records(n=100)
    first, again = (
        bootstrap_intervals(records, n_resamples=200, seed=3),
        bootstrap_intervals(records, n_resamples=200, seed=3),
    )
    pd.testing.assert_frame_equal(first, again)
    other = bootstrap_intervals(records, n_resamples=200, seed=4)
    assert not np.allclose(first["auc_roc_low"], other["auc_roc_low"])
    # A group's interval does not depend on which other groups are in the records.
    alone = bootstrap_intervals(records[records["attack"] == "FGSM"], n_resamples=200, seed=3)
    pd.testing.assert_frame_equal(alone, first[first["attack"] == "FGSM"].reset_index(drop=True))


def test_weighted_metrics_equal_the_metrics_of_the_expanded_resample() -> None:
    group = synthetic_records(n=120, attacks=("BIM",))
    counts = resample_counts(len(group), 5, np.random.default_rng(0))
    values = group_metrics(group, np.vstack([np.ones((1, len(group))), counts]))
    rows = [np.ones(len(group), dtype=int), *counts.astype(int)]
    for b, row in enumerate(rows):
        expanded = group.iloc[np.repeat(np.arange(len(group)), row)]
        expected = summarize(expanded).set_index("detector")
        for detector, metrics in values.items():
            for metric in metric_names():
                assert metrics[metric][b] == pytest.approx(expected.loc[detector, metric], abs=1e-12), (
                    b,
                    detector,
                    metric,
                )


def test_point_auc_matches_sklearn_with_ties() -> None:
    group = synthetic_records(n=150, attacks=("C&W",), detectors=("max-prob",))
    auc = group_metrics(group, np.ones((1, len(group))))["max-prob"]["auc_roc"][0]
    correct = group["clean_pred"] == group["label"]
    clean = group.loc[correct, "score_clean:max-prob"].to_numpy(float)
    adversarial = group.loc[correct & group["success"], "score_adv:max-prob"].to_numpy(float)
    assert len(np.unique(np.r_[clean, adversarial])) < len(clean) + len(adversarial)  # ties are exercised
    expected = roc_auc_score(np.r_[np.ones(len(clean)), np.zeros(len(adversarial))], np.r_[clean, adversarial])
    assert auc == pytest.approx(expected, abs=1e-12)


def test_nan_metrics_give_nan_intervals() -> None:
    records = synthetic_records(n=80, attacks=("FGSM",), robust=1.0)
    records["success"] = False  # no successful attack: distortion and AUC are undefined
    records["adv_pred"] = records["label"]
    table = bootstrap_intervals(records, n_resamples=50)
    assert table[["distortion_low", "distortion_high", "auc_roc_low", "auc_roc_high"]].isna().all().all()
    assert table["robust_accuracy_low"].notna().all()
    noise = bootstrap_intervals(synthetic_records(n=80, attacks=("noise-0.05",), corruption=True), n_resamples=50)
    assert noise["auc_roc_low"].isna().all() and noise["flagged_rate_low"].notna().all()


def test_no_detectors_gives_dash_rows() -> None:
    table = bootstrap_intervals(synthetic_records(n=40, detectors=()), n_resamples=20)
    assert (
        list(table["detector"]) == ["-", "-", "-"] and table["flagged_rate_low"].isna().all()
    )  # 2 attacks and their worst case


@pytest.mark.parametrize("kwargs", [{"n_resamples": 0}, {"level": 1.0}, {"level": 0.0}])
def test_bad_settings_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        bootstrap_intervals(synthetic_records(n=10), **kwargs)


def test_fast_enough() -> None:
    records = synthetic_records(
        n=300, attacks=tuple(f"attack-{i}" for i in range(10)), detectors=("kd", "bu", "max-prob")
    )
    tic = time.perf_counter()
    table = bootstrap_intervals(records, n_resamples=1000)
    assert len(table) == 33  # 10 attacks and their worst case, x 3 detectors
    assert time.perf_counter() - tic < 6.0  # ~1 s on one core; generous for a shared machine
