"""The KD+BU combiner of a run, fitted on a held-out split of its attacked samples (Feinman et al. 2017, Sec. 4.3).

Feinman et al. combine kernel density (KD) and Bayesian uncertainty (BU) by a logistic
regression on the z-scored pair [KD, BU]: the negatives (label 0) are clean inputs *and noisy
ones* (the clean input plus Gaussian noise of about the adversarial's L2 distortion, clipped
to the input domain), the positives (label 1) the adversarial inputs. The regression needs
adversarial examples, so in a run it is fitted after the attacks, from the records, in two
steps:

1. While attacking a batch the runner stores *raw features* for each combined detector D:
   :func:`raw_columns` of the clean, the noisy (:func:`noisy_like`) and the attacked input's
   forward passes, in the float columns ``raw_<kind>:<D>:<feature>`` (:func:`raw_column`).
2. When every part is computed, :func:`combine` fits the combiner per summary group (model x
   threat x attack x crafting model, :func:`robench.scoring.records.groups`) on a seeded *fit*
   split of the group's samples (:func:`fit_mask`) and writes D's scores (higher = looks
   clean: minus the regression's logit of "adversarial") for the other samples only. The fit
   samples get NaN scores, which every metric ignores, and ``fitted_on:<D>`` True
   (:func:`fitted_column`): no reported number is computed on a sample the combiner saw.

How this differs from Feinman et al.'s code (``scripts/detect_adv_samples.py``):

- they fit the scaler and the regression on every normal, noisy and adversarial sample and
  compute the AUC from the predictions on those same samples (an in-sample AUC); here the
  regression is fitted on one split of the samples and scored on the other;
- their AUC counts the noisy inputs among the negatives; here the noisy inputs only enter the
  fit, and the AUC is the records' (clean-correct clean inputs vs successful adversarial ones,
  :mod:`robench.scoring.metrics`);
- their positives are every adversarial input; here only the successful attacks of the fit
  samples (:func:`robench.scoring.records.successful`), and the clean and noisy inputs only of
  clean-correct fit samples;
- their noise has a standard deviation tuned by hand per dataset and attack so that the
  *mean* L2 distortion is close to the adversarial one (pixel flips for JSMA); here each
  sample's noise has exactly that sample's adversarial L2 norm (before clipping);
- they use ``LogisticRegressionCV``; here a plain ``LogisticRegression`` (C = 1,
  :func:`robench.detectors.combined.fit_logistic`), which needs no inner split of a small fit set.

The column names below are new record columns, named here until they move to
:mod:`robench.scoring.records`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from robench.core.models import Classifier, Forward
from robench.defenses import Defense
from robench.detectors.base import Detector
from robench.detectors.combined import KDBUDetector, combiner_scores, fit_logistic, holdout_split
from robench.scoring import records as R

KINDS, FEATURES, raw_column, raw_columns_of, fitted_column = (
    R.RAW_KINDS,
    R.RAW_FEATURES,
    R.raw_column,
    R.raw_columns_of,
    R.fitted_column,
)
MIN_ROWS = 2  # fewest fit records on either side (clean-correct; successful) for a combiner to be fitted


def combined_detectors(detectors: Mapping[str, Detector]) -> dict[str, KDBUDetector]:
    """The detectors whose scores :func:`combine` writes (fitted on adversarial examples), by name."""
    return {name: d for name, d in detectors.items() if isinstance(d, KDBUDetector)}


# --------------------------------------------------------------------------- while attacking a batch


def scaled_noise(x: Tensor, x_adv: Tensor, generator: torch.Generator) -> Tensor:
    """Per sample, Gaussian noise whose L2 norm equals ``||x_adv - x||_2`` (zero where that is zero).

    One draw of ``x``'s shape from ``generator`` (on the generator's device, then moved to
    ``x``'s), batched; the draw does not depend on the inputs' values, only on their shape.
    """
    shape = (-1,) + (1,) * (x.dim() - 1)
    draw = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    target = (x_adv - x).flatten(1).double().norm(dim=1)
    norm = draw.flatten(1).double().norm(dim=1)
    scale = torch.where(norm > 0, target / norm.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(target))
    return (draw.double() * scale.view(shape)).to(x.dtype)


def noisy_like(
    x: Tensor, x_adv: Tensor, low: float | Tensor, high: float | Tensor, generator: torch.Generator
) -> Tensor:
    """Feinman et al.'s noisy input: ``x`` plus Gaussian noise of the adversarial's L2 norm, clipped to [low, high].

    Per sample, the noise (:func:`scaled_noise`) has L2 norm ``||x_adv - x||_2`` before the
    clipping; a sample with zero adversarial distortion gets ``x`` itself back. Batched, no
    per-sample loop; reproducible from ``generator`` (use one of its own, so that adding the
    noisy input leaves the attack's random draws unchanged).
    """
    noise = scaled_noise(x, x_adv, generator)
    if isinstance(low, Tensor) or isinstance(high, Tensor):  # torch.clamp takes two numbers or two tensors
        low, high = (torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in (low, high))
    noisy = torch.clamp(x + noise, low, high)
    unchanged = ((x_adv - x) == 0).flatten(1).all(dim=1)
    return torch.where(unchanged.view((-1,) + (1,) * (x.dim() - 1)), x, noisy)


def raw_features(
    detector: KDBUDetector, model: Classifier, defense: Defense, forward: Forward
) -> dict[str, np.ndarray]:
    """The raw ``kd`` and ``bu`` features (float64, one per input) of one forward pass, by :data:`FEATURES` name.

    ``kd``: log kernel density of the features under the predicted class; ``bu``: the BU
    detector's score, minus the MC-dropout uncertainty (Feinman et al. Sec. 3; the sign does not
    matter to the regression). Needs ``detector`` fitted on clean training data (its KD part).
    """
    with torch.no_grad():
        values = detector.raw_features(model, defense, forward).double().cpu().numpy()
    return {feature: values[:, i].copy() for i, feature in enumerate(FEATURES)}


def raw_columns(
    name: str, detector: KDBUDetector, model: Classifier, defense: Defense, forwards: Mapping[str, Forward]
) -> dict[str, np.ndarray]:
    """Every raw-feature record column of one batch for combined detector ``name``: {column: values}.

    ``forwards`` maps each of :data:`KINDS` to the evaluated model's forward pass of that input:
    the clean batch, its :func:`noisy_like` input and the attacked input.
    """
    missing = [kind for kind in KINDS if kind not in forwards]
    if missing:
        raise KeyError(f"raw features of {name} need the forward passes of the {', '.join(missing)} input(s)")
    out: dict[str, np.ndarray] = {}
    for kind in KINDS:
        for feature, values in raw_features(detector, model, defense, forwards[kind]).items():
            out[raw_column(name, kind, feature)] = values
    return out


# --------------------------------------------------------------------------- after every part


def fit_mask(samples: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Per record, whether its sample is in the fit split of a group whose records hold ``samples``.

    The split is a seeded permutation (:func:`robench.detectors.combined.holdout_split`, a
    generator seeded with ``seed``) of the group's *sorted distinct* sample ids, of which the
    first ``round(fraction * n)`` are fitted on. It depends only on the seed and the set of
    sample ids: not on the batching of the run, on which parts were resumed, nor on the order
    of the rows. Groups with the same samples (every attack of a run) share their split.
    """
    ids = np.unique(np.asarray(samples))
    fit, _ = holdout_split(len(ids), fraction, torch.Generator().manual_seed(int(seed)))
    return np.isin(np.asarray(samples), ids[fit.numpy()])


