"""Adversarial-example detectors: fit on clean training data, score inputs (higher = looks clean).

``Forward`` lives in :mod:`robench.core.models` now; it is re-exported here (and
from ``robench.detectors.base``) so that older imports keep working.
"""

from robench.core.models import Forward
from robench.detectors import bu, combined, kd, likelihood  # noqa: F401  (registration side effects)
from robench.detectors.base import DETECTORS, Detector, flagged, threshold_at_fpr
from robench.detectors.cache import fit_or_load

__all__ = ["DETECTORS", "Detector", "Forward", "fit_or_load", "flagged", "threshold_at_fpr"]
