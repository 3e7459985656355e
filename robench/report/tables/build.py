"""Building tables: a layout applied to a summary (and run.json model entries), with intervals joined on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from robench.core.errors import ConfigError
from robench.report.tables.bounds import bound_notes, with_bounds
from robench.report.tables.labels import model_infos
from robench.report.tables.layouts import (
    DEFAULT_OPTIONS,
    DEFAULT_ORDER,
    DISTORTION,
    DISTORTION_255,
    LAYOUTS,
    Layout,
    TableOptions,
)
from robench.report.tables.table import BOUND, COUNT, DETECTOR, HIGH, LOW, METRIC, Table
from robench.scoring import records as R
from robench.scoring.metrics import METRICS, POPULATIONS, SUMMARY_KEYS

DATASET_LEVEL = "Dataset"


def build_table(
    layout: str | Layout,
    summary: pd.DataFrame,
    model_meta: Mapping[str, Mapping[str, Any]] | None = None,
    intervals: pd.DataFrame | None = None,
    options: TableOptions = DEFAULT_OPTIONS,
) -> Table:
    """Build one layout from a summary (``metrics.summarize``) and run.json model entries.

    ``intervals`` (``bootstrap.bootstrap_intervals``) adds ``low``/``high`` to each cell;
    ``options`` picks the AUC population and the distortion scale (:class:`TableOptions`).
    A summary with ``sanity_flags`` (:func:`robench.runs.output.with_sanity_flags`) marks the cells that are bounds
    in the defense's favour with a dagger, and the caption says why (:mod:`.bounds`).
    Raises ConfigError when the layout's threat, attack or detectors are absent.
    """
    spec = LAYOUTS.get(layout) if isinstance(layout, str) else layout
    summary = R.with_crafted_on(summary)
    intervals = R.with_crafted_on(intervals) if intervals is not None else None
    if spec.threats:
        reason = spec.missing(summary)
        if reason:
            raise ConfigError(reason)
        selected = spec.select(summary)
    else:
        selected = summary
    if selected.empty:
        raise ConfigError(f"layout '{spec.name}': the summary holds no rows")
    selected = selected.reset_index(drop=True)
    infos = model_infos(list(dict.fromkeys(selected[R.MODEL])), model_meta or {})
    cells = with_bounds(spec.cells(selected, infos, options).reset_index(drop=True), selected)
    rows, columns, group = spec.rows, spec.columns, None
    columns = tuple(c for c in columns if c not in spec.single_dropped or cells[c].nunique() > 1)
    datasets = {infos[m].dataset for m in cells[R.MODEL]}
    if spec.mark_best and len(datasets) > 1:
        # models from several datasets: add a Dataset level on the model axis and compare within it
        cells.insert(0, DATASET_LEVEL, cells[R.MODEL].map(lambda m: infos[m].dataset or "?"))
        group = DATASET_LEVEL
        if spec.model_axis == "rows":  # cells come ordered by dataset already (layouts._ordered)
            rows = (DATASET_LEVEL, *rows)
        else:
            columns = (DATASET_LEVEL, *columns)
    key = [*rows, *columns]
    if cells.duplicated(key).any():
        first = cells.loc[cells.duplicated(key), key].iloc[0].tolist()
        raise ConfigError(f"layout '{spec.name}': two summary rows fill the same cell {first}")
    if intervals is not None:
        cells = _join_intervals(cells, intervals)
    best_along = None if not spec.mark_best else ("columns" if spec.model_axis == "rows" else "rows")
    caption = " ".join(
        [
            _caption(spec, selected),
            *metric_notes(cells[METRIC].unique()),
            *cascade_notes(selected),
            *bound_notes(cells.get(BOUND, ())),
        ]
    )
    return Table(spec.name, caption, f"tab:robench-{spec.name}", cells, rows, columns, best_along, group)


def _caption(spec: Layout, selected: pd.DataFrame) -> str:
    counts = sorted(set(selected[COUNT].astype(int)))
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    present = set(selected[R.THREAT])
    threats = [t for t in spec.threats if t in present] or sorted(present)
    listed = ", ".join(threats[:-1]) + (" and " if len(threats) > 1 else "") + threats[-1]
    return f"{spec.caption.format(threats=listed)} n = {n} test samples per attack."


_DISTORTION_NOTES = {
    DISTORTION: (
        "mean L2 / sqrt(hwc) of the successful adversarial inputs, in the model's input units (pixels in [0, 1])"
    ),
    DISTORTION_255: (
        "mean L2 / sqrt(hwc) of the successful adversarial inputs on the 0-255 pixel scale "
        "(x 255 / input range; the scale 001 Tables 9-10 imply)"
    ),
}


def metric_notes(metrics: Sequence[str]) -> list[str]:
    """Caption sentences for the metrics a table shows: the AUC population(s) and the distortion scale(s).

    ``AUC population: paired (each clean-correct input whose adversarial is misclassified, ...)``
    for one AUC metric; with several (the summary layout) each AUC header names its population.
    """
    shown = set(metrics)
    aucs = [p for p in POPULATIONS.values() if p.metric in shown]
    notes = []
    if len(aucs) == 1:
        notes.append(f"AUC population: {aucs[0].name} ({aucs[0].description}).")
    elif aucs:
        notes.append(
            "AUC populations: "
            + "; ".join(f"{METRICS.get(p.metric).label} {p.name} ({p.description})" for p in aucs)
            + "."
        )
    scales = [m for m in (DISTORTION, DISTORTION_255) if m in shown]
    if scales:
        notes.append("; ".join(f"{METRICS.get(m).label}: {_DISTORTION_NOTES[m]}" for m in scales) + ".")
    return notes


def cascade_notes(selected: pd.DataFrame) -> list[str]:
    """A caption sentence when rows come from a cascaded run (robench.scoring.cascade): their per-attack cells are
    not each attack alone."""
    if R.CASCADE not in selected:
        return []
    modes = sorted({str(m) for m in selected[R.CASCADE].dropna()} - {R.NO_CASCADE})
    if not modes:
        return []
    return [
        f"Cascaded ({', '.join(modes)}): each attack ran only on the samples the cheaper attacks left, "
        "so a per-attack cell describes those samples, not the attack alone; the worst-case cells cover every sample, "
        "each between the uncascaded run's and that of the attacks run for it alone."
    ]


def _join_intervals(cells: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """``low`` / ``high`` per cell from the intervals' ``METRIC_low`` / ``METRIC_high`` columns (NaN where absent)."""
    keys = [*SUMMARY_KEYS, DETECTOR]
    merged = cells.merge(intervals, on=keys, how="left", validate="many_to_one")
    low, high = np.full(len(cells), np.nan), np.full(len(cells), np.nan)
    for metric in merged[METRIC].unique():
        at = (merged[METRIC] == metric).to_numpy()
        if f"{metric}_{LOW}" in merged and f"{metric}_{HIGH}" in merged:
            low[at] = merged.loc[at, f"{metric}_{LOW}"].to_numpy(dtype=float)
            high[at] = merged.loc[at, f"{metric}_{HIGH}"].to_numpy(dtype=float)
    return cells.assign(**{LOW: low, HIGH: high})


def build_tables(
    summary: pd.DataFrame,
    model_meta: Mapping[str, Mapping[str, Any]] | None = None,
    layouts: Sequence[str] | None = None,
    intervals: pd.DataFrame | None = None,
    defaults: Sequence[str] = DEFAULT_ORDER,
    options: TableOptions = DEFAULT_OPTIONS,
) -> tuple[list[Table], list[str]]:
    """The named layouts (each must apply), or every one of ``defaults`` that applies; returns (tables, notes on
    skipped ones)."""
    if layouts:
        for name in layouts:
            LAYOUTS.get(name)  # unknown names fail with did-you-mean before anything is built
        return [build_table(name, summary, model_meta, intervals, options) for name in dict.fromkeys(layouts)], []
    tables, notes = [], []
    for name in defaults:
        layout = LAYOUTS.get(name)
        reason = layout.missing(summary) if layout.threats else None
        if reason:
            notes.append(f"skipped: {reason}")
            continue
        tables.append(build_table(layout, summary, model_meta, intervals, options))
    return tables, notes
