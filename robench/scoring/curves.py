"""Robustness curves: robust accuracy as a function of the budget eps, from each sample's smallest breaking distance.

Per model x threat x crafting model (the attack rows: corruptions and derived worst-case rows left out), per
norm and per detector, :func:`smallest_distances` gives every test sample one number: the smallest distance,
in that norm and in the model's input units, of an attack output that misclassifies it (``adv_pred !=
label``), whatever the attack's own norm or budget. For a detector, only the outputs that are also *not
flagged* count: those whose adversarial score is at least the threshold that flags 5% of the group's clean
inputs (one clean score per sample; the k-th smallest, k = floor(0.05 m), the rule of
:func:`robench.scoring.metrics.weighted_threshold` and :func:`robench.scoring.cascade.flag_thresholds`).
A sample whose clean input is misclassified has distance 0; one that nothing broke has +inf.

The robust accuracy at eps is the fraction of samples whose distance lies outside the ball of radius eps
(:meth:`robench.scoring.budgets.Budget.contains`, with the budgets' float tolerance), so the curve at a
budget equals the worst case at that budget (:mod:`robench.scoring.worst_case`): clean accuracy x the
``survival`` of the ``worst-case <budget>`` row, and x its ``survival_detected`` per detector (tested).
:func:`robustness_curve` adds percentile-bootstrap bands over the samples.

Choices:

- norms: those of the group's budgets (the records' budgets column, :data:`robench.scoring.records.BUDGETS`);
  records without budgets get both ``linf`` and ``l2``: the distances are recorded either way, and the curve
  needs no budget;
- ties: ``best_attack`` names the first attack in cascade order (the ``order`` column, else first
  appearance) among those that reach the smallest distance; '' where the clean input is misclassified or
  nothing broke the sample;
- an output with no distance (NaN) lies in no ball and never breaks a sample; for a detector, an output the
  detector did not score (NaN adversarial score) does not break it either, and a sample with no clean score
  (a combined detector's fit split) has no detector-aware distance;
- a cascaded run (:mod:`robench.scoring.cascade`) gives upper bounds between its budgets: a later attack
  meets a sample only while a budget it is run for is still open there, so one that would have found a
  smaller distance may never meet it.

Everything here is a pure function of records; ``distances.parquet`` beside a run's records
(:mod:`robench.runs.output`) holds :func:`smallest_distances` of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from robench.core.errors import ConfigError
from robench.scoring import records as R
from robench.scoring.budgets import NORM_COLUMNS, Budget, budgets_of, norms_of
from robench.scoring.metrics import (
    NO_DETECTOR,
    Weighted,
    group_seed,
    resample_counts,
    weighted_median,
    weighted_threshold,
)
from robench.scoring.worst_case import cascade_rank, worst_case_mask

__all__ = ["group_seed", "resample_counts"]  # the report layer seeds and draws curves as the summary's bootstrap

NORM = "norm"
DETECTOR = "detector"
DISTANCE = "distance"
BEST_ATTACK = "best_attack"
CLEAN_CORRECT = "clean_correct"
GROUP: tuple[str, ...] = (R.MODEL, R.THREAT, R.CRAFTED_ON)
CURVE_KEYS: tuple[str, ...] = (*GROUP, NORM, DETECTOR)  # one robustness curve
DISTANCE_COLUMNS: tuple[str, ...] = (*CURVE_KEYS, R.SAMPLE, DISTANCE, BEST_ATTACK, CLEAN_CORRECT)
EPS, ROBUST_ACCURACY, LOW, HIGH = "eps", "robust_accuracy", "low", "high"
CURVE_COLUMNS: tuple[str, ...] = (EPS, ROBUST_ACCURACY, LOW, HIGH)


def attack_rows(records: pd.DataFrame) -> pd.DataFrame:
    """The rows of real attacks: no corruption, no derived worst-case row."""
    records = R.with_crafted_on(records)
    return records[~R.corruption_mask(records) & ~worst_case_mask(records)]


def curve_norms(group: pd.DataFrame) -> list[str]:
    """The norms a group's curves are drawn in: those of its budgets, else every norm robench records."""
    return norms_of(budgets_of(group)) or list(NORM_COLUMNS)


