"""A built table: long cells (one row per table cell) and how they pivot into rows x columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

# the summary's detector and count columns, re-exported
from robench.scoring.metrics import COUNT, DETECTOR  # noqa: F401 - re-exported for the table modules

METRIC, VALUE, LOW, HIGH = "metric", "value", "low", "high"  # a cell's metric, value and interval
TEXT = "text"  # optional: a cell's display text where it is not its formatted value (a paper's "<= 1")
# optional: the sanity checks that make a cell a bound in the defense's favour, comma-separated ("" or NaN: none);
# see robench.report.tables.bounds
BOUND = "bound"
_OBJECT_FIELDS = (METRIC, TEXT, BOUND)


@dataclass(frozen=True)
class Table:
    """A built layout: long ``cells`` (with ``low``/``high`` when intervals were joined) and how to pivot them.

    ``reference`` ``(level, value)``: the cells whose column ``level`` holds ``value`` are reference
    numbers (a paper's, see :mod:`.paper_columns`), shown but never marked best. Cells whose ``bound``
    names a sanity check are shown with a dagger (:mod:`.bounds`).
    """

    layout: str
    caption: str
    label: str
    cells: pd.DataFrame
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    best_along: Literal["rows", "columns"] | None
    group: str | None = None  # a level (e.g. Dataset) within which values are compared
    reference: tuple[str, str] | None = None

    @property
    def has_intervals(self) -> bool:
        return LOW in self.cells and HIGH in self.cells

    def values(self, field: str = VALUE) -> pd.DataFrame:
        """The cells' ``field`` pivoted: rows x columns in first-appearance order (raw units, fractions for %)."""
        return pivot(self.cells, self.rows, self.columns, field)


def pivot(cells: pd.DataFrame, rows: Sequence[str], columns: Sequence[str], field: str) -> pd.DataFrame:
    """``cells[field]`` as a rows x columns frame, both in first-appearance order; no cell: NaN
    (None for ``metric``, ``text`` and ``bound``)."""
    row_keys = list(zip(*(cells[level] for level in rows)))
    col_keys = list(zip(*(cells[level] for level in columns)))
    row_order, col_order = list(dict.fromkeys(row_keys)), list(dict.fromkeys(col_keys))
    row_at, col_at = {k: i for i, k in enumerate(row_order)}, {k: i for i, k in enumerate(col_order)}
    textual = field in _OBJECT_FIELDS
    out = np.full((len(row_order), len(col_order)), None if textual else np.nan, dtype=object if textual else float)
    out[[row_at[k] for k in row_keys], [col_at[k] for k in col_keys]] = cells[field].to_numpy()
    return pd.DataFrame(
        out,
        index=pd.MultiIndex.from_tuples(row_order, names=list(rows)),
        columns=pd.MultiIndex.from_tuples(col_order, names=list(columns)),
    )
