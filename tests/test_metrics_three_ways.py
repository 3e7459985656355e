"""Every metric computed three ways on the same synthetic records: summary, bootstrap point, figure.

The summary (``metrics.summarize``), the bootstrap's all-ones row (``bootstrap.group_metrics``) and,
for AUC-ROC, the trapezoidal area under the ROC points the figures draw (``metrics.roc_points``)
must agree: they are one implementation, and this test fails the day one of them forks.
"""

from __future__ import annotations

import numpy as np
import pytest

from robench.report.bootstrap import bootstrap_intervals, group_metrics
from robench.scoring import records as R
from robench.scoring.metrics import METRICS, metric_names, roc_points, summarize
from test_rundir import synthetic_records


@pytest.fixture(params=[False, True], ids=["attack", "corruption"])
def records(request):
    frame = synthetic_records(n=150, attacks=("FGSM", "PGD-10-un"), seed=3, corruption=request.param)
    # ties and a NaN score: the populations must drop the same rows everywhere
    frame.loc[frame.index[:20], R.score_adv("kd")] = frame[R.score_clean("kd")].iloc[:20].to_numpy()
    frame.loc[frame.index[5], R.score_clean("max-prob")] = np.nan
    return frame


def test_summary_equals_bootstrap_point_and_figure(records):
    summary = summarize(records)
    for key, group in R.groups(records):
        point = group_metrics(group, np.ones((1, len(group))))
        rows = summary[(summary[list(key)] == list(key.values())).all(axis=1)]
        for _, row in rows.iterrows():
            for metric in metric_names():
                a, b = row[metric], point[row["detector"]][metric][0]
                assert (np.isnan(a) and np.isnan(b)) or a == b, (key, row["detector"], metric)
            if row["detector"] == "-":
                continue
            points = roc_points(group, row["detector"])
            if R.is_corruption(group):
                assert np.isnan(row["auc_roc"])
            else:
                assert points is not None
                assert np.trapezoid(points[1], points[0]) == pytest.approx(row["auc_roc"], abs=1e-12)


def test_metric_point_equals_summary(records):
    summary = summarize(records)
    for key, group in R.groups(records):
        for detector in R.detectors_in(group):
            row = summary[(summary[R.ATTACK] == key[R.ATTACK]) & (summary["detector"] == detector)].iloc[0]
            for metric in metric_names():
                value = METRICS.get(metric).point(group, detector)
                assert (np.isnan(value) and np.isnan(row[metric])) or value == row[metric]


def test_bootstrap_interval_contains_point(records):
    summary = summarize(records)
    intervals = bootstrap_intervals(records, n_resamples=200, seed=1)
    merged = summary.merge(intervals, on=[*R.KEYS, "detector", "n"])
    for metric in metric_names():
        finite = merged[metric].notna()
        low, high = merged.loc[finite, f"{metric}_low"], merged.loc[finite, f"{metric}_high"]
        assert (low <= merged.loc[finite, metric] + 1e-12).all() and (
            merged.loc[finite, metric] <= high + 1e-12
        ).all(), metric
