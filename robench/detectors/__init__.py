"""Adversarial-example detectors: fit on clean training data, score inputs (higher = looks clean)."""

from robench.detectors import bu, combined, kd, likelihood  # noqa: F401  (registration side effects)
from robench.detectors.base import DETECTORS, Detector, Forward, flagged, threshold_at_fpr
from robench.detectors.cache import fit_or_load

__all__ = ["DETECTORS", "Detector", "Forward", "fit_or_load", "flagged", "threshold_at_fpr"]
