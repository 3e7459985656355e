"""Figures of a run directory, each written as PNG and PDF.

- ``roc-MODEL-THREAT``: ROC curves, one panel per detector, one curve per attack; positives are the
  clean inputs classified correctly, negatives their successful adversarial inputs (the definition of
  ``robench.scoring.metrics.auc_roc``, as in 001 Tables 7-11);
- ``kd-hist-THREAT``: K-density histograms of clean vs adversarial scores, attacks x models (001 Fig. 5);
- ``budget-THREAT-ATTACK``: robust accuracy vs the attack's budget (eps, noise sigma, rotation degrees)
  when a run holds one registered attack at several budgets;
- ``features-MODEL``: the test split's 2-D features coloured by class, for models whose feature_dim
  is 2 (001 Fig. 1);
- ``curve-MODEL-THREAT`` (``curve-MODEL-THREAT-from-SUBSTITUTE`` for transfer): robustness curves, robust
  accuracy vs eps from each sample's smallest breaking distance (:mod:`robench.scoring.curves`), a panel per
  norm, a line per detector (none, then each detector: only unflagged outputs break a sample) with its
  95% bootstrap band, the threat's budgets marked.

Every function returns the files it wrote and notes on what it skipped and why. Every name drawn
(model, threat, attack, detector, parameter) is :func:`robench.core.mpl.literal`: drawn as it is, never as math.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from robench.core.errors import ConfigError, RobenchError
from robench.core.mpl import literal, pyplot
from robench.core.provenance import atomic_write_bytes
from robench.report.rundir import RunDir
from robench.scoring import records as R
from robench.scoring.metrics import NO_DETECTOR, metric_value, roc_points

plt = pyplot()  # Agg, its caches in a folder robench owns (robench.core.mpl)

FIGURE_FORMATS = ("png", "pdf")
# The formats save_figure writes; plot_run_dir(formats=...) narrows them for one call (the HTML report needs PNG only).
_FORMATS: ContextVar[tuple[str, ...]] = ContextVar("robench_figure_formats", default=FIGURE_FORMATS)
KD_DETECTOR = "kd"
MAX_EMBEDDING_POINTS = 5000


@dataclass
class PlotResult:
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: PlotResult) -> PlotResult:
        self.files += other.files
        self.notes += other.notes
        return self


def _slug(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9.+-]+", "_", p).strip("_") or "x" for p in parts)


def save_figure(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``fig`` as STEM.png and STEM.pdf (the formats of the current ``plot_run_dir`` call), each atomically;
    closes the figure."""
    paths = []
    try:
        for fmt in _FORMATS.get():
            buffer = io.BytesIO()
            # no creation date in the PDF: the same records give the same bytes
            fig.savefig(buffer, format=fmt, dpi=120, metadata={"CreationDate": None} if fmt == "pdf" else None)
            path = out_dir / f"{stem}.{fmt}"
            atomic_write_bytes(path, buffer.getvalue())
            paths.append(path)
            # the constrained layout is solved at every draw (seconds for a big grid); keep the first solution
            fig.set_layout_engine("none")
    finally:
        plt.close(fig)
    return paths


def _grid(n_rows: int, n_cols: int, width: float, height: float) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(width * n_cols, height * n_rows), squeeze=False, layout="constrained"
    )
    return fig, axes


def roc_figures(records: pd.DataFrame, out_dir: Path) -> PlotResult:
    """One figure per model x threat: a panel per detector, a ROC curve per attack (corruptions have no AUC)."""
    result = PlotResult()
    for (model, threat), runs in records.groupby([R.MODEL, R.THREAT], sort=False):
        runs = R.scored_columns(runs)
        detectors = R.detectors_in(runs)
        attacks = runs[~R.corruption_mask(runs)]
        if not detectors or attacks.empty:
            result.notes.append(
                f"ROC {model}/{threat}: skipped, {'no detector scores' if not detectors else 'only corruptions'}"
            )
            continue
        fig, axes = _grid(1, len(detectors), 4.2, 4.0)
        for ax, detector in zip(axes[0], detectors):
            handles, labels = (
                [],
                [],
            )  # given to legend() as they are: an automatic legend would drop a label starting with "_"
            for attack, group in attacks.groupby(R.ATTACK, sort=False):
                points = roc_points(group, detector)
                if points is not None:  # the legend's AUC is the summary's metric, the area under these points
                    handles += ax.plot(*points, lw=1.2)
                    labels.append(f"{literal(attack)} ({100 * metric_value('auc_roc', group, detector):.1f})")
            ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
            ax.set(
                title=literal(detector),
                xlabel="false positive rate (clean flagged)",
                ylabel="true positive rate",
                xlim=(0, 1),
                ylim=(0, 1.01),
            )
            if handles:  # an attack with no success has no curve
                ax.legend(handles, labels, fontsize=6, loc="lower right", title="attack (AUC %)", title_fontsize=6)
        fig.suptitle(literal(f"ROC: {model}, {threat}"))
        result.files += save_figure(fig, out_dir, _slug("roc", model, threat))
    return result


