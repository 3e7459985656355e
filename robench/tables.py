"""Paper-layout tables: registered layouts that turn a run's summary into the tables of the papers.

- ``detection``: detection AUC-ROC (%) per defense+detector and attack, semi-white-box (001 Tables 7-8);
- ``white-box``: AUC, distortion and success of C&W-wb per model+detector (001 Tables 9-10);
- ``black-box``: AUC-ROC (%) per target model of attacks crafted on a substitute (001 Table 11);
- ``accuracy``: clean and robust accuracy (%) per model under white-box, SPSA, noise and rotation (004 Tables 1-2);
- ``summary``: every metric of every summary row.

A layout turns the summary into long *cells* (one row per table cell, keyed by
model, threat, attack, detector and metric, so bootstrap intervals can be joined
on), which :func:`Table.values` pivots and :func:`render` formats. Rendering is
pandas' own: ``Styler.to_latex`` (booktabs rules), ``Styler.to_html``,
``DataFrame.to_markdown`` and ``DataFrame.to_csv``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from robench.errors import ConfigError
from robench.metrics import METRICS, SUMMARY_KEYS, with_crafted_on
from robench.registry import Registry, did_you_mean

FORMATS = ("latex", "markdown", "csv", "html")
NA = "-"
UP, DOWN = "\u2191", "\u2193"
PERCENT_METRICS = frozenset({"clean_accuracy", "robust_accuracy", "success_rate", "auc_roc", "flagged_rate"})
METRIC_HEADERS = {
    "clean_accuracy": "Clean Acc. (%)",
    "robust_accuracy": "Robust Acc. (%)",
    "success_rate": "Adv. Success (%)",
    "distortion": "Dist.",
    "auc_roc": "AUC (%)",
    "flagged_rate": "Flagged (%)",
}
# Insertion order is the row order: baselines first and GM last, as in 001 Tables 7-11.
DEFENSE_LABELS = {
    "softmax": "Softmax", "center": "Center", "lgm": "L-GM", "rce": "RCE",
    "mmlda": "MMLDA", "mmc": "MMC", "gccs": "GCCS", "gm": "GM",
}
DETECTOR_LABELS = {"kd": "KD", "bu": "BU", "kd+bu": "KD+BU", "max-prob": "MaxProb", "gm-likelihood": "Likelihood"}
DATASET_LEVEL = "Dataset"


@dataclass(frozen=True)
class ModelInfo:
    """How a model appears in tables: its label (``GM``, or ``GM (gm-a)`` when models share a defense) and dataset."""

    name: str
    label: str
    dataset: str
    rank: int  # row order: the defense's place in DEFENSE_LABELS (unknown defenses last)


def model_infos(models: Sequence[str], model_meta: Mapping[str, Mapping[str, Any]]) -> dict[str, ModelInfo]:
    """Labels for ``models`` from their run.json ``model`` entries (a model without one is labelled by its name)."""
    defense = {m: str(model_meta.get(m, {}).get("defense") or "") for m in models}
    dataset = {m: str(model_meta.get(m, {}).get("dataset") or "") for m in models}
    shared = pd.Series([(defense[m], dataset[m]) for m in models]).value_counts()
    infos = {}
    for m in models:
        base = DEFENSE_LABELS.get(defense[m], defense[m].upper()) if defense[m] else m
        label = f"{base} ({m})" if defense[m] and shared[(defense[m], dataset[m])] > 1 else base
        rank = list(DEFENSE_LABELS).index(defense[m]) if defense[m] in DEFENSE_LABELS else len(DEFENSE_LABELS)
        infos[m] = ModelInfo(m, label, dataset[m], rank)
    return infos


def detector_label(name: str) -> str:
    return DETECTOR_LABELS.get(name, name.upper())


def metric_header(metric: str) -> str:
    """``AUC (%) ↑``: the metric's header with its direction for the defense (``robench.metrics.METRICS``)."""
    arrow = f" {UP if METRICS.get(metric).higher_is_better else DOWN}" if metric in METRICS else ""
    return METRIC_HEADERS.get(metric, metric) + arrow


CellBuilder = Callable[[pd.DataFrame, Mapping[str, ModelInfo]], pd.DataFrame]