def features(group: pd.DataFrame, detector: str, kind: str) -> np.ndarray:
    """One input kind's raw [KD, BU] feature rows (N x 2, float64) of a combined detector, in row order."""
    return np.stack([group[raw_column(detector, kind, f)].to_numpy(dtype=np.float64) for f in FEATURES], axis=1)


@dataclass(frozen=True)
class GroupFit:
    """One group's combiner: its fit split (per row), the fitted combiner, or why there is none."""

    fit: np.ndarray  # bool per row: the row's sample is in the fit split
    combiner: dict[str, Tensor] | None  # fit_logistic's tensors; None when the group fitted none
    reason: str = ""  # why no combiner, when ``combiner`` is None


def fit_group(group: pd.DataFrame, name: str, detector: KDBUDetector) -> GroupFit:
    """Fit combined detector ``name``'s regression on one group's fit split (Feinman et al. Sec. 4.3).

    Label 0 (clean-like): the clean and the noisy features of the fit records that are
    clean-correct; label 1: the adversarial features of the fit records that are successful;
    rows with a non-finite feature are left out. z-scored with the fit rows' mean and standard
    deviation, then a logistic regression (:func:`robench.detectors.combined.fit_logistic`,
    seeded with the detector's seed). The rows enter sorted by sample, so the fit does not
    depend on the records' row order.

    A corruption group (no adversarial population) or one with fewer than :data:`MIN_ROWS` fit
    records on either side gets no combiner (``combiner`` None, ``fit`` all False): its scores
    stay NaN, and so no AUC is reported for it. Never raises for that.
    """
    none = np.zeros(len(group), dtype=bool)
    if R.is_corruption(group):
        return GroupFit(none, None, "a corruption has no adversarial inputs to fit on")
    in_fit = fit_mask(group[R.SAMPLE].to_numpy(), detector.fit_fraction, detector.seed)
    order = np.argsort(group[R.SAMPLE].to_numpy(), kind="stable")
    clean, noisy, adv = (features(group, name, kind)[order] for kind in KINDS)
    fit, correct, successful = in_fit[order], R.clean_correct(group)[order], R.successful(group)[order]
    clean_rows = fit & correct & np.isfinite(clean).all(axis=1)
    noisy_rows = fit & correct & np.isfinite(noisy).all(axis=1)
    adv_rows = fit & successful & np.isfinite(adv).all(axis=1)
    if clean_rows.sum() < MIN_ROWS or adv_rows.sum() < MIN_ROWS:
        reason = (
            f"{int(clean_rows.sum())} clean-correct and {int(adv_rows.sum())} successful fit sample(s) "
            f"with features; the combiner needs at least {MIN_ROWS} of each"
        )
        return GroupFit(none, None, reason)
    combiner = fit_logistic(np.concatenate([clean[clean_rows], noisy[noisy_rows]]), adv[adv_rows], detector.seed)
    return GroupFit(in_fit, combiner, "")


