"""The registered paper layouts: which summary rows each table reads and how they become long cells.

A layout's cell builder returns one row per table cell, keyed by the summary's keys (model,
threat, attack, crafting model), its detector and metric, with the layout's row and column
levels beside them (so bootstrap intervals can be joined on the keys; see :mod:`.build`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from robench.core.errors import ConfigError
from robench.core.registry import Registry
from robench.report.tables.labels import ModelInfo, detector_label, detector_rank, metric_header
from robench.report.tables.table import COUNT, DETECTOR, METRIC, VALUE
from robench.scoring import records as R
from robench.scoring.metrics import DEFAULT_POPULATION, METRICS, NO_DETECTOR, SUMMARY_KEYS, population
from robench.scoring.worst_case import WORST_CASE, is_worst_case

DISTORTION, DISTORTION_255 = "distortion", "distortion_255"  # the metrics' names
# 001 Table 10's reference-copy attacker (robench.attacks.cw_wb.REFERENCE_COPY_LABEL; a test checks they agree)
REFERENCE_COPY_LABEL = "C&W-wb/carlini"
DISTORTION_SCALES = {1: DISTORTION, 255: DISTORTION_255}  # --scale -> the white-box layout's distortion metric


@dataclass(frozen=True)
class TableOptions:
    """How cells that could show several metrics are filled: the AUC population and the distortion scale."""

    population: str = DEFAULT_POPULATION  # a key of metrics.POPULATIONS
    distortion_scale: int = 1  # 1: the model's input units ([0, 1]); 255: the 0-255 pixel scale

    def __post_init__(self) -> None:
        population(self.population)  # an unknown name: one-line error with a suggestion
        if self.distortion_scale not in DISTORTION_SCALES:
            raise ConfigError(
                f"distortion scale must be one of {', '.join(map(str, DISTORTION_SCALES))}, got {self.distortion_scale}"
            )

    @property
    def auc_metric(self) -> str:
        """The AUC metric of the population (``auc_paired`` for ``paired``)."""
        return population(self.population).metric

    @property
    def distortion_metric(self) -> str:
        return DISTORTION_SCALES[self.distortion_scale]


DEFAULT_OPTIONS = TableOptions()
CellBuilder = Callable[[pd.DataFrame, Mapping[str, ModelInfo], TableOptions], pd.DataFrame]
MetricList = Callable[[TableOptions], tuple[str, ...]]


@dataclass(frozen=True)
class Layout:
    """A paper table's shape: which summary rows it reads and how they become cells.

    ``cells(selected_summary, infos, options)`` returns one row per cell with the row-level
    columns ``rows``, the column-level columns ``columns``, and ``model, threat,
    attack, detector, metric, value``. ``metrics(options)`` names the metrics it shows
    (empty: every metric of the summary). ``model_axis`` says where the models are:
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
    metrics: MetricList = lambda options: ()
    attacks: tuple[str, ...] = ()  # only these attacks (empty: all)
    attack_prefix: str = ""  # only attacks whose label starts with this (a suite's added variants, e.g. "C&W-wb/...")
    needs_detectors: bool = False
    model_axis: Literal["rows", "columns"] = "rows"
    mark_best: bool = True
    single_dropped: tuple[str, ...] = ()  # levels left out of the table when they hold one value (white-box: Attack)

    def select(self, summary: pd.DataFrame) -> pd.DataFrame:
        selected = summary[summary[R.THREAT].isin(self.threats)]
        if not self.attack_prefix.startswith(WORST_CASE):  # the worst cases have their own layout
            selected = selected[~selected[R.ATTACK].map(is_worst_case).to_numpy(dtype=bool)]
        if self.attacks:
            selected = selected[selected[R.ATTACK].isin(self.attacks)]
        if self.attack_prefix:
            selected = selected[selected[R.ATTACK].astype(str).str.startswith(self.attack_prefix)]
        if self.needs_detectors:
            selected = selected[selected[DETECTOR] != NO_DETECTOR]
        return selected

    def missing(self, summary: pd.DataFrame) -> str | None:
        """Why this layout does not apply to ``summary`` (``None`` when it does)."""
        wanted = " or ".join(f"'{t}'" for t in self.threats)
        rows = summary[summary[R.THREAT].isin(self.threats)]
        if rows.empty:
            present = ", ".join(dict.fromkeys(summary[R.THREAT])) or "none"
            return f"layout '{self.name}' needs threat {wanted}; the run holds {present}"
        if self.attacks:
            rows = rows[rows[R.ATTACK].isin(self.attacks)]
            if rows.empty:
                return (
                    f"layout '{self.name}' needs attack {' or '.join(self.attacks)} of threat {wanted}, "
                    "which the run does not hold"
                )
        if self.attack_prefix:
            rows = rows[rows[R.ATTACK].astype(str).str.startswith(self.attack_prefix)]
            if rows.empty:
                return (
                    f"layout '{self.name}' needs attacks labelled '{self.attack_prefix}...' of threat {wanted}, "
                    "which the run does not hold"
                )
        if self.needs_detectors and (rows[DETECTOR] == NO_DETECTOR).all():
            return f"layout '{self.name}' needs detector scores, and threat {wanted} was run without detectors"
        return None


