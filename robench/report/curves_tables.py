"""Tables built from records rather than the summary: the robustness curves at the budgets, and the attack audit.

- ``curves``: per model x threat (x crafting model) x detector, the robust accuracy (%) at each budget of
  the threat, read off the robustness curve (:mod:`robench.scoring.curves`), and the median smallest
  distance per norm; with bootstrap intervals on the accuracies when asked;
- ``audit``: per model x threat x attack, its image passes per sample and success rate, and per norm its
  median distance, AttackBench optimality and how many samples it broke at the best distance (``Best``)
  or alone within the largest budget (``Only``) (:mod:`robench.scoring.audit`).

Both are :class:`~robench.report.tables.Table` objects, rendered like the layouts (LaTeX, Markdown, CSV,
HTML); ``robench report`` adds them to its default tables and takes their names in ``--layout``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from robench.core.errors import ConfigError
from robench.report.tables.bounds import bound_notes
from robench.report.tables.table import BOUND, COUNT, HIGH, LOW, METRIC, TEXT, VALUE, Table
from robench.runs.budget_checks import budget_flags
from robench.runs.detector_checks import detector_flags, detector_key
from robench.runs.sanity import BUDGET_NOT_ATTACKED, DETECTOR_NOT_ATTACKED
from robench.scoring import records as R
from robench.scoring.audit import (
    BEST,
    IMAGE_PASSES,
    MEDIAN_DISTANCE,
    ONLY,
    OPTIMALITY,
    SUCCESS_RATE,
    attack_audit,
)
from robench.scoring.budgets import NORM_LABELS, Budget
from robench.scoring.curves import (
    DETECTOR,
    NO_DETECTOR,
    NORM,
    ROBUST_ACCURACY,
    attack_rows,
    curve_budgets,
    curve_groups,
    group_seed,
    median_distance,
    robustness_curve,
    smallest_distances,
)
from robench.scoring.worst_case import worst_case_label

# The record tables by name, with what each shows (the HTML report's section titles).
RECORD_TABLES: dict[str, str] = {
    "curves": "robust accuracy at each budget from the robustness curves, and the median smallest distance",
    "audit": "attack audit: cost, success, median distance, AttackBench optimality and the samples each attack broke",
}
_MEDIAN = {"linf": "median_linf", "l2": "median_l2"}  # the registered metrics of the same statistic (formatting)


def _threat_label(model: object, threat: object, crafted_on: object) -> str:
    return str(threat) if crafted_on == model else f"{threat} (from {crafted_on})"


def _short(value: float) -> str | None:
    return f"{value:.3g}" if np.isfinite(value) else None


def _flagged(records: pd.DataFrame) -> set[tuple[str, str]]:
    """(model, threat key) of every flagged ``detector-not-attacked`` and ``budget-not-attacked`` result over the
    records (their threat keys: ``THREAT/detector:NAME``, ``THREAT/worst-case BUDGET/detector:NAME`` and
    ``THREAT/worst-case BUDGET``)."""
    return {(r.model, r.threat) for r in detector_flags(records) + budget_flags(records) if r.flagged}


def _bound(flagged: set[tuple[str, str]], key: dict[str, object], budget: Budget | None) -> str:
    """The checks that make one curve cell a bound in the defense's favour (:mod:`robench.report.tables.bounds`):
    a detector's curve whose detector no attack of the threat targeted, and the accuracy at a budget no attack of the
    threat aimed at."""
    model, threat, detector = str(key[R.MODEL]), str(key[R.THREAT]), str(key[DETECTOR])
    at_budget = f"{threat}/{worst_case_label(budget)}" if budget is not None else None
    # the detector flagged threat-wide, or (attacked elsewhere) at this budget alone
    keys = [detector_key(threat, detector), *([detector_key(at_budget, detector)] if at_budget else [])]
    checks = []
    if detector != NO_DETECTOR and any((model, k) in flagged for k in keys):
        checks.append(DETECTOR_NOT_ATTACKED)
    if at_budget is not None and (model, at_budget) in flagged:
        checks.append(BUDGET_NOT_ATTACKED)
    return ",".join(checks)


def curves_table(
    records: pd.DataFrame, resamples: int | None = None, seed: int = 0, distances: pd.DataFrame | None = None
) -> Table:
    """The ``curves`` table; ``resamples``: bootstrap intervals on the accuracies (None: none). ConfigError when the
    records hold no attack.

    A detector's row whose detector no attack of the threat targeted (``detector-not-attacked``), and the accuracy
    at a budget no attack of the threat aimed at (``budget-not-attacked``), carry a dagger (the checks are computed
    from the records, :mod:`robench.report.tables.bounds`).
    """
    distances = smallest_distances(records) if distances is None else distances
    if distances.empty:
        raise ConfigError("table 'curves' needs attack records; the run holds only corruptions")
    flagged = _flagged(records)
    cells = []
    for key, group in curve_groups(distances):
        levels = {
            "Model": key[R.MODEL],
            "Threat": _threat_label(key[R.MODEL], key[R.THREAT], key[R.CRAFTED_ON]),
            "Detector": key[DETECTOR],
        }
        budgets = curve_budgets(records, key)
        if budgets:
            curve = robustness_curve(
                group, [b.eps for b in budgets], resamples=resamples or 0, seed=group_seed(seed, *key.values())
            )
            for budget, (_, point) in zip(budgets, curve.iterrows()):
                cells.append({**levels, "Metric": "Robust Acc. (%)", "Budget": budget.label,
                              METRIC: ROBUST_ACCURACY, VALUE: point[ROBUST_ACCURACY],
                              LOW: point["low"], HIGH: point["high"], TEXT: None,
                              BOUND: _bound(flagged, key, budget)})  # fmt: skip
        median = median_distance(group)
        # a distance is no budget's: only its detector can make it a bound (the larger the distance, the better)
        cells.append({**levels, "Metric": "Median distance", "Budget": NORM_LABELS[key[NORM]],
                      METRIC: _MEDIAN[key[NORM]], VALUE: median, LOW: np.nan, HIGH: np.nan,
                      TEXT: _short(median), BOUND: _bound(flagged, key, None)})  # fmt: skip
    frame = pd.DataFrame(cells)
    if not resamples:
        frame = frame.drop(columns=[LOW, HIGH])
    frame = _grid(frame, ("Model", "Threat", "Detector"), ("Metric", "Budget"), _curve_column_rank)
    caption = (
        "Robustness curves at the budgets: robust accuracy (%) at each budget (norm and eps, in the model's input "
        "units) from each sample's smallest distance at which some attack output of the threat misclassifies it "
        "(per detector: misclassifies it without being flagged at the clean 5% false-positive threshold); "
        "equal to clean accuracy x the worst case's Survived (Surv. or flagged). Median distance: the median "
        "smallest distance over the clean-correct samples ('-' where half or more survive every attack)."
    )
    if resamples:
        caption += f" Intervals: 95% percentile bootstrap over the samples ({resamples:,} resamples)."
    caption = " ".join([caption, *bound_notes(frame[BOUND])])
    return Table("curves", caption, "tab:robench-curves", frame, ("Model", "Threat", "Detector"),
                 ("Metric", "Budget"), None)  # fmt: skip


def _grid(frame: pd.DataFrame, rows: Sequence[str], columns: Sequence[str], column_rank) -> pd.DataFrame:
    """Every row x column cell (NaN where there is none), rows in first-appearance order, columns by
    ``column_rank``: the pivot (first-appearance order) then reads in that order whatever each row holds."""
    row_keys = list(dict.fromkeys(zip(*(frame[r] for r in rows))))
    col_keys = sorted(dict.fromkeys(zip(*(frame[c] for c in columns))), key=column_rank)
    index = pd.MultiIndex.from_tuples([(*r, *c) for r in row_keys for c in col_keys], names=[*rows, *columns])
    full = frame.set_index([*rows, *columns]).reindex(index).reset_index()
    if METRIC in full:  # a filled-in cell formats as its column's metric does
        full[METRIC] = full.groupby(list(columns), sort=False)[METRIC].transform(
            lambda m: m.fillna(m.dropna().iloc[0]) if m.notna().any() else m
        )
    return full


def _curve_column_rank(column: tuple) -> tuple:
    metric, budget = column
    norms = list(NORM_LABELS.values())
    if metric == "Median distance":
        return (1, norms.index(budget), 0.0)
    norm, _, eps = str(budget).partition(" ")
    return (0, norms.index(norm), float(eps))


_AUDIT_COLUMNS = (
    (IMAGE_PASSES, "Passes / sample", COUNT),
    (SUCCESS_RATE, "Success (%)", "success_rate"),
)
_AUDIT_NORM_COLUMNS = (
    (MEDIAN_DISTANCE, "Med. dist.", None),
    (OPTIMALITY, "Optimality", "optimality"),
    (BEST, "Best", COUNT),
    (ONLY, "Only", COUNT),
)


def audit_table(records: pd.DataFrame) -> Table:
    """The ``audit`` table (ConfigError when the records hold no attack)."""
    audit = attack_audit(records)
    if audit.empty:
        raise ConfigError("table 'audit' needs attack records; the run holds only corruptions")
    cells = []
    for (model, threat, crafted_on, attack), rows in audit.groupby(
        [R.MODEL, R.THREAT, R.CRAFTED_ON, R.ATTACK], sort=False
    ):
        levels = {"Model": model, "Threat": _threat_label(model, threat, crafted_on), "Attack": attack}
        first = rows.iloc[0]
        for column, header, metric in _AUDIT_COLUMNS:
            value = float(first[column])
            text = _short(value) if column == IMAGE_PASSES else None
            cells.append({**levels, "Norm": "", "Metric": header, METRIC: metric, VALUE: value, TEXT: text})
        for _, row in rows.iterrows():
            for column, header, metric in _AUDIT_NORM_COLUMNS:
                value = float(row[column])
                metric = metric or _MEDIAN[row[NORM]]
                text = _short(value) if column == MEDIAN_DISTANCE else None
                cells.append({**levels, "Norm": NORM_LABELS[row[NORM]], "Metric": header, METRIC: metric,
                              VALUE: value, TEXT: text})  # fmt: skip
    caption = (
        "Attack audit: image passes through the crafting model per attacked sample, success rate, and per norm the "
        "median distance of the misclassified outputs over the clean-correct samples, AttackBench's optimality "
        "(Cina et al. 2025: 1 - the attack's excess area under the robust-accuracy curve over the per-sample best "
        "of the threat's attacks, relative to an attack that breaks nothing, on [0, the largest finite best "
        "distance]), and the samples it broke at the best distance (Best) or alone within the threat's largest "
        "budget in that norm (Only)."
    )
    norms = ["", *NORM_LABELS.values()]
    headers = [h for _, h, _ in (*_AUDIT_COLUMNS, *_AUDIT_NORM_COLUMNS)]
    frame = _grid(pd.DataFrame(cells), ("Model", "Threat", "Attack"), ("Norm", "Metric"),
                  lambda c: (norms.index(c[0]), headers.index(c[1])))  # fmt: skip
    return Table("audit", caption, "tab:robench-audit", frame, ("Model", "Threat", "Attack"), ("Norm", "Metric"), None)


def record_tables(
    records: pd.DataFrame, names: Sequence[str] | None = None, resamples: int | None = None
) -> tuple[list[Table], list[str]]:
    """The named record tables (each must apply), or every one that applies; (tables, notes on skipped ones)."""
    wanted = list(dict.fromkeys(names)) if names else list(RECORD_TABLES)
    unknown = [n for n in wanted if n not in RECORD_TABLES]
    if unknown:
        raise ConfigError(f"unknown record table '{unknown[0]}'; record tables: {', '.join(RECORD_TABLES)}")
    tables, notes = [], []
    if attack_rows(records).empty:
        if names:
            raise ConfigError(f"table '{wanted[0]}' needs attack records; the run holds only corruptions")
        return [], [f"skipped: tables {' and '.join(wanted)} need attack records; the run holds only corruptions"]
    for name in wanted:
        tables.append(curves_table(records, resamples) if name == "curves" else audit_table(records))
    return tables, notes
