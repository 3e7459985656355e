"""Percentile-bootstrap confidence intervals for every summary metric, vectorised over resamples.

Each model x threat x attack group is resampled over its samples (rows) with
replacement; one resample serves all metrics and detectors of the group, so the
intervals of related metrics come from the same draws. A resample is stored as
a count matrix (resamples x samples: how often each sample was drawn), which
turns every metric of ``robench.metrics`` into weighted sums:

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

import hashlib
import math

import numpy as np
import pandas as pd

from robench.errors import ConfigError
from robench.metrics import FLAG_FPR, SUMMARY_KEYS, detectors_in, with_crafted_on
from robench.rundir import scored_columns

INTERVAL_METRICS = ("clean_accuracy", "robust_accuracy", "success_rate", "distortion", "auc_roc", "flagged_rate")


def interval_columns() -> list[str]:
    """The output columns of :func:`bootstrap_intervals`."""
    return [*SUMMARY_KEYS, "detector", "n", *(f"{m}_{side}" for m in INTERVAL_METRICS for side in ("low", "high"))]


def _group_seed(seed: int, *key: object) -> int:
    # Seeding per group keeps a group's interval independent of which other groups are in the records.
    digest = hashlib.sha256("|".join(map(str, (seed, *key))).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def resample_counts(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """A (n_resamples, n) matrix: how often each of n rows is drawn in each resample of size n."""
    index = rng.integers(0, n, size=(n_resamples, n))
    offsets = (np.arange(n_resamples) * n)[:, None]
    return np.bincount((index + offsets).ravel(), minlength=n_resamples * n).reshape(n_resamples, n).astype(np.float64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def weighted_auc(pos_counts: np.ndarray, positive: np.ndarray, neg_counts: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per resample: P(positive score > negative score) + P(tie) / 2, pairs weighted by counts.

    ``positive`` / ``negative`` are the scores of the rows that can be drawn as
    positives / negatives, ``pos_counts`` / ``neg_counts`` (resamples x rows) how often each was drawn.
    """
    order = np.argsort(negative, kind="stable")
    sorted_negative = negative[order]
    cumulative = np.zeros((neg_counts.shape[0], len(negative) + 1))
    np.cumsum(neg_counts[:, order], axis=1, out=cumulative[:, 1:])
    # Drawn negatives strictly below each positive, and those tied with it.
    below = cumulative[:, np.searchsorted(sorted_negative, positive, side="left")]
    up_to = cumulative[:, np.searchsorted(sorted_negative, positive, side="right")]
    wins = (pos_counts * (below + 0.5 * (up_to - below))).sum(axis=1)
    return _ratio(wins, pos_counts.sum(axis=1) * neg_counts.sum(axis=1))


def weighted_flagged_rate(
    counts: np.ndarray, clean: np.ndarray, clean_ok: np.ndarray, attacked: np.ndarray, attacked_ok: np.ndarray, fpr: float = FLAG_FPR
) -> np.ndarray:
    """Per resample, the count-weighted fraction of ``attacked`` scores below the clean ``fpr`` threshold."""
    clean_counts = counts[:, clean_ok]
    order = np.argsort(clean[clean_ok], kind="stable")
    sorted_clean = clean[clean_ok][order]
    cumulative = np.cumsum(clean_counts[:, order], axis=1)
    total = cumulative[:, -1] if cumulative.shape[1] else np.zeros(counts.shape[0])
    k = np.floor(fpr * total)
    # The k-th smallest (0-based) drawn clean score sits at the first sorted position whose cumulative count
    # exceeds k; past the end (k >= m) nothing clean is flagged and the threshold is +inf, as in threshold_at_fpr.
    position = (cumulative <= k[:, None]).sum(axis=1)
    threshold = np.append(sorted_clean, np.inf)[position]
    attacked_counts = counts[:, attacked_ok]
    below = attacked[attacked_ok][None, :] < threshold[:, None]
    rate = _ratio((attacked_counts * below).sum(axis=1), attacked_counts.sum(axis=1))
    return np.where(total > 0, rate, np.nan)


def group_metrics(group: pd.DataFrame, counts: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Every summary metric of one model x threat x attack group for each row of ``counts`` (weights of its rows).

    Returns detector ("-" when none) -> metric -> values, one per row of ``counts``.
    """
    label = group["label"].to_numpy()
    correct = group["clean_pred"].to_numpy() == label
    hit = correct & group["success"].to_numpy(dtype=bool)
    distortion = group["distortion"].to_numpy(dtype=float)
    measured = hit & np.isfinite(distortion)
    common = {
        "clean_accuracy": _ratio(counts @ correct, counts.sum(axis=1)),
        "robust_accuracy": _ratio(counts @ (group["adv_pred"].to_numpy() == label), counts.sum(axis=1)),
        "success_rate": _ratio(counts @ hit, counts @ correct),
        "distortion": _ratio(counts @ np.where(measured, distortion, 0.0), counts @ measured),
    }
    corruption = bool(group["corruption"].iloc[0]) if "corruption" in group else False
    nan = np.full(counts.shape[0], np.nan)
    out: dict[str, dict[str, np.ndarray]] = {}
    for detector in detectors_in(group) or ["-"]:
        if detector == "-":
            out[detector] = {**common, "auc_roc": nan, "flagged_rate": nan}
            continue
        clean = group[f"score_clean:{detector}"].to_numpy(dtype=float)
        adversarial = group[f"score_adv:{detector}"].to_numpy(dtype=float)
        positive = correct & np.isfinite(clean)
        negative = hit & np.isfinite(adversarial)
        auc = nan if corruption else weighted_auc(counts[:, positive], clean[positive], counts[:, negative], adversarial[negative])
        # Corruptions flag every noisy input (a false-positive rate); attacks only their successes.
        attacked_ok = np.isfinite(adversarial) & (hit | corruption)
        flagged = weighted_flagged_rate(counts, clean, np.isfinite(clean), adversarial, attacked_ok)
        out[detector] = {**common, "auc_roc": auc, "flagged_rate": flagged}
    return out


def bootstrap_intervals(records: pd.DataFrame, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Percentile-bootstrap intervals of every summary metric, one row per model x threat x attack x detector.

    Columns: model, threat, attack, detector, n, then ``{metric}_low`` and
    ``{metric}_high`` for each metric of ``robench.metrics.summarize``.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ConfigError(f"the number of bootstrap resamples must be a positive integer, got {n_resamples!r}")
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ConfigError(f"the confidence level must be strictly between 0 and 1, got {level!r}")
    quantiles = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    rows = []
    for key, group in with_crafted_on(records).groupby(SUMMARY_KEYS, sort=False):
        group = scored_columns(group)
        rng = np.random.default_rng(_group_seed(seed, *key))
        # Row 0 is the full sample (all counts 1): the point estimate decides whether the interval is NaN.
        counts = np.vstack([np.ones((1, len(group))), resample_counts(len(group), int(n_resamples), rng)])
        for detector, values in group_metrics(group, counts).items():
            row = {**dict(zip(SUMMARY_KEYS, key)), "detector": detector, "n": int(len(group))}
            for metric in INTERVAL_METRICS:
                point, draws = values[metric][0], values[metric][1:]
                low, high = (math.nan, math.nan) if not np.isfinite(point) or not np.isfinite(draws).any() else np.nanquantile(draws, quantiles)
                row[f"{metric}_low"], row[f"{metric}_high"] = float(low), float(high)
            rows.append(row)
    return pd.DataFrame(rows, columns=interval_columns())