# ----------------------------------------------------------------------------- cell builders


def _ordered(summary: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.DataFrame:
    """Rows by dataset, defense rank (softmax first, GM last), model, then detector; attacks keep the run's order."""
    keys = pd.DataFrame(
        {
            "dataset": summary[R.MODEL].map(lambda m: infos[m].dataset),
            "rank": summary[R.MODEL].map(lambda m: infos[m].rank),
            "name": summary[R.MODEL],
            "det": summary[DETECTOR].map(detector_rank),
            DETECTOR: summary[DETECTOR],
        },
        index=summary.index,
    )
    order = keys.sort_values(["dataset", "rank", "name", "det", DETECTOR], kind="stable").index
    return summary.loc[order].reset_index(drop=True)  # a fresh index: cell builders interleave parts by it


def _cells(frame: pd.DataFrame, metric: str, **levels: pd.Series | str) -> pd.DataFrame:
    if metric not in frame:  # a hand-made or old summary without the requested population's column
        raise ConfigError(
            f"the summary has no '{metric}' column (summaries of runs read by this robench have every metric)"
        )
    keys = frame[[*SUMMARY_KEYS, DETECTOR]]
    return keys.assign(**levels, **{METRIC: metric, VALUE: frame[metric].astype(float)})


def _model_label(frame: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.Series:
    return frame[R.MODEL].map(lambda m: infos[m].label)


def _method_label(frame: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.Series:
    model = _model_label(frame, infos)
    detector = frame[DETECTOR].map(lambda d: "" if d == NO_DETECTOR else "+" + detector_label(d))
    return model + detector


def _auc_only(options: TableOptions) -> tuple[str, ...]:
    return (options.auc_metric,)


def _detection_cells(selected: pd.DataFrame, infos: Mapping[str, ModelInfo], options: TableOptions) -> pd.DataFrame:
    ordered = _ordered(selected, infos)
    return _cells(
        ordered, options.auc_metric, **{"Detection Method": _method_label(ordered, infos), "Attack": ordered[R.ATTACK]}
    )


WHITE_BOX_METRICS = ("auc_roc", DISTORTION, "success_rate")  # with the default options


def white_box_metrics(options: TableOptions) -> tuple[str, ...]:
    """AUC of the population, the successful-only AUC beside it (when the population is another), distortion at the
    scale, success rate: the columns of 001 Tables 9-10.

    The successful-only AUC is always shown: an attacker that descends on the scored detector ends its successful
    examples at eta by construction, so that AUC sits near 50 there, while a paired AUC also counts how far the
    failed ones got (docs/detectors.md).
    """
    aucs = (options.auc_metric,) if options.auc_metric == "auc_roc" else (options.auc_metric, "auc_roc")
    return (*aucs, options.distortion_metric, "success_rate")


def _white_box_cells(selected: pd.DataFrame, infos: Mapping[str, ModelInfo], options: TableOptions) -> pd.DataFrame:
    ordered = _ordered(selected, infos)
    method = _method_label(ordered, infos)
    parts = [
        _cells(ordered, m, **{"Detection Method": method, "Attack": ordered[R.ATTACK], "Metric": metric_header(m)})
        for m in white_box_metrics(options)
    ]
    # interleave so each row's three cells are adjacent and rows keep their order
    return pd.concat(parts).sort_index(kind="stable")


ABLATION_METRICS = ("auc_roc", "auc_attempted", "auc_paired", "success_rate")


def ablation_metrics(options: TableOptions) -> tuple[str, ...]:
    """Every AUC population side by side, the success rate and the distortion on the options' scale."""
    return (*ABLATION_METRICS, options.distortion_metric)


def _ablation_cells(selected: pd.DataFrame, infos: Mapping[str, ModelInfo], options: TableOptions) -> pd.DataFrame:
    ordered = _ordered(selected, infos)
    attack_rank = {a: i for i, a in enumerate(dict.fromkeys(selected[R.ATTACK]))}
    ordered = ordered.iloc[np.argsort(ordered[R.ATTACK].map(attack_rank).to_numpy(), kind="stable")].reset_index(
        drop=True
    )
    levels = {"Attack": ordered[R.ATTACK], "Detection Method": _method_label(ordered, infos)}
    parts = [_cells(ordered, m, **levels, Metric=metric_header(m)) for m in ablation_metrics(options)]
    return pd.concat(parts).sort_index(kind="stable")


def _substitute_note(frame: pd.DataFrame, infos: Mapping[str, ModelInfo]) -> pd.Series:
    """`` (from SUB)`` where the attack was crafted on another model, so two substitutes give two rows."""
    if R.CRAFTED_ON not in frame:
        return pd.Series("", index=frame.index)
    crafted = frame[R.CRAFTED_ON].astype(str)
    label = crafted.map(lambda m: infos[m].label if m in infos else m)
    return (" (from " + label + ")").where(crafted != frame[R.MODEL].astype(str), "")


def _black_box_cells(selected: pd.DataFrame, infos: Mapping[str, ModelInfo], options: TableOptions) -> pd.DataFrame:
    ordered = _ordered(selected, infos)
    attack_rank = {a: i for i, a in enumerate(dict.fromkeys(selected[R.ATTACK]))}
    ordered = ordered.iloc[np.argsort(ordered[R.ATTACK].map(attack_rank).to_numpy(), kind="stable")]
    return _cells(
        ordered,
        options.auc_metric,
        Attack=ordered[R.ATTACK],
        Detector=ordered[DETECTOR].map(detector_label),
        **{"Target Model": _model_label(ordered, infos) + _substitute_note(ordered, infos)},
    )


ACCURACY_THREATS = ("white-box", "spsa", "noise", "rotation")
ACCURACY_METRICS = ("clean_accuracy", "robust_accuracy")
CLEAN_COLUMN = "Clean"  # the accuracy layout's Attack level of the clean-accuracy column


def _accuracy_cells(selected: pd.DataFrame, infos: Mapping[str, ModelInfo], options: TableOptions) -> pd.DataFrame:
    # accuracies do not depend on the detector: one summary row per model x threat x attack
    per_attack = _ordered(selected, infos).drop_duplicates(SUMMARY_KEYS)
    threat_rank = per_attack[R.THREAT].map({t: i for i, t in enumerate(ACCURACY_THREATS)})
    per_attack = per_attack.iloc[np.argsort(threat_rank.to_numpy(), kind="stable")]
    # clean accuracy from the model's largest evaluation (its threats may have used different n)
    largest = per_attack.sort_values(COUNT, ascending=False, kind="stable").drop_duplicates(R.MODEL)
    clean = _ordered(largest, infos)
    return pd.concat(
        [
            _cells(clean, ACCURACY_METRICS[0], Model=_model_label(clean, infos), Threat="", Attack=CLEAN_COLUMN),
            _cells(
                per_attack,
                ACCURACY_METRICS[1],
                Model=_model_label(per_attack, infos),
                Threat=per_attack[R.THREAT],
                Attack=per_attack[R.ATTACK],
            ),
        ],
        ignore_index=True,
    )


WORST_CASE_THREATS = ("semi-white-box", "white-box", "black-box", "spsa")
WORST_CASE_METRICS = ("survival", "survival_detected")


def _worst_case_cells(selected: pd.DataFrame, infos: Mapping[str, ModelInfo], options: TableOptions) -> pd.DataFrame:
    ordered = _ordered(selected, infos)
    threat_rank = (
        ordered[R.THREAT].map({t: i for i, t in enumerate(WORST_CASE_THREATS)}).fillna(len(WORST_CASE_THREATS))
    )
    ordered = ordered.iloc[np.argsort(threat_rank.to_numpy(), kind="stable")].reset_index(drop=True)
    threat = ordered[R.THREAT] + _substitute_note(ordered, infos)
    method = _method_label(ordered, infos)
    budget = ordered[R.ATTACK].astype(str).str.slice(len(WORST_CASE) + 1)  # "worst-case Linf 0.3" -> "Linf 0.3"
    parts = [
        _cells(
            ordered, m, **{"Detection Method": method, "Threat": threat, "Budget": budget, "Metric": metric_header(m)}
        )
        for m in WORST_CASE_METRICS
    ]
    return pd.concat(parts).sort_index(kind="stable")


def _summary_cells(selected: pd.DataFrame, infos: Mapping[str, ModelInfo], options: TableOptions) -> pd.DataFrame:
    metrics = [COUNT, *[c for c in selected.columns if c in METRICS]]  # unknown extra columns are ignored
    # transfer rows name their substitute, so one target attacked from two substitutes keeps two rows
    threat = selected[R.THREAT] + _substitute_note(selected, infos)
    levels = {
        "Model": selected[R.MODEL],
        "Threat": threat,
        "Attack": selected[R.ATTACK],
        "Detector": selected[DETECTOR],
    }
    parts = [_cells(selected, m, **levels, Metric=metric_header(m)) for m in metrics]
    return pd.concat(parts).sort_index(kind="stable")


# ----------------------------------------------------------------------------- the registry

LAYOUTS: Registry[Layout] = Registry("table layout", base=Layout)
for _layout in (
    Layout(
        name="detection",
        description="detection AUC-ROC (%) per defense+detector and attack, semi-white-box (001 Tables 7-8)",
        caption="Detection AUC-ROC scores (%) for semi-white-box attacks (layout of 001 Tables 7-8).",
        threats=("semi-white-box",),
        rows=("Detection Method",),
        columns=("Attack",),
        cells=_detection_cells,
        metrics=_auc_only,
        needs_detectors=True,
    ),
    Layout(
        name="white-box",
        description="AUC-ROC, distortion and success rate of C&W-wb per model+detector (001 Tables 9-10)",
        caption=(
            "Results under white-box attacks; adversarial examples generated with C&W-wb (layout of 001 Tables 9-10)."
        ),
        threats=("white-box",),
        attacks=("C&W-wb", REFERENCE_COPY_LABEL),  # the scored-KD attacker and the reference copy, side by side
        rows=("Detection Method",),
        columns=("Attack", "Metric"),
        cells=_white_box_cells,
        metrics=white_box_metrics,
        single_dropped=("Attack",),
    ),
    Layout(
        name="black-box",
        description="AUC-ROC (%) per target model of attacks crafted on a substitute model (001 Table 11)",
        caption="AUC-ROC scores (%) for black-box attacks crafted on a substitute model (layout of 001 Table 11).",
        threats=("black-box",),
        rows=("Attack", "Detector"),
        columns=("Target Model",),
        cells=_black_box_cells,
        metrics=_auc_only,
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
        metrics=lambda options: ACCURACY_METRICS,
    ),
):
    LAYOUTS.register(_layout)
LAYOUTS.register(
    Layout(
        name="white-box-ablation",
        description=(
            "C&W-wb variants (a suite's added 'C&W-wb/...' attacks): every AUC population, success and distortion"
        ),
        caption=(
            "C&W-wb variants against the classifier and its KD detector: the AUC of each population "
            "(successful, attempted, paired), success rate and distortion."
        ),
        threats=("white-box",),
        attack_prefix="C&W-wb/",
        rows=("Attack", "Detection Method"),
        columns=("Metric",),
        cells=_ablation_cells,
        metrics=ablation_metrics,
    ),
)
LAYOUTS.register(
    Layout(
        name="worst-case",
        description=(
            "worst case per sample over each threat's attacks at each budget: survived, and survived or flagged per "
            "detector (AutoAttack-style)"
        ),
        caption=(
            "Worst case per sample over each threat's attacks at each budget (norm and eps, in the model's input "
            "units): the clean-correct samples that no attack output inside the ball misclassified "
            "(Survived), and, per detector, those that no output inside the ball misclassified "
            "without being flagged at the clean 5% false-positive threshold "
            "(Surv. or flagged)."
        ),
        threats=WORST_CASE_THREATS,
        attack_prefix=WORST_CASE + " ",
        rows=("Detection Method",),
        columns=("Threat", "Budget", "Metric"),
        cells=_worst_case_cells,
        metrics=lambda options: WORST_CASE_METRICS,
    ),
)
LAYOUTS.register(
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
DEFAULT_ORDER = ("detection", "white-box", "black-box", "accuracy", "worst-case", "summary")
PAPER_LAYOUTS = DEFAULT_ORDER[:-1]