@dataclass(frozen=True)
class Layout:
    """A paper table's shape: which summary rows it reads and how they become cells.

    ``cells(selected_summary, infos)`` returns one row per cell with the row-level
    columns ``rows``, the column-level columns ``columns``, and ``model, threat,
    attack, detector, metric, value``. ``model_axis`` says where the models are:
    the best value is marked among them (per column when they are rows, per row
    when they are columns), only within one dataset.
    """

    name: str
    description: str
    caption: str
    threats: tuple[str, ...]
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: CellBuilder
    attacks: tuple[str, ...] = ()  # only these attacks (empty: all)
    needs_detectors: bool = False
    model_axis: Literal["rows", "columns"] = "rows"
    mark_best: bool = True

    def select(self, summary: pd.DataFrame) -> pd.DataFrame:
        selected = summary[summary["threat"].isin(self.threats)]
        if self.attacks:
            selected = selected[selected["attack"].isin(self.attacks)]
        if self.needs_detectors:
            selected = selected[selected["detector"] != NA]
        return selected

    def missing(self, summary: pd.DataFrame) -> str | None:
        """Why this layout does not apply to ``summary`` (``None`` when it does)."""
        wanted = " or ".join(f"'{t}'" for t in self.threats)
        rows = summary[summary["threat"].isin(self.threats)]
        if rows.empty:
            present = ", ".join(dict.fromkeys(summary["threat"])) or "none"
            return f"layout '{self.name}' needs threat {wanted}; the run holds {present}"
        if self.attacks:
            rows = rows[rows["attack"].isin(self.attacks)]
            if rows.empty:
                return f"layout '{self.name}' needs attack {' or '.join(self.attacks)} of threat {wanted}, which the run does not hold"
        if self.needs_detectors and (rows["detector"] == NA).all():
            return f"layout '{self.name}' needs detector scores, and threat {wanted} was run without detectors"
        return None


@dataclass(frozen=True)
class Table:
    """A built layout: long ``cells`` (with ``low``/``high`` when intervals were joined) and how to pivot them."""

    layout: str
    caption: str
    label: str
    cells: pd.DataFrame
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    best_along: Literal["rows", "columns"] | None
    group: str | None = None  # a level (e.g. Dataset) within which values are compared

    @property
    def has_intervals(self) -> bool:
        return "low" in self.cells and "high" in self.cells

    def values(self, field: str = "value") -> pd.DataFrame:
        """The cells' ``field`` pivoted: rows x columns in first-appearance order (raw units, fractions for %)."""
        return _pivot(self.cells, self.rows, self.columns, field)


def _pivot(cells: pd.DataFrame, rows: Sequence[str], columns: Sequence[str], field: str) -> pd.DataFrame:
    row_keys = list(zip(*(cells[level] for level in rows)))
    col_keys = list(zip(*(cells[level] for level in columns)))
    row_order, col_order = list(dict.fromkeys(row_keys)), list(dict.fromkeys(col_keys))
    row_at, col_at = {k: i for i, k in enumerate(row_order)}, {k: i for i, k in enumerate(col_order)}
    out = np.full((len(row_order), len(col_order)), np.nan if field != "metric" else None, dtype=object if field == "metric" else float)
    out[[row_at[k] for k in row_keys], [col_at[k] for k in col_keys]] = cells[field].to_numpy()
    return pd.DataFrame(
        out,
        index=pd.MultiIndex.from_tuples(row_order, names=list(rows)),
        columns=pd.MultiIndex.from_tuples(col_order, names=list(columns)),
    )


# ----------------------------------------------------------------------------- layouts


