"""Metrics: registered objects that compute each number from per-sample records, weighted.

Each :class:`Metric` carries its computation, its direction (higher is better for the defense),
its table label and whether it is a percentage (after lm-evaluation-harness's ``MetricSpec``).
The computation is written once, over :class:`Weighted` records: a group's records plus a
matrix of how often each record is drawn (resamples x records). The point estimate is the row
of all ones, the bootstrap (:mod:`robench.report.bootstrap`) the resampled rows, so the summary,
the intervals, the ROC figures, the sanity checks and the tables all read one implementation.

Definitions (docs/runs.md), populations as in :mod:`robench.scoring.records`:

- ``clean_accuracy``: fraction of evaluated samples whose clean input is classified correctly.
- ``robust_accuracy``: fraction of evaluated samples whose attacked input is classified correctly.
- ``success_rate``: among clean-correct samples, the fraction where the attack succeeded.
- ``distortion``: mean of ||x - x_adv||_2 / sqrt(h w c) over the successful attacks (001 Sec. 4.4.2).
- ``distortion_255``: ``distortion`` on the 0-255 pixel scale, i.e. times 255 / (high - low) of the
  model's declared input range: the scale 001 Tables 9-10's figures imply (18.42 / 255 = 0.072).
- ``auc_roc``, ``auc_attempted``, ``auc_paired``: area under the ROC curve separating clean inputs
  (positives) from adversarial inputs (negatives) by the detector's score (higher = clean), one
  metric per *population* (:data:`POPULATIONS`): which inputs enter the two sides. Computed as
  the Mann-Whitney statistic (ties count one half), which equals the trapezoidal area under the
  empirical ROC curve.
- ``survival``: among clean-correct samples, the fraction whose attacked input is still classified
  correctly; on a threat's worst-case rows (:mod:`robench.scoring.worst_case`) the fraction that
  survives every attack of the threat.
- ``survival_detected``: per detector, among clean-correct samples, the fraction still classified
  correctly *or* whose attacked input is flagged at the clean 5% false-positive threshold (the
  threshold of ``flagged_rate``); on worst-case rows, the samples no attack misclassified unflagged.
- ``median_l2``, ``median_linf``: per attack, the median over clean-correct samples of the distance
  (L2, L-inf; the model's input units) of its output where the output is misclassified, +inf where
  it is not (the minimum-norm attacks' statistic, Pintor et al. 2021 Sec. 4; AttackBench's
  per-sample distances); undefined (NaN) where the median is infinite (the attack misclassified
  at most half of them) and on the worst-case rows (their per-sample distances are the
  robustness curves', :mod:`robench.scoring.curves`).
- ``flagged_rate``: fraction of attacked inputs whose score falls below the threshold that flags
  5% of the group's clean inputs (the k-th smallest clean score, k = floor(0.05 m), as
  :func:`robench.detectors.base.threshold_at_fpr`); for noise this is the detector's
  false-positive rate on noisy inputs (004 Sec. 4.5).

Sums run over the selected records only, in record order, so the point estimate of a mean is
bit-identical to the plain mean of the selected values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from robench.core.errors import ConfigError
from robench.core.registry import Registry, did_you_mean
from robench.scoring import records as R
from robench.scoring.worst_case import is_worst_case, with_worst_case

FLAG_FPR = 0.05
NO_DETECTOR = "-"  # the detector of a summary row that no detector scored


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (a metric of an empty population)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


@dataclass(frozen=True)
class Weighted:
    """One group's records and their weights: ``counts[r, i]`` is how often record i is drawn in resample r."""

    records: pd.DataFrame
    counts: np.ndarray

    @classmethod
    def of(cls, records: pd.DataFrame) -> Weighted:
        """The records themselves: one resample of all ones (the point estimate)."""
        return cls(records, np.ones((1, len(records))))

    @property
    def resamples(self) -> int:
        return int(self.counts.shape[0])

    def mean(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Per resample, the weighted mean of ``values`` over the records where ``mask`` (NaN where none is drawn)."""
        drawn = self.counts[:, mask]
        return ratio((drawn * values[mask]).sum(axis=1), drawn.sum(axis=1))

    def nan(self) -> np.ndarray:
        return np.full(self.resamples, np.nan)


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """A (resamples, n) matrix: how often each of n rows is drawn in each resample of size n (a :class:`Weighted`'s
    counts; the bootstrap of the summary and of the robustness curves)."""
    index = rng.integers(0, n, size=(resamples, n))
    offsets = (np.arange(resamples) * n)[:, None]
    return np.bincount((index + offsets).ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def group_seed(seed: int, *key: object) -> int:
    """A seed per group derived from ``seed`` and its key: a group's bootstrap does not depend on which other
    groups are in the records."""
    digest = hashlib.sha256("|".join(map(str, (seed, *key))).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def weighted_auc(
    pos_counts: np.ndarray, positive: np.ndarray, neg_counts: np.ndarray, negative: np.ndarray
) -> np.ndarray:
    """Mann-Whitney AUC per resample: P(positive score > negative score) + P(tie) / 2, pairs weighted by counts.

    ``positive`` / ``negative`` are the scores of the rows that can be drawn as positives /
    negatives, ``pos_counts`` / ``neg_counts`` (resamples x rows) how often each was drawn.
    """
    order = np.argsort(negative, kind="stable")
    sorted_negative = negative[order]
    cumulative = np.zeros((neg_counts.shape[0], len(negative) + 1))
    np.cumsum(neg_counts[:, order], axis=1, out=cumulative[:, 1:])
    # Drawn negatives strictly below each positive, and those tied with it.
    below = cumulative[:, np.searchsorted(sorted_negative, positive, side="left")]
    up_to = cumulative[:, np.searchsorted(sorted_negative, positive, side="right")]
    wins = (pos_counts * (below + 0.5 * (up_to - below))).sum(axis=1)
    return ratio(wins, pos_counts.sum(axis=1) * neg_counts.sum(axis=1))


def weighted_threshold(
    w: Weighted, clean: np.ndarray, clean_ok: np.ndarray, fpr: float = FLAG_FPR
) -> tuple[np.ndarray, np.ndarray]:
    """Per resample, the score below which an input is flagged at ``fpr`` of the drawn clean scores,
    and how many were drawn.

    The k-th smallest (0-based) drawn clean score with k = floor(fpr m), as
    :func:`robench.detectors.base.threshold_at_fpr`; +inf where k >= m (nothing clean is flagged).
    """
    clean_counts = w.counts[:, clean_ok]
    order = np.argsort(clean[clean_ok], kind="stable")
    sorted_clean = clean[clean_ok][order]
    cumulative = np.cumsum(clean_counts[:, order], axis=1)
    total = cumulative[:, -1] if cumulative.shape[1] else np.zeros(w.resamples)
    k = np.floor(fpr * total)
    # The k-th smallest drawn clean score sits at the first sorted position whose cumulative count exceeds k.
    position = (cumulative <= k[:, None]).sum(axis=1)
    return np.append(sorted_clean, np.inf)[position], total


def weighted_flagged_rate(
    w: Weighted,
    clean: np.ndarray,
    clean_ok: np.ndarray,
    attacked: np.ndarray,
    attacked_ok: np.ndarray,
    fpr: float = FLAG_FPR,
) -> np.ndarray:
    """Per resample, the weighted fraction of ``attacked`` scores below the clean ``fpr`` threshold."""
    threshold, total = weighted_threshold(w, clean, clean_ok, fpr)
    attacked_counts = w.counts[:, attacked_ok]
    below = attacked[attacked_ok][None, :] < threshold[:, None]
    rate = ratio((attacked_counts * below).sum(axis=1), attacked_counts.sum(axis=1))
    return np.where(total > 0, rate, np.nan)


@dataclass(frozen=True)
class Population:
    """Which inputs an AUC separates: its name, metric, description and where the protocol comes from."""

    name: str
    metric: str
    description: str
    source: str


# The AUC populations. A C&W-style attack that minimises distortion subject to f_2 = 0 stops every
# successful example at the detector's threshold level, so ``successful`` can sit near 50% by
# construction; ``attempted`` and ``paired`` also see how far the attack got on the others.
POPULATIONS: dict[str, Population] = {
    p.name: p
    for p in (
        Population(
            "successful",
            "auc_roc",
            "clean-correct clean inputs vs the successful adversarial inputs",
            "robench's AUC before populations were named: only the adversarial examples that fool the classifier enter",
        ),
        Population(
            "attempted",
            "auc_attempted",
            "clean-correct clean inputs vs the attack's output for "
            "every clean-correct input (failures scored as returned)",
            "001 Sec. 4.4: normal test samples vs the adversarial "
            "examples generated for every test image (Tables 7-8, 11)",
        ),
        Population(
            "paired",
            "auc_paired",
            "each clean-correct input whose adversarial is misclassified, paired with that adversarial",
            "the RCE reference code (Pang et al. 2018), whose layout 001 "
            "Tables 9-10 copy; Feinman et al. 2017's detect_adv_samples",
        ),
    )
}
DEFAULT_POPULATION = "successful"


def population(name: str) -> Population:
    """A population by name; an unknown one is a one-line error with a suggestion."""
    if name not in POPULATIONS:
        raise ConfigError(
            f"unknown AUC population '{name}'{did_you_mean(name, list(POPULATIONS))}; "
            f"populations: {', '.join(POPULATIONS)}"
        )
    return POPULATIONS[name]


@dataclass(frozen=True)
class DetectionPopulations:
    """The scores a detector's AUC separates: positives (clean-like) and negatives, with masks over the records."""

    positive: np.ndarray  # mask: clean-correct samples with a finite clean score
    negative: np.ndarray  # mask: successful attacks with a finite adversarial score
    clean: np.ndarray  # every record's clean score
    adversarial: np.ndarray  # every record's adversarial score


def detection_populations(
    records: pd.DataFrame, detector: str, population_name: str = DEFAULT_POPULATION
) -> DetectionPopulations:
    """The positives (clean inputs) and negatives (adversarial inputs) of one AUC population (:data:`POPULATIONS`).

    - ``successful``: clean-correct clean inputs vs the successful adversarial inputs;
    - ``attempted``: clean-correct clean inputs vs the adversarial inputs of every clean-correct sample;
    - ``paired``: the samples that are clean-correct and whose adversarial is misclassified, on both sides.

    A side only takes finite scores (a detector that did not score a row leaves NaN).
    """
    population(population_name)
    clean, adversarial = R.clean_scores(records, detector), R.adv_scores(records, detector)
    has_clean, has_adv = np.isfinite(clean), np.isfinite(adversarial)
    correct = R.clean_correct(records)
    if population_name == "successful":
        positive, negative = correct & has_clean, R.successful(records) & has_adv
    elif population_name == "attempted":
        positive, negative = correct & has_clean, correct & has_adv
    else:  # paired
        both = correct & ~R.robust(records) & has_clean & has_adv
        positive, negative = both, both
    return DetectionPopulations(positive=positive, negative=negative, clean=clean, adversarial=adversarial)


def roc_points(
    records: pd.DataFrame, detector: str, population_name: str = DEFAULT_POPULATION
) -> tuple[np.ndarray, np.ndarray] | None:
    """(fpr, tpr) of the detector's ROC curve on one group's records, or None without both populations.

    The populations are :func:`detection_populations`, those of the population's AUC metric;
    the trapezoidal area under these points equals the metric (tested).
    """
    from sklearn.metrics import roc_curve

    pops = detection_populations(records, detector, population_name)
    positive, negative = pops.clean[pops.positive], pops.adversarial[pops.negative]
    if len(positive) == 0 or len(negative) == 0:
        return None
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    fpr, tpr, _ = roc_curve(labels, np.r_[positive, negative], pos_label=1)
    return fpr, tpr


Compute = Callable[[Weighted, "str | None"], np.ndarray]


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``compute(weighted, detector)`` gives one value per resample.

    ``per_detector`` metrics (AUC, flagged rate) are computed for each detector and are NaN
    without one; the others are the same for every detector of a group.
    """

    name: str
    label: str  # the table header, e.g. "AUC (%)"
    higher_is_better: bool  # for the defense
    percent: bool  # shown as a percentage in tables
    per_detector: bool
    description: str
    compute: Compute
    kind: ClassVar[str] = "metric"

    def point(self, records: pd.DataFrame, detector: str | None = None) -> float:
        """The metric of one group's records (no resampling)."""
        return float(self.compute(Weighted.of(records), detector)[0])


def _clean_accuracy(w: Weighted, detector: str | None) -> np.ndarray:
    return w.mean(R.clean_correct(w.records).astype(float), np.ones(len(w.records), dtype=bool))


def _robust_accuracy(w: Weighted, detector: str | None) -> np.ndarray:
    return w.mean(R.robust(w.records).astype(float), np.ones(len(w.records), dtype=bool))


def _success_rate(w: Weighted, detector: str | None) -> np.ndarray:
    return w.mean(R.success(w.records).astype(float), R.clean_correct(w.records))


def _distortion(w: Weighted, detector: str | None) -> np.ndarray:
    values = R.distortion(w.records)
    return w.mean(values, R.successful(w.records) & np.isfinite(values))


def _distortion_255(w: Weighted, detector: str | None) -> np.ndarray:
    if R.INPUT_RANGE not in w.records:  # records written before the column existed
        return w.nan()
    values = R.distortion(w.records) * 255.0 / w.records[R.INPUT_RANGE].to_numpy(dtype=float)
    return w.mean(values, R.successful(w.records) & np.isfinite(values))


def _auc(population_name: str) -> Compute:
    def compute(w: Weighted, detector: str | None) -> np.ndarray:
        if detector is None or R.is_corruption(w.records):  # a corruption has no adversarial population to separate
            return w.nan()
        pops = detection_populations(w.records, detector, population_name)
        return weighted_auc(
            w.counts[:, pops.positive],
            pops.clean[pops.positive],
            w.counts[:, pops.negative],
            pops.adversarial[pops.negative],
        )

    compute.__name__ = f"_auc_{population_name}"
    return compute


def _flagged_rate(w: Weighted, detector: str | None) -> np.ndarray:
    if detector is None:
        return w.nan()
    clean, adversarial = R.clean_scores(w.records, detector), R.adv_scores(w.records, detector)
    return weighted_flagged_rate(
        w, clean, np.isfinite(clean), adversarial, np.isfinite(adversarial) & R.attacked(w.records)
    )


def _survival(w: Weighted, detector: str | None) -> np.ndarray:
    return w.mean(R.robust(w.records).astype(float), R.clean_correct(w.records))


def _survival_detected(w: Weighted, detector: str | None) -> np.ndarray:
    """Among clean-correct samples: still classified correctly, or the attacked input is flagged at the 5% threshold."""
    if detector is None or R.is_corruption(w.records):
        return w.nan()
    clean, adversarial = R.clean_scores(w.records, detector), R.adv_scores(w.records, detector)
    threshold, total = weighted_threshold(w, clean, np.isfinite(clean))
    robust = R.robust(w.records)
    # a misclassified output the detector did not score (NaN) says nothing either way: left out
    counted = R.clean_correct(w.records) & (robust | np.isfinite(adversarial))
    drawn = w.counts[:, counted]
    with np.errstate(invalid="ignore"):
        held = robust[counted][None, :] | (adversarial[counted][None, :] < threshold[:, None])
    rate = ratio((drawn * held).sum(axis=1), drawn.sum(axis=1))
    return np.where(total > 0, rate, np.nan)


def weighted_median(w: Weighted, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per resample, the lower weighted median of ``values`` over the records where ``mask`` (NaN where none is drawn).

    The smallest value whose cumulative drawn count reaches half the drawn total: the plain median's lower middle
    on the point estimate's all-ones weights.
    """
    chosen = values[mask]
    if chosen.size == 0:
        return w.nan()
    order = np.argsort(chosen, kind="stable")
    cumulative = np.cumsum(w.counts[:, mask][:, order], axis=1)
    total = cumulative[:, -1]
    position = np.minimum((cumulative < total[:, None] / 2).sum(axis=1), chosen.size - 1)
    median = chosen[order][position]
    return np.where(total > 0, median, np.nan)


def _median_distance(column: str) -> Compute:
    def compute(w: Weighted, detector: str | None) -> np.ndarray:
        if R.is_corruption(w.records) or is_worst_case(w.records[R.ATTACK].iloc[0]):
            return w.nan()
        distance = w.records[column].to_numpy(dtype=float)
        broken = ~R.robust(w.records)
        values = np.where(broken & np.isfinite(distance), distance, np.inf)
        median = weighted_median(w, values, R.clean_correct(w.records))
        return np.where(np.isfinite(median), median, np.nan)

    return compute


_DEFINED = (
    Metric("clean_accuracy", "Clean Acc. (%)", True, True, False, "accuracy on clean inputs", _clean_accuracy),
    Metric("robust_accuracy", "Robust Acc. (%)", True, True, False, "accuracy on attacked inputs", _robust_accuracy),
    Metric(
        "success_rate",
        "Adv. Success (%)",
        False,
        True,
        False,
        "attack success among clean-correct samples",
        _success_rate,
    ),
    Metric("distortion", "Dist.", True, False, False, "mean L2 / sqrt(hwc) of successful perturbations", _distortion),
    Metric(
        "distortion_255",
        "Dist. (0-255)",
        True,
        False,
        False,
        "distortion on the 0-255 pixel scale (x 255 / input range)",
        _distortion_255,
    ),
    Metric(
        "auc_roc",
        "AUC (%)",
        True,
        True,
        True,
        "detector AUC-ROC, clean-correct vs successful adversarial",
        _auc("successful"),
    ),
    Metric(
        "auc_attempted",
        "AUC att. (%)",
        True,
        True,
        True,
        "detector AUC-ROC, clean-correct vs every attack output of them",
        _auc("attempted"),
    ),
    Metric(
        "auc_paired",
        "AUC pair. (%)",
        True,
        True,
        True,
        "detector AUC-ROC, each misclassified adversarial paired with its clean input",
        _auc("paired"),
    ),
    Metric(
        "survival",
        "Survived (%)",
        True,
        True,
        False,
        "clean-correct samples still classified correctly (worst-case rows: after every attack)",
        _survival,
    ),
    Metric(
        "survival_detected",
        "Surv. or flagged (%)",
        True,
        True,
        True,
        "clean-correct samples still classified correctly or whose "
        "attacked input is flagged at the clean 5%-FPR threshold",
        _survival_detected,
    ),
    Metric(
        "flagged_rate",
        "Flagged (%)",
        True,
        True,
        True,
        "fraction of attacked inputs flagged at the clean 5%-FPR threshold",
        _flagged_rate,
    ),
    Metric(
        "median_l2",
        "Med. L2",
        True,
        False,
        False,
        "median L2 distance of the attack's misclassified outputs over clean-correct samples (+inf where none; "
        "undefined when infinite)",
        _median_distance(R.L2),
    ),
    Metric(
        "median_linf",
        "Med. Linf",
        True,
        False,
        False,
        "median L-inf distance of the attack's misclassified outputs over clean-correct samples (+inf where none; "
        "undefined when infinite)",
        _median_distance(R.LINF),
    ),
)
METRICS: Registry[Metric] = Registry("metric", base=Metric)
for _metric in _DEFINED:
    METRICS.register(_metric)
SUMMARY_KEYS: list[str] = list(R.KEYS)
DETECTOR = "detector"  # the summary column naming the detector of the detector metrics
COUNT = "n"  # the summary column counting a group's records
CASCADE = (
    R.CASCADE
)  # the summary column saying how the run cascaded the group's threat ('none': every attack on every sample)


def metric_names() -> tuple[str, ...]:
    """Every registered metric in registration order: the summary's and the intervals' column order."""
    return tuple(m.name for m in METRICS.in_order())


def summary_columns() -> list[str]:
    return [*SUMMARY_KEYS, DETECTOR, COUNT, CASCADE, *metric_names()]


def evaluate(w: Weighted) -> dict[str, dict[str, np.ndarray]]:
    """Every metric of one group for each resample: detector (``-`` when none scored) -> metric -> values."""
    metrics = METRICS.in_order()
    common = {m.name: m.compute(w, None) for m in metrics if not m.per_detector}
    out: dict[str, dict[str, np.ndarray]] = {}
    for detector in R.detectors_in(w.records) or [NO_DETECTOR]:
        scored = None if detector == NO_DETECTOR else detector
        per = {m.name: m.compute(w, scored) for m in metrics if m.per_detector}
        out[detector] = {m.name: common[m.name] if m.name in common else per[m.name] for m in metrics}
    return out


def summarize(records: pd.DataFrame, *, drop_unscored: bool = False) -> pd.DataFrame:
    """One row per model x threat x attack x crafting model x detector (detector ``-`` when none was scored).

    Every model x threat x crafting model with two or more attacks also gets its worst-case rows
    (attack ``worst-case``, :mod:`robench.scoring.worst_case`), and every row says how the run
    cascaded its threat (``cascade``: ``none``, or the mode of :mod:`robench.scoring.cascade`, whose
    per-attack rows describe the samples each attack was left, not the attack alone).

    With ``drop_unscored`` a group keeps only the detectors that scored it: records concatenated
    from runs with different detectors leave all-NaN score columns on the other runs' rows. In
    one run every detector scores every group, and a detector that gave only NaN keeps its row.
    """
    rows = []
    for key, group in R.groups(with_worst_case(records)):
        group = R.scored_columns(group) if drop_unscored else group
        cascade = str(R.cascade_of(group)[0]) if len(group) else R.NO_CASCADE
        for detector, values in evaluate(Weighted.of(group)).items():
            rows.append(
                {
                    **key,
                    DETECTOR: detector,
                    COUNT: int(len(group)),
                    CASCADE: cascade,
                    **{m: float(v[0]) for m, v in values.items()},
                }
            )
    return pd.DataFrame(rows, columns=summary_columns())


def metric_value(name: str, records: pd.DataFrame, detector: str | None = None) -> float:
    """One metric of one group's records, by name (did-you-mean on typos)."""
    return METRICS.get(name).point(records, detector)
