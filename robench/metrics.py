"""Metrics: pure functions of per-sample records, each knowing whether higher is better for the defense.

Definitions (README "Metrics" states them too):

- ``clean_accuracy``: fraction of evaluated samples whose clean input is classified correctly.
- ``robust_accuracy``: fraction of evaluated samples whose attacked input is classified correctly.
- ``success_rate``: among samples classified correctly when clean, the fraction where the attack
  succeeded (untargeted: misclassified; targeted: classified as the target).
- ``distortion``: mean of ||x - x_adv||_2 / sqrt(h w c) over those successful attacks (001 Sec. 4.4.2).
- ``auc_roc``: area under the ROC curve separating correctly classified clean inputs (positives) from
  successful adversarial inputs crafted from them (negatives) by the detector's score (higher = clean),
  as in 001 Tables 7-11.
- ``flagged_rate``: fraction of attacked inputs (successful ones, or all of them for corruptions such as noise)
  whose score falls below the threshold that flags 5% of the clean inputs; for noise this is the
  detector's false-positive rate on noisy inputs (004 Sec. 4.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from robench.detectors.base import threshold_at_fpr
from robench.registry import Registry

FLAG_FPR = 0.05


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool  # for the defense
    description: str


METRICS: Registry[Metric] = Registry("metric")
for _metric in (
    Metric("clean_accuracy", True, "accuracy on clean inputs"),
    Metric("robust_accuracy", True, "accuracy on attacked inputs"),
    Metric("success_rate", False, "attack success among clean-correct samples"),
    Metric("distortion", True, "mean L2 / sqrt(hwc) of successful perturbations"),
    Metric("auc_roc", True, "detector AUC-ROC, clean-correct vs successful adversarial"),
    Metric("flagged_rate", True, "fraction of attacked inputs flagged at the clean 5%-FPR threshold"),
):
    METRICS.register(_metric.name, _metric)


def clean_accuracy(records: pd.DataFrame) -> float:
    return float((records["clean_pred"] == records["label"]).mean()) if len(records) else float("nan")


def robust_accuracy(records: pd.DataFrame) -> float:
    return float((records["adv_pred"] == records["label"]).mean()) if len(records) else float("nan")


def _clean_correct(records: pd.DataFrame) -> pd.DataFrame:
    return records[records["clean_pred"] == records["label"]]


def success_rate(records: pd.DataFrame) -> float:
    correct = _clean_correct(records)
    return float(correct["success"].mean()) if len(correct) else float("nan")


def distortion(records: pd.DataFrame) -> float:
    correct = _clean_correct(records)
    hits = correct[correct["success"]]
    return float(hits["distortion"].mean()) if len(hits) else float("nan")


def auc_roc(records: pd.DataFrame, detector: str) -> float:
    """AUC of the detector's score: clean-correct clean inputs (label 1) vs their successful adversarial inputs (label 0)."""
    from sklearn.metrics import roc_auc_score

    correct = _clean_correct(records)
    clean = correct[f"score_clean:{detector}"].to_numpy(dtype=float)
    adversarial = correct.loc[correct["success"], f"score_adv:{detector}"].to_numpy(dtype=float)
    clean, adversarial = clean[np.isfinite(clean)], adversarial[np.isfinite(adversarial)]
    if len(clean) == 0 or len(adversarial) == 0:
        return float("nan")
    labels = np.r_[np.ones(len(clean)), np.zeros(len(adversarial))]
    return float(roc_auc_score(labels, np.r_[clean, adversarial]))


def flagged_rate(records: pd.DataFrame, detector: str, corruption: bool, fpr: float = FLAG_FPR) -> float:
    """Fraction of attacked inputs below the threshold that flags ``fpr`` of all evaluated clean inputs."""
    clean = records[f"score_clean:{detector}"].to_numpy(dtype=float)
    clean = clean[np.isfinite(clean)]
    if len(clean) == 0:
        return float("nan")
    threshold = threshold_at_fpr(torch.from_numpy(clean), fpr)
    attacked = records if corruption else _clean_correct(records)
    attacked = attacked if corruption else attacked[attacked["success"]]
    scores = attacked[f"score_adv:{detector}"].to_numpy(dtype=float)
    scores = scores[np.isfinite(scores)]
    return float((scores < threshold).mean()) if len(scores) else float("nan")


def detectors_in(records: pd.DataFrame) -> list[str]:
    return sorted(c.split(":", 1)[1] for c in records.columns if c.startswith("score_clean:"))


# crafted_on: the model the attack ran on (the model itself, or a black-box threat's substitute), so that
# one target attacked from two substitutes gives two summary rows.
SUMMARY_KEYS = ["model", "threat", "attack", "crafted_on"]
SUMMARY_COLUMNS = [*SUMMARY_KEYS, "detector", "n", "clean_accuracy", "robust_accuracy", "success_rate", "distortion", "auc_roc", "flagged_rate"]


def with_crafted_on(records: pd.DataFrame) -> pd.DataFrame:
    """Records of runs made before transfer attacks existed were all crafted on the model itself."""
    return records if "crafted_on" in records.columns else records.assign(crafted_on=records["model"])


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """One row per model x threat x attack x crafting model x detector (detector ``-`` when none was scored)."""
    rows = []
    for key, group in with_crafted_on(records).groupby(SUMMARY_KEYS, sort=False):
        corruption = bool(group["corruption"].iloc[0]) if "corruption" in group else False
        base = {
            **dict(zip(SUMMARY_KEYS, key)),
            "n": int(len(group)),
            "clean_accuracy": clean_accuracy(group),
            "robust_accuracy": robust_accuracy(group),
            "success_rate": success_rate(group),
            "distortion": distortion(group),
        }
        detectors = detectors_in(group) or ["-"]
        for detector in detectors:
            scored = detector != "-"
            rows.append(
                {
                    **base,
                    "detector": detector,
                    "auc_roc": auc_roc(group, detector) if scored and not corruption else float("nan"),
                    "flagged_rate": flagged_rate(group, detector, corruption) if scored else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
