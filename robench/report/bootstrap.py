"""Percentile-bootstrap confidence intervals for every summary metric, vectorised over resamples.

Each model x threat x attack group is resampled over its samples (rows) with
replacement; one resample serves all metrics and detectors of the group, so the
intervals of related metrics come from the same draws. A resample is stored as
a count matrix (resamples x samples: how often each sample was drawn), which
turns every metric of ``robench.scoring.metrics`` into weighted sums:

- accuracies and rates are count-weighted means;
- AUC-ROC is the Mann-Whitney U statistic (ties count one half) with each
  clean/adversarial pair weighted by the product of the two samples' counts,
  computed from cumulative counts over the sorted adversarial scores (equal to
  ``sklearn.metrics.roc_auc_score`` on the expanded resample);
- flagged_rate uses the k-th smallest resampled clean score as threshold,
  k = floor(0.05 m) as in ``robench.detectors.base.threshold_at_fpr``.

The interval is the (1 - level)/2 and (1 + level)/2 quantiles of the resampled
values (Efron & Tibshirani 1993, ch. 13), ignoring resamples where a metric is
undefined (e.g. no successful attack drawn); it is NaN where the metric itself is.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from robench.core.errors import ConfigError
from robench.scoring import records as R
from robench.scoring.metrics import (
    COUNT,
    DETECTOR,
    SUMMARY_KEYS,
    Weighted,
    evaluate,
    group_seed,
    metric_names,
    resample_counts,
)
from robench.scoring.worst_case import with_worst_case


def interval_columns() -> list[str]:
    """The output columns of :func:`bootstrap_intervals`."""
    return [*SUMMARY_KEYS, DETECTOR, COUNT, *(f"{m}_{side}" for m in metric_names() for side in ("low", "high"))]


def group_metrics(group: pd.DataFrame, counts: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Every summary metric of one group for each row of ``counts`` (weights of its rows): ``metrics.evaluate``.

    Returns detector ("-" when none) -> metric -> values, one per row of ``counts``.
    """
    return evaluate(Weighted(group, counts))


def bootstrap_intervals(
    records: pd.DataFrame, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Percentile-bootstrap intervals of every summary metric, one row per model x threat x attack x detector.

    Columns: model, threat, attack, detector, n, then ``{metric}_low`` and
    ``{metric}_high`` for each metric of ``robench.scoring.metrics.summarize``.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ConfigError(f"the number of bootstrap resamples must be a positive integer, got {n_resamples!r}")
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ConfigError(f"the confidence level must be strictly between 0 and 1, got {level!r}")
    quantiles = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    rows = []
    for key, group in R.groups(with_worst_case(records)):  # the worst-case rows resampled like the others
        group = R.scored_columns(group)
        rng = np.random.default_rng(group_seed(seed, *key.values()))
        # Row 0 is the full sample (all counts 1): the point estimate decides whether the interval is NaN.
        counts = np.vstack([np.ones((1, len(group))), resample_counts(len(group), int(n_resamples), rng)])
        for detector, values in group_metrics(group, counts).items():
            row = {**key, DETECTOR: detector, COUNT: int(len(group))}
            for metric in metric_names():
                point, draws = values[metric][0], values[metric][1:]
                low, high = (
                    (math.nan, math.nan)
                    if not np.isfinite(point) or not np.isfinite(draws).any()
                    else np.nanquantile(draws, quantiles)
                )
                row[f"{metric}_low"], row[f"{metric}_high"] = float(low), float(high)
            rows.append(row)
    return pd.DataFrame(rows, columns=interval_columns())