def kd_histograms(records: pd.DataFrame, out_dir: Path, detector: str = KD_DETECTOR, bins: int = 40) -> PlotResult:
    """Per threat, histograms of the detector's clean vs adversarial scores: a row per attack, a column per model
    (001 Fig. 5)."""
    result = PlotResult()
    for threat, runs in records.groupby(R.THREAT, sort=False):
        if not R.has_scores(runs, detector):
            result.notes.append(f"K-density histograms {threat}: skipped, no '{detector}' scores")
            continue
        scored = runs[np.isfinite(R.clean_scores(runs, detector))]
        models = list(dict.fromkeys(scored[R.MODEL]))
        attacks = list(dict.fromkeys(scored[R.ATTACK]))
        fig, axes = _grid(len(attacks), len(models), 3.6, 2.4)
        for (attack, model), group in scored.groupby([R.ATTACK, R.MODEL], sort=False):
            ax = axes[attacks.index(attack), models.index(model)]
            # the populations of the flagged rate: clean-correct clean inputs vs the attacked inputs
            clean = R.clean_scores(group, detector)[R.clean_correct(group)]
            adversarial = R.adv_scores(group, detector)[R.attacked(group)]
            clean, adversarial = clean[np.isfinite(clean)], adversarial[np.isfinite(adversarial)]
            both = np.r_[clean, adversarial]
            edges = np.histogram_bin_edges(both, bins=bins) if len(both) else bins
            for values, name, color in ((clean, "clean", "C0"), (adversarial, "adversarial", "C1")):
                if len(values):  # a density of nothing divides by zero
                    # one filled outline per histogram, not a patch per bin: the same picture, drawn ~40x faster
                    ax.hist(
                        values,
                        bins=edges,
                        alpha=0.6,
                        density=True,
                        color=color,
                        histtype="stepfilled",
                        label=f"{name} ({len(values)})",
                    )
            ax.set_title(literal(f"{model}: {attack}"), fontsize=8)
            ax.tick_params(labelsize=6)
            if len(clean) or len(adversarial):
                ax.legend(fontsize=6)
        for ax in axes[-1]:
            ax.set_xlabel(literal(f"{detector} score (higher = more clean-like)"), fontsize=7)
        fig.suptitle(literal(f"K-density ({detector}) scores, {threat}"))
        result.files += save_figure(fig, out_dir, _slug("kd-hist", threat))
    return result


def _budget(spec: Mapping[str, Any]) -> tuple[str, float] | None:
    """(parameter, value) of the budget of one run.json attack entry: the registered attack's ``budget_param``."""
    from robench.attacks import ATTACKS

    name = spec.get("attack")
    if not isinstance(name, str) or name not in ATTACKS:
        return None
    param = ATTACKS.get(name).budget_param
    value = spec.get("params", {}).get(param) if param else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return param, float(value)
    return None


_KEYS = [R.MODEL, R.THREAT, R.ATTACK]