def _ordered(summary: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.DataFrame:
    """Rows by dataset, defense rank (softmax first, GM last), model, then detector; attacks keep the run's order."""
    detector_rank = {d: i for i, d in enumerate(DETECTOR_LABELS)}
    keys = pd.DataFrame(
        {
            "dataset": summary["model"].map(lambda m: infos[m].dataset),
            "rank": summary["model"].map(lambda m: infos[m].rank),
            "name": summary["model"],
            "det": summary["detector"].map(lambda d: detector_rank.get(d, len(detector_rank))),
            "detector": summary["detector"],
        },
        index=summary.index,
    )
    order = keys.sort_values(["dataset", "rank", "name", "det", "detector"], kind="stable").index
    return summary.loc[order].reset_index(drop=True)  # a fresh index: cell builders interleave parts by it


def _cells(frame: pd.DataFrame, metric: str, **levels: pd.Series | str) -> pd.DataFrame:
    keys = frame[[*SUMMARY_KEYS, "detector"]]
    return keys.assign(**levels, metric=metric, value=frame[metric].astype(float))


def _model_label(frame: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.Series:
    return frame["model"].map(lambda m: infos[m].label)


def _method_label(frame: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.Series:
    model = _model_label(frame, infos)
    detector = frame["detector"].map(lambda d: "" if d == NA else "+" + detector_label(d))
    return model + detector


def _detection_cells(selected: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.DataFrame:
    ordered = _ordered(selected, infos)
    return _cells(ordered, "auc_roc", **{"Detection Method": _method_label(ordered, infos), "Attack": ordered["attack"]})


WHITE_BOX_METRICS = ("auc_roc", "distortion", "success_rate")


def _white_box_cells(selected: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.DataFrame:
    ordered = _ordered(selected, infos)
    method = _method_label(ordered, infos)
    parts = [_cells(ordered, m, **{"Detection Method": method, "Metric": metric_header(m)}) for m in WHITE_BOX_METRICS]
    # interleave so each row's three cells are adjacent and rows keep their order
    return pd.concat(parts).sort_index(kind="stable")


def _substitute_note(frame: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.Series:
    """`` (from SUB)`` where the attack was crafted on another model, so two substitutes give two rows."""
    if "crafted_on" not in frame:
        return pd.Series("", index=frame.index)
    crafted = frame["crafted_on"].astype(str)
    label = crafted.map(lambda m: infos[m].label if m in infos else m)
    return (" (from " + label + ")").where(crafted != frame["model"].astype(str), "")


def _black_box_cells(selected: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.DataFrame:
    ordered = _ordered(selected, infos)
    attack_rank = {a: i for i, a in enumerate(dict.fromkeys(selected["attack"]))}
    ordered = ordered.iloc[np.argsort(ordered["attack"].map(attack_rank).to_numpy(), kind="stable")]
    return _cells(
        ordered,
        "auc_roc",
        Attack=ordered["attack"],
        Detector=ordered["detector"].map(detector_label),
        **{"Target Model": _model_label(ordered, infos) + _substitute_note(ordered, infos)},
    )


ACCURACY_THREATS = ("white-box", "spsa", "noise", "rotation")


def _accuracy_cells(selected: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.DataFrame:
    # accuracies do not depend on the detector: one summary row per model x threat x attack
    per_attack = _ordered(selected, infos).drop_duplicates(SUMMARY_KEYS)
    threat_rank = per_attack["threat"].map({t: i for i, t in enumerate(ACCURACY_THREATS)})
    per_attack = per_attack.iloc[np.argsort(threat_rank.to_numpy(), kind="stable")]
    # clean accuracy from the model's largest evaluation (its threats may have used different n)
    largest = per_attack.sort_values("n", ascending=False, kind="stable").drop_duplicates("model")
    clean = _ordered(largest, infos)
    return pd.concat(
        [
            _cells(clean, "clean_accuracy", Model=_model_label(clean, infos), Threat="", Attack="Clean"),
            _cells(per_attack, "robust_accuracy", Model=_model_label(per_attack, infos), Threat=per_attack["threat"], Attack=per_attack["attack"]),
        ],
        ignore_index=True,
    )


def _summary_cells(selected: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.DataFrame:
    metrics = ["n", *[c for c in selected.columns if c in METRICS]]  # unknown extra columns are ignored
    # transfer rows name their substitute, so one target attacked from two substitutes keeps two rows
    threat = selected["threat"] + _substitute_note(selected, infos)
    levels = {"Model": selected["model"], "Threat": threat, "Attack": selected["attack"], "Detector": selected["detector"]}
    parts = [_cells(selected, m, **levels, Metric=metric_header(m)) for m in metrics]
    return pd.concat(parts).sort_index(kind="stable")


LAYOUTS: Registry[Layout] = Registry("table layout")
for _layout in (
    Layout(
        name="detection",
        description="detection AUC-ROC (%) per defense+detector and attack, semi-white-box (001 Tables 7-8)",
        caption="Detection AUC-ROC scores (%) for semi-white-box attacks (layout of 001 Tables 7-8).",
        threats=("semi-white-box",),
        rows=("Detection Method",),
        columns=("Attack",),
        cells=_detection_cells,
        needs_detectors=True,
    ),
    Layout(
        name="white-box",
        description="AUC-ROC, distortion and success rate of C&W-wb per model+detector (001 Tables 9-10)",
        caption="Results under white-box attacks; adversarial examples generated with C&W-wb (layout of 001 Tables 9-10).",
        threats=("white-box",),
        attacks=("C&W-wb",),
        rows=("Detection Method",),
        columns=("Metric",),
        cells=_white_box_cells,
    ),
    Layout(
        name="black-box",
        description="AUC-ROC (%) per target model of attacks crafted on a substitute model (001 Table 11)",
        caption="AUC-ROC scores (%) for black-box attacks crafted on a substitute model (layout of 001 Table 11).",
        threats=("black-box",),
        rows=("Attack", "Detector"),
        columns=("Target Model",),
        cells=_black_box_cells,
        needs_detectors=True,
        model_axis="columns",
    ),
    Layout(
        name="accuracy",
        description="clean and robust accuracy (%) under white-box, SPSA, noise and rotation attacks (004 Tables 1-2)",
        caption="Classification accuracy (%) on clean inputs and under {threats} attacks (layout of 004 Tables 1-2).",
        threats=ACCURACY_THREATS,
        rows=("Model",),
        columns=("Threat", "Attack"),
        cells=_accuracy_cells,
    ),
):
    LAYOUTS.register(_layout.name, _layout)
LAYOUTS.register(
    "summary",
    Layout(
        name="summary",
        description="every metric per model, threat, attack and detector",
        caption="Every metric per model, threat, attack and detector.",
        threats=(),  # every threat: see build_table
        rows=("Model", "Threat", "Attack", "Detector"),
        columns=("Metric",),
        cells=_summary_cells,
        mark_best=False,
    ),
)
# The order in which "every layout that applies" is built; the whole summary suits CSV and HTML more than a paper.
DEFAULT_ORDER = ("detection", "white-box", "black-box", "accuracy", "summary")
PAPER_LAYOUTS = DEFAULT_ORDER[:-1]


# ----------------------------------------------------------------------------- building


def build_table(
    layout: str | Layout,
    summary: pd.DataFrame,
    model_meta: Mapping[str, Mapping[str, Any]] | None = None,
    intervals: pd.DataFrame | None = None,
) -> Table:
    """Build one layout from a summary (``metrics.summarize``) and run.json model entries.

    ``intervals`` (``bootstrap.bootstrap_intervals``) adds ``low``/``high`` to each cell.
    Raises ConfigError when the layout's threat, attack or detectors are absent.
    """
    spec = LAYOUTS.get(layout) if isinstance(layout, str) else layout
    summary = with_crafted_on(summary)
    intervals = with_crafted_on(intervals) if intervals is not None else None
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
    infos = model_infos(list(dict.fromkeys(selected["model"])), model_meta or {})
    cells = spec.cells(selected, infos).reset_index(drop=True)
    rows, columns, group = spec.rows, spec.columns, None
    datasets = {infos[m].dataset for m in cells["model"]}
    if spec.mark_best and len(datasets) > 1:
        # models from several datasets: add a Dataset level on the model axis and compare within it
        cells.insert(0, DATASET_LEVEL, cells["model"].map(lambda m: infos[m].dataset or "?"))
        group = DATASET_LEVEL
        if spec.model_axis == "rows":  # cells come ordered by dataset already (_ordered)
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
    return Table(spec.name, _caption(spec, selected), f"tab:robench-{spec.name}", cells, rows, columns, best_along, group)


def _caption(spec: Layout, selected: pd.DataFrame) -> str:
    counts = sorted(set(selected["n"].astype(int)))
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    present = set(selected["threat"])
    threats = [t for t in spec.threats if t in present] or sorted(present)
    listed = ", ".join(threats[:-1]) + (" and " if len(threats) > 1 else "") + threats[-1]
    return f"{spec.caption.format(threats=listed)} n = {n} test samples per attack."


def _join_intervals(cells: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    keys = [*SUMMARY_KEYS, "detector"]
    merged = cells.merge(intervals, on=keys, how="left", validate="many_to_one")
    low, high = np.full(len(cells), np.nan), np.full(len(cells), np.nan)
    for metric in merged["metric"].unique():
        at = (merged["metric"] == metric).to_numpy()
        if f"{metric}_low" in merged and f"{metric}_high" in merged:
            low[at] = merged.loc[at, f"{metric}_low"].to_numpy(dtype=float)
            high[at] = merged.loc[at, f"{metric}_high"].to_numpy(dtype=float)
    return cells.assign(low=low, high=high)


def build_tables(
    summary: pd.DataFrame,
    model_meta: Mapping[str, Mapping[str, Any]] | None = None,
    layouts: Sequence[str] | None = None,
    intervals: pd.DataFrame | None = None,
    defaults: Sequence[str] = DEFAULT_ORDER,
) -> tuple[list[Table], list[str]]:
    """The named layouts (each must apply), or every one of ``defaults`` that applies; returns (tables, notes on skipped ones)."""
    if layouts:
        for name in layouts:
            LAYOUTS.get(name)  # unknown names fail with did-you-mean before anything is built
        return [build_table(name, summary, model_meta, intervals) for name in dict.fromkeys(layouts)], []
    tables, notes = [], []
    for name in defaults:
        layout = LAYOUTS.get(name)
        reason = layout.missing(summary) if layout.threats else None
        if reason:
            notes.append(f"skipped: {reason}")
            continue
        tables.append(build_table(layout, summary, model_meta, intervals))
    return tables, notes


# ----------------------------------------------------------------------------- formatting


def format_value(value: float, metric: str) -> str:
    """1 decimal for percentages, 2 for distortion, integers for counts; NaN as ``-``."""
    if value is None or not np.isfinite(value):
        return NA
    if metric == "n":
        return f"{int(value)}"
    if metric in PERCENT_METRICS:
        return f"{100 * value:.1f}"
    return f"{value:.2f}"


def _rounded(value: float, metric: str) -> float:
    text = format_value(value, metric)
    return float(text) if text != NA else np.nan


def best_mask(table: Table) -> pd.DataFrame:
    """True where a cell holds the best value of its column (or row) by its metric's direction; ties all marked.

    Values are compared as displayed (rounded), so two cells that read the same are both marked.
    """
    values, metrics = table.values(), table.values("metric")
    mask = pd.DataFrame(False, index=values.index, columns=values.columns)
    if table.best_along is None:
        return mask
    shown = np.vectorize(_rounded, otypes=[float])(values.to_numpy(), metrics.fillna("n").to_numpy())
    higher = np.vectorize(lambda m: bool(m in METRICS and METRICS.get(m).higher_is_better), otypes=[bool])(metrics.fillna("n").to_numpy())
    comparable = np.vectorize(lambda m: m in METRICS, otypes=[bool])(metrics.fillna("n").to_numpy())
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
    """Each cell as displayed: ``84.3``, or ``84.3 [82.1, 86.0]`` with intervals; ``-`` for NaN or no cell."""
    values, metrics = table.values(), table.values("metric").fillna("n")
    fmt = np.vectorize(format_value, otypes=[object])
    text = fmt(values.to_numpy(), metrics.to_numpy())
    if table.has_intervals:
        low = fmt(table.values("low").to_numpy(), metrics.to_numpy())
        high = fmt(table.values("high").to_numpy(), metrics.to_numpy())
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


def _flat_columns(frame: pd.DataFrame) -> list[str]:
    if not isinstance(frame.columns, pd.MultiIndex):
        return [str(c) for c in frame.columns]
    return [" / ".join(str(part) for part in column if str(part)) for column in frame.columns]


# ----------------------------------------------------------------------------- rendering

# Tables of more rows than this are longtables (they need \\usepackage{longtable}), which break across pages.
LONGTABLE_ROWS = 40
# Standalone documents are previews: landscape, small type and narrow columns so wide tables fit.
COMPACT_LATEX = [{"selector": "footnotesize", "props": ":;"}, {"selector": "setlength", "props": ":{\\tabcolsep}{3pt};"}]
STANDALONE_LATEX = (
    "\\documentclass{article}\n\\usepackage[landscape,margin=1.5cm]{geometry}\n\\usepackage{booktabs}\n\\usepackage{longtable}\n"
    "\\begin{document}\n%s\n\\end{document}\n"
)
STANDALONE_HTML = '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>robench report</title>\n</head>\n<body>\n%s\n</body>\n</html>\n'
_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}  # fmt: skip


def _latex_text(text: str) -> str:
    """Escape a caption (Styler escapes cells and headers itself, but not the caption)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text).replace(UP, r"$\uparrow$").replace(DOWN, r"$\downarrow$")


def _arrows_to_latex(label: Any) -> str:
    # Styler has escaped the label already; the arrows are not ASCII and pdflatex would reject them
    return str(label).replace(UP, r"$\uparrow$").replace(DOWN, r"$\downarrow$")


def _latex(table: Table, best: bool, compact: bool = False) -> str:
    frame, bold = display_frame(table, best)
    css = pd.DataFrame(np.where(bold, "textbf: --rwrap;", ""), index=bold.index, columns=bold.columns)
    styler = (
        frame.style.hide(axis="index")
        .format(escape="latex")
        .format_index(_arrows_to_latex, escape="latex", axis=1)
        .apply(lambda _: css, axis=None)
    )
    long = len(frame) > LONGTABLE_ROWS  # a float cannot break across pages; a longtable can
    if compact and not long:
        styler = styler.set_table_styles(COMPACT_LATEX, overwrite=False)
    latex = styler.to_latex(
        hrules=True,
        caption=_latex_text(table.caption),
        label=table.label,
        position_float=None if long else "centering",
        position=None if long else "htbp",
        multicol_align="c",
        column_format="l" * len(table.rows) + "r" * (frame.shape[1] - len(table.rows)),
        environment="longtable" if long else "table",
    )
    # inside a longtable a size command would land in the first cell: set it around the environment instead
    return "\\begingroup\\footnotesize\\setlength{\\tabcolsep}{3pt}\n" + latex + "\\endgroup\n" if compact and long else latex


def _html(table: Table, best: bool) -> str:
    frame, bold = display_frame(table, best)
    css = pd.DataFrame(np.where(bold, "font-weight: bold;", ""), index=bold.index, columns=bold.columns)
    styler = (
        frame.style.hide(axis="index")
        .format(escape="html")
        .format_index(escape="html", axis=1)
        .apply(lambda _: css, axis=None)
        .set_caption(html.escape(table.caption))  # Styler escapes cells and headers, not the caption
        .set_uuid(table.layout.replace("-", "_"))  # a fixed id instead of a random one: the same run renders the same bytes
    )
    return styler.to_html()


def _markdown(table: Table, best: bool) -> str:
    frame, bold = display_frame(table, best)
    text = frame.astype(str).apply(lambda column: column.str.replace("|", "\\|", regex=False))
    text = text.where(~bold.to_numpy(), "**" + text + "**")
    text.columns = _flat_columns(frame)
    return f"**{table.caption}**\n\n" + text.to_markdown(index=False, disable_numparse=True) + "\n"


def _csv(table: Table, best: bool) -> str:
    frame, _ = display_frame(table, best=False)  # plain text: no markup in a CSV
    frame.columns = _flat_columns(frame)
    return frame.to_csv(index=False)


_RENDERERS: dict[str, Callable[[Table, bool], str]] = {"latex": _latex, "markdown": _markdown, "csv": _csv, "html": _html}


def render(table: Table, fmt: str, *, best: bool = True, standalone: bool = False) -> str:
    """One table as LaTeX (booktabs, via ``Styler.to_latex``), Markdown, CSV or HTML."""
    return render_tables([table], fmt, best=best, standalone=standalone)


def render_tables(tables: Sequence[Table], fmt: str, *, best: bool = True, standalone: bool = False) -> str:
    """Several tables in one text; ``standalone`` wraps LaTeX in a compilable document (HTML in a page).

    CSV holds one table as plain CSV; several are blocks, each after a ``# layout: caption`` line.
    """
    if fmt not in _RENDERERS:
        raise ConfigError(f"unknown table format '{fmt}'{did_you_mean(fmt, list(FORMATS))}; known: {', '.join(FORMATS)}")
    if standalone and fmt not in ("latex", "html"):
        raise ConfigError(f"--standalone applies to the latex and html formats, not '{fmt}'")
    parts = [_latex(table, best, compact=standalone) if fmt == "latex" else _RENDERERS[fmt](table, best) for table in tables]
    if fmt == "csv" and len(tables) > 1:
        parts = [f"# {t.layout}: {t.caption}\n{part}" for t, part in zip(tables, parts)]
    body = "\n".join(parts)
    if standalone:
        return (STANDALONE_LATEX if fmt == "latex" else STANDALONE_HTML) % body
    return body
