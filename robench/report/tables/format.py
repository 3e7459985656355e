"""How a built table's cells read: numbers formatted by their metric, the best values marked, labels as columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from robench.report.tables.bounds import DAGGER, is_marked
from robench.report.tables.table import BOUND, COUNT, HIGH, LOW, METRIC, TEXT, Table
from robench.scoring.metrics import METRICS

NA = "-"  # a NaN value, or no cell


def format_value(value: float, metric: str) -> str:
    """1 decimal for percentages, 2 for distortion, integers for counts; NaN as ``-``."""
    if value is None or not np.isfinite(value):
        return NA
    if metric == COUNT:
        return f"{int(value)}"
    if metric in METRICS and METRICS.get(metric).percent:
        return f"{100 * value:.1f}"
    return f"{value:.2f}"


def _rounded(value: float, metric: str) -> float:
    text = format_value(value, metric)
    return float(text) if text != NA else np.nan


def _higher_is_better(metric: str) -> bool:
    return bool(metric in METRICS and METRICS.get(metric).higher_is_better)


def best_mask(table: Table) -> pd.DataFrame:
    """True where a cell holds the best value of its column (or row) by its metric's direction; ties all marked.

    Values are compared as displayed (rounded), so two cells that read the same are both marked.
    """
    values, metrics = table.values(), table.values(METRIC)
    mask = pd.DataFrame(False, index=values.index, columns=values.columns)
    if table.best_along is None:
        return mask
    names = metrics.fillna(COUNT).to_numpy()
    shown = np.vectorize(_rounded, otypes=[float])(values.to_numpy(), names)
    higher = np.vectorize(_higher_is_better, otypes=[bool])(names)
    comparable = np.vectorize(lambda m: m in METRICS, otypes=[bool])(names)
    if table.reference is not None:  # a paper's numbers are shown beside, never competing
        level, value = table.reference
        comparable &= ~np.asarray(values.columns.get_level_values(level) == value)[None, :]
    # orient so that every comparison runs down a column of `shown`
    along_rows = table.best_along == "rows"
    shown, higher, comparable = (a.T if along_rows else a for a in (shown, higher, comparable))
    labels = values.columns if along_rows else values.index
    groups = labels.get_level_values(table.group) if table.group else pd.Index(np.zeros(len(labels)))
    marked = np.zeros_like(shown, dtype=bool)
    signed = np.where(higher, shown, -shown)
    for group in groups.unique():
        in_group = np.asarray(groups == group)
        block = np.where(comparable[in_group] & np.isfinite(signed[in_group]), signed[in_group], -np.inf)
        top = block.max(axis=0)
        # a value alone in its column is not "best" of anything: mark only where two or more compete
        competing = np.isfinite(block).sum(axis=0) >= 2
        marked[in_group] = np.isfinite(block) & (block == top) & competing
    return pd.DataFrame(marked.T if along_rows else marked, index=values.index, columns=values.columns)


def cell_text(table: Table) -> pd.DataFrame:
    """Each cell as displayed: ``84.3``, or ``84.3 [82.1, 86.0]`` with intervals; ``-`` for NaN or no cell.

    A cell with a ``text`` (a paper's ``≤1.0``) shows that text instead. A cell that is a bound in the defense's
    favour (:mod:`.bounds`) carries a dagger after its value: ``100.0†``, ``100.0† [98.1, 100.0]``.
    """
    values, metrics = table.values(), table.values(METRIC).fillna(COUNT)
    fmt = np.vectorize(format_value, otypes=[object])
    text = fmt(values.to_numpy(), metrics.to_numpy())
    if TEXT in table.cells:
        given = table.values(TEXT).to_numpy()
        text = np.where(pd.isna(given), text, given)
    if BOUND in table.cells:  # beside the value, so an interval after it reads as the value's
        marked = np.vectorize(is_marked, otypes=[bool])(table.values(BOUND).to_numpy()) & (text != NA)
        text = np.where(marked, text + DAGGER, text)
    if table.has_intervals:
        low = fmt(table.values(LOW).to_numpy(), metrics.to_numpy())
        high = fmt(table.values(HIGH).to_numpy(), metrics.to_numpy())
        with_ci = (text != NA) & (low != NA) & (high != NA)
        text = np.where(with_ci, text + " [" + low + ", " + high + "]", text)
    return pd.DataFrame(text, index=values.index, columns=values.columns)


def display_frame(table: Table, best: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(text, bold): the row labels as leading columns, then the cells; ``bold`` has the same shape."""
    text, mask = cell_text(table), best_mask(table) if best else None
    depth = len(table.columns)
    label_columns = [tuple([""] * (depth - 1) + [level]) for level in table.rows]
    labels = pd.DataFrame(list(text.index), columns=pd.MultiIndex.from_tuples(label_columns))
    body = pd.DataFrame(text.to_numpy(), columns=pd.MultiIndex.from_tuples(list(text.columns)))
    frame = pd.concat([labels, body], axis=1)
    bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    if mask is not None:
        bold.iloc[:, len(table.rows) :] = mask.to_numpy()
    if depth == 1:
        frame.columns = bold.columns = [c[0] for c in frame.columns]
    return frame, bold


def flat_columns(frame: pd.DataFrame) -> list[str]:
    """Column headers on one line: the levels of a multi-level header joined by `` / ``."""
    if not isinstance(frame.columns, pd.MultiIndex):
        return [str(c) for c in frame.columns]
    return [" / ".join(str(part) for part in column if str(part)) for column in frame.columns]