def budget_table(summary: pd.DataFrame, runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Robust accuracy per model x threat x attack with its registered attack, budget and the attack's other settings.

    Attacks of one family differ only in the budget: same registered attack, target mode and other params.
    """
    rows = []
    for run in runs:
        model = run.get("model", {}).get("name")
        threats = run.get("threats") or [run.get("threat", {})]  # runs of one threat before --threat all existed
        for threat, spec in ((t, s) for t in threats for s in t.get("attacks", [])):
            budget = _budget(spec)
            if model is None or budget is None:
                continue
            others = {k: v for k, v in spec["params"].items() if k != budget[0]}
            family = f"{spec['attack']}|{spec.get('target_mode', 'none')}|{sorted(others.items())}"
            rows.append({R.MODEL: model, R.THREAT: threat.get("name"), R.ATTACK: spec["label"],
                         "registered": spec["attack"], "family": family,
                         "param": budget[0], "budget": budget[1]})  # fmt: skip
    specs = pd.DataFrame(rows, columns=[R.MODEL, R.THREAT, R.ATTACK, "registered", "family", "param", "budget"])
    accuracy = summary.drop_duplicates(_KEYS)[[*_KEYS, "robust_accuracy"]]
    return specs.drop_duplicates(_KEYS).merge(accuracy, on=_KEYS)


def accuracy_vs_budget(summary: pd.DataFrame, runs: Sequence[Mapping[str, Any]], out_dir: Path) -> PlotResult:
    """Robust accuracy vs budget, one figure per threat x registered attack, one curve per model x attack family."""
    result = PlotResult()
    table = budget_table(summary, runs)
    spread = (
        table.groupby([R.MODEL, R.THREAT, "family"])["budget"].transform("nunique")
        if len(table)
        else pd.Series(dtype=int)
    )
    table = table[spread > 1]
    if table.empty:
        result.notes.append(
            "accuracy vs budget: skipped, every attack in the run has a single budget (eps / sigma / degrees)"
        )
        return result
    for (threat, registered, param), group in table.groupby([R.THREAT, "registered", "param"], sort=False):
        fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
        handles, labels = [], []  # given to legend() as they are (a model named "_x" stays in it)
        for (model, family), curve in group.groupby([R.MODEL, "family"], sort=False):
            curve = curve.sort_values("budget")
            name = (
                model
                if group["family"].nunique() == 1
                else f"{model}: {curve[R.ATTACK].iloc[0]} .. {curve[R.ATTACK].iloc[-1]}"
            )
            handles += ax.plot(curve["budget"], 100 * curve["robust_accuracy"], marker="o")
            labels.append(literal(name))
        ax.set(
            xlabel=literal(param), ylabel="robust accuracy (%)", ylim=(0, 101), title=literal(f"{registered}, {threat}")
        )
        ax.legend(handles, labels, fontsize=7)
        result.files += save_figure(fig, out_dir, _slug("budget", threat, registered))
    return result


CURVE_RESAMPLES = 200  # bootstrap resamples of a figure's bands (a figure, not a table: fewer draws suffice)
CURVE_POINTS = 201  # eps values per drawn curve


def robustness_curves(
    records: pd.DataFrame, out_dir: Path, resamples: int = CURVE_RESAMPLES, seed: int = 0
) -> PlotResult:
    """Robust accuracy vs eps per model x threat (x crafting model): a panel per norm, a line and band per detector."""
    from robench.scoring import curves as C

    result = PlotResult()
    distances = C.smallest_distances(records)
    if distances.empty:
        result.notes.append("robustness curves: skipped, the run holds no attack (only corruptions)")
        return result
    for (model, threat, crafted_on), group in distances.groupby(list(C.GROUP), sort=False):
        norms = list(dict.fromkeys(group[C.NORM]))
        fig, axes = _grid(1, len(norms), 4.4, 3.6)
        for ax, norm in zip(axes[0], norms):
            in_norm = group[group[C.NORM] == norm]
            key = {R.MODEL: model, R.THREAT: threat, R.CRAFTED_ON: crafted_on, C.NORM: norm}
            budgets = C.curve_budgets(records, key)
            grid = np.unique(
                np.r_[np.linspace(0.0, _curve_top(in_norm, budgets), CURVE_POINTS), [b.eps for b in budgets]]
            )
            handles, labels = [], []
            for i, (detector, rows) in enumerate(in_norm.groupby(C.DETECTOR, sort=False)):
                curve = C.robustness_curve(rows, grid, resamples, C.group_seed(seed, *key.values(), detector))
                color = f"C{i}"
                (line,) = ax.plot(
                    curve[C.EPS], 100 * curve[C.ROBUST_ACCURACY], color=color, lw=1.4, drawstyle="steps-post"
                )
                if resamples:
                    ax.fill_between(curve[C.EPS], 100 * curve[C.LOW], 100 * curve[C.HIGH], color=color, alpha=0.18,
                                    lw=0, step="post")  # fmt: skip
                handles.append(line)
                labels.append("no detector" if detector == NO_DETECTOR else literal(f"{detector} (unflagged)"))
            for budget in budgets:
                ax.axvline(budget.eps, color="0.45", lw=0.8, ls="--")
                ax.annotate(literal(budget.label), (budget.eps, 100), xytext=(2, -2), textcoords="offset points",
                            fontsize=6, color="0.35", va="top", rotation=90)  # fmt: skip
            ax.set(xlabel=literal(f"eps ({budgets_label(norm)} distance, input units)"), ylabel="robust accuracy (%)",
                   ylim=(0, 101), xlim=(0, grid[-1]), title=literal(budgets_label(norm)))  # fmt: skip
        # one legend for the panels (each draws the same detectors), below them: it hides no curve
        fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncols=min(len(labels), 5), frameon=False)
        where = threat if crafted_on == model else f"{threat}, crafted on {crafted_on}"
        fig.suptitle(literal(f"Robustness curves: {model}, {where}"))
        stem = (
            _slug("curve", model, threat) if crafted_on == model else _slug("curve", model, threat, "from", crafted_on)
        )
        result.files += save_figure(fig, out_dir, stem)
    return result


def budgets_label(norm: str) -> str:
    from robench.scoring.budgets import NORM_LABELS

    return NORM_LABELS.get(norm, norm)


def _curve_top(distances: pd.DataFrame, budgets: Sequence[Any]) -> float:
    """The right end of a curve's eps axis: past the largest finite distance and budget."""
    values = distances["distance"].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    top = max([float(finite.max()) if len(finite) else 0.0, *(b.eps for b in budgets)])
    return top * 1.05 if top > 0 else 1.0


def _bundle_path(path: str, run_dir: Path) -> Path | None:
    # run.json holds the path as given on the command line: relative to where the run was started
    for candidate in (Path(path), run_dir / path):
        if candidate.is_file():
            return candidate
    return None


def feature_embeddings(
    runs: Sequence[Mapping[str, Any]],
    run_dir: Path,
    out_dir: Path,
    max_points: int = MAX_EMBEDDING_POINTS,
    seed: int = 0,
) -> PlotResult:
    """Scatter of the test split's features for each model with feature_dim 2, coloured by class (001 Fig. 1)."""
    from robench.checkpoints.bundle import load_bundle
    from robench.core.data import load_dataset
    from robench.detectors.kd import features_of

    result = PlotResult()
    seen: dict[str, Mapping[str, Any]] = {}
    for run in runs:
        model = run.get("model", {})
        if model.get("name") and model["name"] not in seen:
            seen[model["name"]] = run
    for name, run in seen.items():
        path = _bundle_path(str(run["model"].get("path", "")), run_dir)
        if path is None:
            result.notes.append(f"features {name}: skipped, bundle {run['model'].get('path')} not found")
            continue
        try:
            bundle = load_bundle(path)
            if bundle.meta.feature_dim != 2:
                result.notes.append(f"features {name}: skipped, feature_dim is {bundle.meta.feature_dim}, not 2")
                continue
            data_root = run.get("config", {}).get("data_root")
            data = load_dataset(bundle.meta.dataset, data_root=data_root, split_seed=bundle.meta.split_seed)
        except RobenchError as exc:
            result.notes.append(f"features {name}: skipped, {exc}")
            continue
        x, y = data.test.x, data.test.y
        if len(x) > max_points:  # a seeded subset keeps big test sets legible and the figure reproducible
            keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_points]
            x, y = x[keep], y[keep]
        z = features_of(bundle.model, x, torch.device("cpu")).numpy()
        fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
        points = ax.scatter(z[:, 0], z[:, 1], c=y.numpy(), cmap="tab10", s=3, alpha=0.7)
        ax.legend(*points.legend_elements(), fontsize=6, title="class", title_fontsize=7, loc="best", markerscale=0.8)
        ax.set(title=literal(f"{name} ({bundle.meta.defense}): test features"), xlabel="$z_1$", ylabel="$z_2$")
        result.files += save_figure(fig, out_dir, _slug("features", name))
    return result


def plot_run_dir(run: RunDir, out_dir: Path, formats: Sequence[str] = FIGURE_FORMATS) -> PlotResult:
    """Every figure that applies to the run directory, written under ``out_dir`` in each of ``formats`` (png, pdf)."""
    unknown = [f for f in formats if f not in FIGURE_FORMATS]
    if unknown or not formats:
        raise ConfigError(f"figure formats must be among {', '.join(FIGURE_FORMATS)}, got {list(formats)}")
    token = _FORMATS.set(tuple(formats))
    try:
        return _plot_run_dir(run, out_dir)
    finally:
        _FORMATS.reset(token)


def _plot_run_dir(run: RunDir, out_dir: Path) -> PlotResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = PlotResult()
    result.extend(roc_figures(run.records, out_dir))
    result.extend(kd_histograms(run.records, out_dir))
    result.extend(accuracy_vs_budget(run.summary(), run.runs, out_dir))
    result.extend(robustness_curves(run.records, out_dir))
    result.extend(feature_embeddings(run.runs, run.path if run.path.is_dir() else run.path.parent, out_dir))
    return result
