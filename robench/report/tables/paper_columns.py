"""A paper's own numbers beside robench's: each column of a built table split into ``robench`` and ``paper``.

A robench cell meets a number of ``papers.csv`` (:mod:`robench.report.paper`) when they agree on

- the dataset (robench's ``mnist-5k`` is the papers' ``MNIST``, :data:`~robench.report.paper.PAPER_DATASETS`);
- the row: ``<defense>+<detector>`` for 001's detection tables (``GM+KD``, Tables 7-11), the defense
  for 004's accuracy tables (``MMC``, Tables 1-3), by the defense's table label, so ``GM (gm-a)``
  and ``GM (gm-b)`` both meet the paper's ``GM``;
- the column: the attack label (``C&W-wb``), or ``Clean`` for the clean accuracy;
- the metric, every AUC population counting as one (the paper's ``auc_roc`` sits beside whichever
  population the table shows; which one the paper used is :data:`~robench.report.paper.PAPER_TABLES`').

Numbers the run has no cell for get rows or columns of their own, robench's side empty (``-``);
robench cells the paper has no number for show ``-`` on the paper's side. Only the paper's
datasets that the run's models are on are shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from robench.core.errors import ConfigError
from robench.core.registry import did_you_mean
from robench.report.paper import UPPER_BOUND, PaperNumbers, paper_dataset
from robench.report.tables.build import DATASET_LEVEL
from robench.report.tables.format import NA, format_value
from robench.report.tables.labels import defense_label, detector_label, metric_header
from robench.report.tables.layouts import ACCURACY_THREATS, CLEAN_COLUMN, LAYOUTS, TableOptions
from robench.report.tables.table import DETECTOR, HIGH, LOW, METRIC, TEXT, VALUE, Table
from robench.scoring import records as R
from robench.scoring.metrics import METRICS, NO_DETECTOR, POPULATIONS
from robench.specs.threats import THREATS

SOURCE = "Source"  # the column level added: whose number a column holds
ROBENCH, PAPER = "robench", "paper"
AUC = "auc"  # the metric family of every AUC population
_AUC_METRICS = {p.metric for p in POPULATIONS.values()}

Levels = Callable[
    [str, str, str], dict[str, str]
]  # (paper row, paper column, metric shown) -> the layout's level values


def metric_family(metric: str) -> str:
    """Metrics that fill the same paper cell: every AUC population is one family, other metrics their own."""
    return AUC if metric in _AUC_METRICS else metric


def _split_method(row: str) -> tuple[str, str]:
    """``Softmax+KD+BU`` -> (``Softmax``, ``KD+BU``): defense labels hold no ``+``;
    a row without one has no detector."""
    defense, _, detector = row.partition("+")
    return defense, detector or NA


def _threat_of(attack: str) -> str:
    """The accuracy layout's Threat level of a paper column: the threat whose attack it is.

    ``PGD-10-un (16/255)`` and ``PGD-10-un-2x`` (a reproduction suite's added attack at twice the
    budget) count as PGD-10-un's.
    """
    if attack == CLEAN_COLUMN:
        return ""
    for label in (attack, attack.split(" (")[0], attack.removesuffix("-2x")):
        for threat in ACCURACY_THREATS:
            if label in THREATS.get(threat).labels():
                return threat
    return ""


def _detection_levels(row: str, column: str, metric: str) -> dict[str, str]:
    return {"Detection Method": row, "Attack": column}


def _white_box_levels(row: str, column: str, metric: str) -> dict[str, str]:
    return {"Detection Method": row, "Attack": column, "Metric": metric_header(metric)}


def _black_box_levels(row: str, column: str, metric: str) -> dict[str, str]:
    defense, detector = _split_method(row)
    return {"Attack": column, "Detector": detector, "Target Model": defense}


def _accuracy_levels(row: str, column: str, metric: str) -> dict[str, str]:
    return {"Model": row, "Threat": _threat_of(column), "Attack": column}


# layout -> (rows carry the detector, the level holding the paper's column or None for the attack key, the inverse)
_AXES: dict[str, tuple[bool, str | None, Levels]] = {
    "detection": (True, None, _detection_levels),
    "white-box": (True, None, _white_box_levels),
    "black-box": (True, None, _black_box_levels),
    "accuracy": (False, "Attack", _accuracy_levels),
}
PAPER_READY_LAYOUTS = tuple(_AXES)


def _robench_keys(
    table: Table, meta: Mapping[str, Mapping[str, Any]], with_detector: bool, column_level: str | None
) -> pd.DataFrame:
    """Each robench cell's (dataset, row, column, family) in the papers' terms (dataset None: no paper uses it)."""
    cells = table.cells
    defense = cells[R.MODEL].map(lambda m: str(meta.get(m, {}).get("defense") or ""))
    method = pd.Series([defense_label(d) if d else str(m) for d, m in zip(defense, cells[R.MODEL])], index=cells.index)
    if with_detector:
        detector = cells[DETECTOR].map(lambda d: "" if d == NO_DETECTOR else "+" + detector_label(d))
        method = method + detector
    return pd.DataFrame(
        {
            "dataset": cells[R.MODEL].map(lambda m: paper_dataset(str(meta.get(m, {}).get("dataset") or ""))),
            "row": method,
            "column": cells[column_level] if column_level else cells[R.ATTACK],
            "family": cells[METRIC].map(metric_family),
        },
        index=cells.index,
    )


def _paper_text(value: float, metric: str, note: str) -> tuple[float, str | None]:
    """The paper's number in robench's units (fractions for percentages) and its display text where that is not the
    value's."""
    spec = METRICS.get(metric)
    shown = value / 100.0 if spec.percent else value
    bound = note.strip().lower().startswith(UPPER_BOUND)
    return shown, ("≤" + format_value(shown, metric)) if bound else None