def score_group(group: pd.DataFrame, name: str, detector: KDBUDetector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean scores, adversarial scores, fitted-on) of one group's rows for combined detector ``name``.

    The scores are minus the regression's logit of "adversarial" at the clean and the attacked
    inputs' raw features, for the samples outside the fit split; NaN for the fit samples, for
    non-finite features, and everywhere in a group that fitted no combiner (:func:`fit_group`).
    """
    result = fit_group(group, name, detector)
    nan = np.full(len(group), np.nan)
    if result.combiner is None:
        return nan, nan.copy(), result.fit
    scores = []
    for kind in ("clean", "adv"):
        values = combiner_scores(result.combiner, torch.from_numpy(features(group, name, kind))).numpy()
        scores.append(np.where(result.fit, np.nan, values))
    return scores[0], scores[1], result.fit


def combine(records: pd.DataFrame, detectors: Mapping[str, KDBUDetector]) -> pd.DataFrame:
    """The records with, for each combined detector D, ``score_clean:D``, ``score_adv:D`` and ``fitted_on:D`` filled.

    Per summary group (:func:`robench.scoring.records.groups`): a combiner is fitted on the
    group's fit split (:func:`fit_mask`, :func:`fit_group`: a fraction ``detector.fit_fraction``
    of its samples, chosen by the detector's seed and the sorted sample ids, so independent of
    batching, resume and row order) and scores the other samples (:func:`score_group`); the fit
    samples get NaN scores and ``fitted_on:D`` True. A corruption group, or one with fewer than
    :data:`MIN_ROWS` clean-correct or successful fit records, gets NaN scores and
    ``fitted_on:D`` False everywhere: no AUC is reported for it.

    Reads D's raw-feature columns (:func:`raw_columns_of`); it is a ``KeyError`` to lack them
    unless every record is a corruption. Existing columns of these names are overwritten, new
    ones appended; rows keep their order and index. Pure (``records`` and the detectors are not
    changed) and deterministic. Rows outside any group (a missing key) get NaN and False.
    """
    out = records.copy()
    keyed = R.with_crafted_on(records).reset_index(drop=True)  # group rows by position
    for name, detector in detectors.items():
        clean, adv = np.full(len(records), np.nan), np.full(len(records), np.nan)
        fitted = np.zeros(len(records), dtype=bool)
        missing = [c for c in raw_columns_of(name) if c not in records.columns]
        if missing and not R.corruption_mask(records).all():
            raise KeyError(f"records lack the raw-feature column(s) {', '.join(missing)} that {name} is fitted on")
        if not missing:
            for _, group in R.groups(keyed):
                rows = group.index.to_numpy()
                clean[rows], adv[rows], fitted[rows] = score_group(group, name, detector)
        out[R.score_clean(name)] = clean
        out[R.score_adv(name)] = adv
        out[fitted_column(name)] = fitted
    return out


__all__ = [
    "FEATURES",
    "KINDS",
    "MIN_ROWS",
    "GroupFit",
    "combine",
    "combined_detectors",
    "features",
    "fit_group",
    "fit_mask",
    "fitted_column",
    "noisy_like",
    "raw_column",
    "raw_columns",
    "raw_columns_of",
    "raw_features",
    "scaled_noise",
    "score_group",
]
