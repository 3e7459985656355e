"""The attack audit: what each attack of a threat cost and how close it came to the best of them, from records.

One row per model x threat x crafting model x attack x norm (the attack rows: no corruption, no derived
worst-case row). Every attack is audited in every norm of its group (:func:`robench.scoring.curves.curve_norms`:
the norms of the group's budgets, else ``linf`` and ``l2``), whatever its own (``attack_norm``): an output counts
in any norm, as in the worst case. Columns:

- ``samples``: the samples the attack ran on (fewer than the group's in a cascade);
- ``image_passes``: the images it forwarded through the crafting model per sample it ran on (the sum of
  its records' ``image_passes`` over their number; NaN for records written before the column);
- ``success_rate``: the ``success_rate`` metric of its rows;
- ``median_distance``: the ``median_l2`` / ``median_linf`` metric of its rows (the median over the
  clean-correct samples of the distance of a misclassified output, +inf where it did not misclassify;
  NaN when that median is infinite);
- ``optimality``: AttackBench's optimality (Cina et al., AAAI 2025, "AttackBench: Evaluating
  Gradient-based Attacks for Adversarial Examples"), computed here as follows. Every sample gets a
  distance per attack, the distance of its output where the output misclassifies it, +inf where not
  (and where the attack did not run on it), 0 where the clean input is misclassified. The *best*
  distance of a sample is the smallest over the group's attacks, and ``D`` the largest finite best
  distance. The robust-accuracy curve of a set of distances, accuracy(eps) = fraction of samples with
  distance > eps, encloses on [0, D] the area ``mean(min(d, D))`` (a step function: exact, no grid).
  With ``A_best`` the area of the best distances, ``A`` the attack's and ``A_none = clean accuracy x D``
  (an attack that breaks nothing), the optimality is ``(A_none - A) / (A_none - A_best)``: 1 for an
  attack that matches the best on every sample, 0 for one that breaks nothing below D. NaN where
  ``A_none == A_best`` (nothing was broken at a positive distance);
- ``best``: the clean-correct samples this attack broke at the best distance (ties count for each
  attack that reached it): the samples it did the work on;
- ``only``: the clean-correct samples this attack alone broke within the group's largest budget in the
  norm (within any distance when the records carry no budget in it): the samples the threat would
  lose without it;
- ``clean_accuracy`` and ``max_distance`` (``D``) of the group.

A cascaded run's audit describes the attacks as they ran: a later attack met only the samples the
earlier ones left, and counts as not breaking the others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robench.scoring import records as R
from robench.scoring.budgets import NORM_COLUMNS, budgets_of
from robench.scoring.curves import GROUP, NORM, attack_rows, curve_norms
from robench.scoring.metrics import metric_value

SAMPLES = "samples"
IMAGE_PASSES = "image_passes"
SUCCESS_RATE = "success_rate"
MEDIAN_DISTANCE = "median_distance"
OPTIMALITY = "optimality"
BEST = "best"
ONLY = "only"
CLEAN_ACCURACY = "clean_accuracy"
MAX_DISTANCE = "max_distance"
AUDIT_COLUMNS: tuple[str, ...] = (
    *GROUP, R.ATTACK, NORM, SAMPLES, IMAGE_PASSES, SUCCESS_RATE, MEDIAN_DISTANCE, OPTIMALITY, BEST, ONLY,
    CLEAN_ACCURACY, MAX_DISTANCE,
)  # fmt: skip


def curve_area(distances: np.ndarray, top: float) -> float:
    """The area on [0, top] under the robust-accuracy curve of ``distances``: mean(min(d, top)) (0 with none)."""
    return float(np.minimum(distances, top).mean()) if len(distances) else 0.0


def optimality(attack: np.ndarray, best: np.ndarray, clean_accuracy: float) -> tuple[float, float]:
    """(optimality, D) of one attack's per-sample distances against the per-sample best (module docstring)."""
    finite = best[np.isfinite(best)]
    top = float(finite.max()) if len(finite) else float("nan")
    if not np.isfinite(top) or top <= 0:
        return float("nan"), top
    none, floor = clean_accuracy * top, curve_area(best, top)
    if none - floor <= 0:
        return float("nan"), top
    return float((none - curve_area(attack, top)) / (none - floor)), top


def _group_audit(group: pd.DataFrame) -> list[dict[str, object]]:
    samples = np.sort(pd.unique(group[R.SAMPLE]))
    first = group.drop_duplicates(R.SAMPLE).set_index(R.SAMPLE).reindex(samples)
    correct = first[R.CLEAN_PRED].to_numpy() == first[R.LABEL].to_numpy()
    clean_accuracy = float(correct.mean()) if len(samples) else float("nan")
    attacks = list(dict.fromkeys(group[R.ATTACK]))
    by_attack = {a: group[group[R.ATTACK] == a] for a in attacks}
    budgets = budgets_of(group)
    rows = []
    for norm in curve_norms(group):
        column = NORM_COLUMNS[norm]
        table = np.full((len(attacks), len(samples)), np.inf)
        for i, attack in enumerate(attacks):
            rows_of = by_attack[attack]
            d = rows_of[column].to_numpy(dtype=float)
            broke = (rows_of[R.ADV_PRED].to_numpy() != rows_of[R.LABEL].to_numpy()) & np.isfinite(d)
            at = np.searchsorted(samples, rows_of[R.SAMPLE].to_numpy())
            np.minimum.at(table[i], at[broke], d[broke])
        table[:, ~correct] = 0.0
        best = table.min(axis=0) if len(attacks) else np.full(len(samples), np.inf)
        in_norm = [b for b in budgets if b.norm == norm]
        ball = max(in_norm, key=lambda b: b.eps) if in_norm else None
        inside = ball.contains(table) if ball is not None else np.isfinite(table)
        inside &= correct[None, :]
        alone = inside & (inside.sum(axis=0) == 1)[None, :]
        for i, attack in enumerate(attacks):
            rows_of = by_attack[attack]
            score, top = optimality(table[i], best, clean_accuracy)
            passes = rows_of[R.IMAGE_PASSES].to_numpy(dtype=float) if R.IMAGE_PASSES in rows_of else np.array([])
            rows.append(
                {
                    **{c: rows_of[c].iloc[0] for c in GROUP},
                    R.ATTACK: attack,
                    NORM: norm,
                    SAMPLES: int(rows_of[R.SAMPLE].nunique()),
                    IMAGE_PASSES: float(passes.sum() / len(rows_of))
                    if len(passes) and np.isfinite(passes).all()
                    else float("nan"),
                    SUCCESS_RATE: metric_value("success_rate", rows_of),
                    MEDIAN_DISTANCE: metric_value(f"median_{norm}", rows_of),
                    OPTIMALITY: score,
                    BEST: int((correct & np.isfinite(best) & (table[i] == best)).sum()),
                    ONLY: int(alone[i].sum()),
                    CLEAN_ACCURACY: clean_accuracy,
                    MAX_DISTANCE: top,
                }
            )
    return rows


def attack_audit(records: pd.DataFrame) -> pd.DataFrame:
    """One row per model x threat x crafting model x attack x norm; columns :data:`AUDIT_COLUMNS` (module
    docstring)."""
    rows = attack_rows(records)
    out = [r for _, group in rows.groupby(list(GROUP), sort=False) for r in _group_audit(group)]
    return pd.DataFrame(out, columns=list(AUDIT_COLUMNS))