def with_paper_columns(
    table: Table,
    paper: PaperNumbers,
    model_meta: Mapping[str, Mapping[str, Any]] | None,
    options: TableOptions,
    other_dataset: str | None = None,
) -> tuple[Table, list[str]]:
    """``table`` with a ``Source`` column level: each column as ``robench`` and ``paper``
    (the paper's numbers as printed).

    Returns the table and notes (numbers the layout cannot show). A layout without paper
    columns, or a run on none of the paper table's datasets, is a one-line error, unless
    ``other_dataset`` names the paper dataset whose numbers to show anyway (``--paper-dataset``:
    a bundled-data variant of a CIFAR-10 table); the caption then says the datasets differ.
    """
    if table.layout not in _AXES:
        raise ConfigError(f"--paper applies to the layouts {', '.join(_AXES)}, not '{table.layout}'")
    meta = model_meta or {}
    with_detector, column_level, levels_of = _AXES[table.layout]
    keys = _robench_keys(table, meta, with_detector, column_level)
    numbers = paper.numbers
    own_datasets = [d for d in dict.fromkeys(keys["dataset"]) if d]
    if other_dataset is not None:
        if other_dataset not in paper.datasets:
            raise ConfigError(
                f"--paper-dataset {other_dataset}: {paper.table.name} prints numbers for "
                f"{', '.join(paper.datasets)}{did_you_mean(other_dataset, paper.datasets)}"
            )
        keys = keys.assign(dataset=other_dataset)
    run_datasets = [d for d in dict.fromkeys(keys["dataset"]) if d]
    kept = numbers[numbers["dataset"].isin(run_datasets)]
    if kept.empty:
        names = sorted({str(meta.get(m, {}).get("dataset") or "?") for m in table.cells[R.MODEL]})
        run = ", ".join(f"{n} ({paper_dataset(n)})" if paper_dataset(n) else n for n in names)
        others = [t for d in run_datasets for t in paper.by_dataset.get(d, ())]
        hint = f"; tables with {', '.join(run_datasets)} numbers: {', '.join(dict.fromkeys(others))}" if others else ""
        raise ConfigError(
            f"{paper.table.name} prints numbers for {', '.join(paper.datasets)}; the run's models are on {run}{hint}"
        )
    shown: dict[str, str] = {}
    for m in LAYOUTS.get(table.layout).metrics(options):  # the first of a family (the white-box layout: the
        shown.setdefault(metric_family(m), m)  # population's AUC, not the successful-only one beside it)
    notes = []
    unshown = kept[~kept["metric"].map(metric_family).isin(shown)]
    if not unshown.empty:
        notes.append(
            f"{paper.table.name}: {len(unshown)} numbers of metrics the {table.layout} "
            f"layout does not show ({', '.join(dict.fromkeys(unshown['metric']))}) left out"
        )
    kept = kept[kept["metric"].map(metric_family).isin(shown)]
    by_key: dict[tuple[str, str, str, str], pd.Series] = {}
    for _, entry in kept.iterrows():
        key = (entry["dataset"], entry["row"], entry["column"], metric_family(entry["metric"]))
        if key in by_key:
            raise ConfigError(
                f"{paper.source}: {paper.table.name} gives two numbers for one cell "
                f"({', '.join(key[:3])}: {by_key[key]['metric']} and {entry['metric']})"
            )
        by_key[key] = entry

    level_names = [*table.rows, *table.columns]
    robench = table.cells.assign(**{SOURCE: ROBENCH})
    cell_keys = [tuple(k) for k in keys[["dataset", "row", "column", "family"]].itertuples(index=False)]
    matched = [by_key.get(k) if shown.get(k[3]) == m else None for k, m in zip(cell_keys, robench[METRIC])]
    paper_values, paper_texts = [], []
    for cell_metric, entry in zip(robench[METRIC], matched):
        value, text = (
            (np.nan, None) if entry is None else _paper_text(float(entry["value"]), cell_metric, str(entry["note"]))
        )
        paper_values.append(value)
        paper_texts.append(text)
    beside = robench[[*level_names, METRIC]].assign(**{SOURCE: PAPER, VALUE: paper_values, TEXT: paper_texts})

    used = {k for k in cell_keys if k in by_key}
    home = {
        paper_dataset(str(meta.get(m, {}).get("dataset") or "")): str(meta.get(m, {}).get("dataset") or "")
        for m in reversed(list(table.cells[R.MODEL]))
    }
    extra = []
    for key, entry in by_key.items():
        if key in used:
            continue
        metric = shown[key[3]]
        levels = levels_of(entry["row"], entry["column"], metric)
        if DATASET_LEVEL in level_names:
            levels[DATASET_LEVEL] = home.get(entry["dataset"], entry["dataset"])
        value, text = _paper_text(float(entry["value"]), metric, str(entry["note"]))
        extra.append({**levels, METRIC: metric, SOURCE: PAPER, VALUE: value, TEXT: text})
    extra_frame = pd.DataFrame(extra, columns=[*level_names, METRIC, SOURCE, VALUE, TEXT])
    cells = _full_grid(pd.concat([robench, beside, extra_frame], ignore_index=True), table.rows, table.columns)
    datasets = ", ".join(dict.fromkeys(kept["dataset"]))
    caption = (
        f"{table.caption} Beside each robench column, {paper.table.name}'s "
        f"own number ({datasets}; as printed, from {paper.source.name}; "
        f"'-': none); the protocols differ (PROTOCOLS.md beside that file)."
    )
    if other_dataset is not None and other_dataset not in own_datasets:
        caption += (
            f" The paper's numbers are on {other_dataset} and robench's "
            f"on {', '.join(own_datasets) or 'another dataset'}:"
            " different data, shown for orientation, not as a comparison."
        )
    return (
        Table(
            table.layout,
            caption,
            table.label,
            cells,
            table.rows,
            (*table.columns, SOURCE),
            table.best_along,
            table.group,
            (SOURCE, PAPER),
        ),
        notes,
    )