def clean_thresholds(group: pd.DataFrame, detectors: Sequence[str]) -> dict[str, float]:
    """Per detector, the 5%-FPR flag threshold of a group's clean scores, one per sample (the first finite one)."""
    out = {}
    for detector in detectors:
        clean = group.groupby(R.SAMPLE, sort=True)[R.score_clean(detector)].first().to_numpy(dtype=float)
        threshold, _ = weighted_threshold(Weighted.of(pd.DataFrame(index=range(len(clean)))), clean, np.isfinite(clean))
        out[detector] = float(threshold[0])
    return out


def _smallest(
    frame: pd.DataFrame, breaks: np.ndarray, distance: np.ndarray, samples: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample of ``samples``: the smallest distance of a breaking row (+inf if none) and its attack ('' if none).

    ``frame`` is sorted by sample, cascade order and row, so the first row of the smallest distance wins ties.
    """
    candidate = np.where(breaks & np.isfinite(distance), distance, np.inf)
    ranked = pd.DataFrame(
        {"s": frame[R.SAMPLE].to_numpy(), "d": candidate, "a": frame[R.ATTACK].to_numpy(dtype=object)}
    )
    ranked = ranked[np.isfinite(candidate)]
    best = ranked.sort_values(["s", "d"], kind="stable").drop_duplicates("s", keep="first").set_index("s")
    found = best.reindex(samples)
    smallest = found["d"].to_numpy(dtype=float)
    missing = np.isnan(smallest)
    return np.where(missing, np.inf, smallest), np.where(missing, "", found["a"].to_numpy(dtype=object))


def _group_distances(group: pd.DataFrame) -> list[pd.DataFrame]:
    frame = group.assign(_order=cascade_rank(group), _row=np.arange(len(group)))
    frame = frame.sort_values([R.SAMPLE, "_order", "_row"], kind="stable")
    first = frame.drop_duplicates(R.SAMPLE, keep="first").set_index(R.SAMPLE)
    samples = first.index.to_numpy()
    correct = first[R.CLEAN_PRED].to_numpy() == first[R.LABEL].to_numpy()
    misclassified = frame[R.ADV_PRED].to_numpy() != frame[R.LABEL].to_numpy()
    detectors = [d for d in R.detectors_in(frame) if R.has_scores(frame, d)]
    thresholds = clean_thresholds(frame, detectors)
    scored = {  # per detector: the samples with a clean score (the others get no detector-aware distance)
        d: np.isfinite(frame.groupby(R.SAMPLE, sort=True)[R.score_clean(d)].first().reindex(samples).to_numpy(float))
        for d in detectors
    }
    key = {c: first[c].iloc[0] for c in GROUP}
    parts = []
    for norm in curve_norms(group):
        distance = frame[NORM_COLUMNS[norm]].to_numpy(dtype=float)
        for detector in [NO_DETECTOR, *detectors]:
            breaks, keep = misclassified, np.ones(len(samples), dtype=bool)
            if detector != NO_DETECTOR:
                with np.errstate(invalid="ignore"):
                    unflagged = frame[R.score_adv(detector)].to_numpy(dtype=float) >= thresholds[detector]
                breaks = misclassified & unflagged
                keep = scored[detector]
            smallest, attack = _smallest(frame, breaks, distance, samples)
            smallest = np.where(correct, smallest, 0.0)
            attack = np.where(correct, attack, "")
            parts.append(
                pd.DataFrame(
                    {
                        **key,
                        NORM: norm,
                        DETECTOR: detector,
                        R.SAMPLE: samples[keep],
                        DISTANCE: smallest[keep],
                        BEST_ATTACK: attack[keep].astype(object),
                        CLEAN_CORRECT: correct[keep],
                    },
                    columns=list(DISTANCE_COLUMNS),
                )
            )
    return parts


def smallest_distances(records: pd.DataFrame) -> pd.DataFrame:
    """Per model x threat x crafting model x norm x detector x sample: the smallest breaking distance (module
    docstring), the attack that reached it, and whether the clean input is classified correctly.

    Columns :data:`DISTANCE_COLUMNS`: model, threat, crafted_on, norm, detector ('-' for none), sample,
    distance (0: clean input misclassified; +inf: nothing broke it), best_attack, clean_correct.
    """
    rows = attack_rows(records)
    parts = [p for _, group in rows.groupby(list(GROUP), sort=False) for p in _group_distances(group)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in DISTANCE_COLUMNS})
    return pd.concat(parts, ignore_index=True)


_DTYPES = {
    R.MODEL: object, R.THREAT: object, R.CRAFTED_ON: object, NORM: object, DETECTOR: object, R.SAMPLE: np.int64,
    DISTANCE: float, BEST_ATTACK: object, CLEAN_CORRECT: bool,
}  # fmt: skip


def curve_groups(distances: pd.DataFrame):
    """(key, rows) per curve (model x threat x crafting model x norm x detector), in first-appearance order."""
    for key, group in distances.groupby(list(CURVE_KEYS), sort=False):
        yield dict(zip(CURVE_KEYS, key)), group


def _norm_of(distances: pd.DataFrame) -> str:
    norms = pd.unique(distances[NORM]) if NORM in distances else []
    if len(norms) != 1:
        raise ConfigError(f"a robustness curve is drawn in one norm, got {list(norms) or 'none'}")
    return str(norms[0])


def robustness_curve(
    distances: pd.DataFrame,
    eps_grid: Sequence[float] | np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Robust accuracy at each eps of ``eps_grid`` for one curve's distances (one norm and detector), with bands.

    Robust accuracy(eps) = the fraction of samples whose smallest distance lies outside the ball of radius
    eps (``not Budget(norm, eps).contains(distance)``). ``low`` / ``high``: the (1 - level)/2 and
    (1 + level)/2 quantiles over ``resamples`` percentile-bootstrap resamples of the samples (a
    ``numpy.random.default_rng(seed)``; 0 resamples: no band, NaN). Columns :data:`CURVE_COLUMNS`.
    """
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 0:
        raise ConfigError(f"the number of bootstrap resamples must be an integer >= 0, got {resamples!r}")
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ConfigError(f"the confidence level must be strictly between 0 and 1, got {level!r}")
    norm = _norm_of(distances)
    grid = np.asarray(eps_grid, dtype=float).ravel()
    values = distances[DISTANCE].to_numpy(dtype=float)
    n = len(values)
    # survived[e, i]: sample i is not broken within eps_e
    survived = np.stack([~Budget(norm, float(eps)).contains(values) for eps in grid]) if len(grid) else np.zeros((0, n))
    point = survived.sum(axis=1) / n if n else np.full(len(grid), np.nan)
    low, high = np.full(len(grid), np.nan), np.full(len(grid), np.nan)
    if resamples and n:
        counts = resample_counts(n, int(resamples), np.random.default_rng(seed))
        draws = counts @ survived.T.astype(float) / n  # resamples x eps
        low, high = np.quantile(draws, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
    return pd.DataFrame({EPS: grid, ROBUST_ACCURACY: point, LOW: low, HIGH: high}, columns=list(CURVE_COLUMNS))


def eps_grid(distances: pd.DataFrame, budgets: Sequence[Budget] = (), points: int = 101) -> np.ndarray:
    """A grid for drawing one curve: ``points`` even steps from 0 to past the largest finite distance and budget,
    plus every budget's eps and every finite distance (the curve's steps), sorted and without repeats."""
    values = distances[DISTANCE].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    top = max([*finite.tolist(), *(b.eps for b in budgets), 0.0])
    top = top * 1.05 if top > 0 else 1.0
    return np.unique(np.r_[np.linspace(0.0, top, points), [b.eps for b in budgets], finite])


def median_distance(distances: pd.DataFrame) -> float:
    """The (lower) median smallest distance over the clean-correct samples of one curve; NaN where it is infinite
    or there is none (the statistic of the ``median_l2`` / ``median_linf`` metrics, per sample over every attack)."""
    values = distances[DISTANCE].to_numpy(dtype=float)
    correct = distances[CLEAN_CORRECT].to_numpy(dtype=bool)
    median = weighted_median(Weighted.of(distances), values, correct)[0]
    return float(median) if np.isfinite(median) else float("nan")


def curve_budgets(records: pd.DataFrame, key: dict[str, object]) -> list[Budget]:
    """The budgets in ``key``'s norm that the records of its model x threat x crafting model carry."""
    rows = R.with_crafted_on(records)
    group = rows[
        (rows[R.MODEL] == key[R.MODEL]) & (rows[R.THREAT] == key[R.THREAT]) & (rows[R.CRAFTED_ON] == key[R.CRAFTED_ON])
    ]
    return [b for b in budgets_of(group) if b.norm == key[NORM]]
