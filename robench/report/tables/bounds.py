"""Cells that are bounds in the defense's favour, marked with a dagger.

Two sanity checks (:mod:`robench.runs.sanity`) say that a summary row's figures overstate the
defense: ``detector-not-attacked`` (no attack of the threat descended on the row's detector, so its
detector-aware figures were measured against an attacker oblivious of it) and
``budget-not-attacked`` (no attack of the threat aimed at the budget of a worst-case row, so the
outputs inside that ball got there by chance). The summary carries both in its ``sanity_flags``
column (:func:`robench.runs.output.with_sanity_flags`); a table cell is marked when its row carries
a check that applies to the cell's metric:

- ``detector-not-attacked``: the detector-aware metrics (``per_detector`` in
  :data:`robench.scoring.metrics.METRICS`: the AUCs, the flagged rate, "still correct or
  flagged"); robust accuracy, success rate and distortion do not depend on the detector;
- ``budget-not-attacked``: the worst-case rows' metrics that an attack at the budget would lower
  (robust accuracy, survival, and the detector-aware ones) or raise (success rate); clean
  accuracy, counts and distances describe no attack's strength.

Each cell's marking checks are the table's :data:`~robench.report.tables.table.BOUND` field
(comma-separated, empty when none): :func:`robench.report.tables.format.cell_text` appends
:data:`DAGGER` and :func:`bound_notes` gives the caption's sentence saying what it means.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from robench.report.tables.table import BOUND, DETECTOR, METRIC
from robench.runs.output import SANITY_FLAGS
from robench.runs.sanity import BUDGET_NOT_ATTACKED, DETECTOR_NOT_ATTACKED
from robench.scoring import records as R
from robench.scoring.metrics import METRICS, SUMMARY_KEYS
from robench.scoring.worst_case import is_worst_case

DAGGER = "\u2020"  # rendered as $^\dagger$ in LaTeX (render.py), as itself elsewhere
# The worst-case metrics a missing attack at the budget leaves in the defense's favour, besides the detector-aware ones.
BUDGET_METRICS = ("robust_accuracy", "survival", "success_rate")
# What each marking check means, in the caption's sentence (in this order).
_REASONS = {
    DETECTOR_NOT_ATTACKED: f"no attack of the threat targeted the row's detector ({DETECTOR_NOT_ATTACKED})",
    BUDGET_NOT_ATTACKED: f"no attack of the threat ran at the cell's budget ({BUDGET_NOT_ATTACKED})",
}


def detector_aware(metric: object) -> bool:
    """Whether a metric measures the row's detector (``per_detector``: AUCs, flagged rate, survived or flagged)."""
    return isinstance(metric, str) and metric in METRICS and METRICS.get(metric).per_detector


def bound_checks(metric: object, attack: object, flags: object) -> str:
    """The checks among a summary row's ``flags`` (``sanity_flags``) that make its ``metric`` cell a bound in the
    defense's favour, comma-separated ("" when none)."""
    names = {name.strip() for name in flags.split(",")} if isinstance(flags, str) else set()
    marked = []
    if DETECTOR_NOT_ATTACKED in names and detector_aware(metric):
        marked.append(DETECTOR_NOT_ATTACKED)
    if BUDGET_NOT_ATTACKED in names and is_worst_case(attack) and (metric in BUDGET_METRICS or detector_aware(metric)):
        marked.append(BUDGET_NOT_ATTACKED)
    return ",".join(marked)


def with_bounds(cells: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """``cells`` (a layout's, keyed by the summary's keys, detector and metric) with :data:`BOUND` from the
    ``sanity_flags`` of their summary rows; unchanged when the summary has no such column."""
    if SANITY_FLAGS not in summary:
        return cells
    keys = [*SUMMARY_KEYS, DETECTOR]
    flags = R.with_crafted_on(summary)[[*keys, SANITY_FLAGS]].drop_duplicates(keys)
    merged = cells[keys].merge(flags, on=keys, how="left", validate="many_to_one")
    marks = [
        bound_checks(metric, attack, flag)
        for metric, attack, flag in zip(cells[METRIC], cells[R.ATTACK], merged[SANITY_FLAGS])
    ]
    return cells.assign(**{BOUND: marks})


def is_marked(bound: object) -> bool:
    """Whether a cell's :data:`BOUND` names a check (a paper's cell beside robench's has none: NaN)."""
    return isinstance(bound, str) and bool(bound)


def bound_notes(bounds: Iterable[object]) -> list[str]:
    """The caption's sentence on :data:`DAGGER`, naming the checks that mark some cell; none when no cell is marked."""
    present = {name for bound in bounds if is_marked(bound) for name in str(bound).split(",")}
    reasons = [text for check, text in _REASONS.items() if check in present]
    if not reasons:
        return []
    return [f"{DAGGER} marks an upper bound on the defense's robustness: {'; or '.join(reasons)}."]