def _grouped(keys: list[tuple[Any, ...]], levels: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """``keys`` with those of one dataset together (in the datasets' first-appearance order), else as they are."""
    if DATASET_LEVEL not in levels:
        return keys
    at = levels.index(DATASET_LEVEL)
    rank = {d: i for i, d in enumerate(dict.fromkeys(k[at] for k in keys))}
    return sorted(keys, key=lambda k: rank[k[at]])  # stable: each dataset keeps its own order


def _full_grid(cells: pd.DataFrame, rows: tuple[str, ...], columns: tuple[str, ...]) -> pd.DataFrame:
    """Every row x column x source cell (NaN where none) in order: the run's rows and columns first,
    then the paper's own.

    :meth:`Table.values` pivots in first-appearance order, so a complete grid in row-major order
    fixes both the row order and the column order (each column's robench side before its paper side).
    """
    row_keys = _grouped(list(dict.fromkeys(zip(*(cells[level] for level in rows)))), rows)
    base_keys = _grouped(list(dict.fromkeys(zip(*(cells[level] for level in columns)))), columns)
    column_metric: dict[tuple[Any, ...], str] = {}
    for key, metric in zip(zip(*(cells[level] for level in columns)), cells[METRIC]):
        if isinstance(metric, str):
            column_metric.setdefault(key, metric)
    grid = pd.DataFrame(
        [(*r, *c, source) for r in row_keys for c in base_keys for source in (ROBENCH, PAPER)],
        columns=[*rows, *columns, SOURCE],
    )
    cells = cells.drop_duplicates(
        [*rows, *columns, SOURCE], keep="first"
    )  # a paper row that repeats a robench label keeps robench's cell
    full = grid.merge(cells, on=[*rows, *columns, SOURCE], how="left", validate="one_to_one")
    missing = full[METRIC].isna()
    if missing.any():
        at = zip(*(full.loc[missing, level] for level in columns))
        full.loc[missing, METRIC] = [column_metric.get(key) for key in at]
    for field in (LOW, HIGH):
        if field in full:
            full[field] = full[field].astype(float)
    return full
