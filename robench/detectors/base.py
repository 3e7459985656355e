"""The detector interface: fit on clean training data, score inputs (higher = looks clean).

Scores are computed from a :class:`~robench.core.models.Forward` (input,
features z, logits) that the caller computes once and shares between detectors
(``Forward`` lives beside the classifier; it is re-exported here for older imports). A detector that can be
differentiated (KD, GM likelihood, max-prob) returns a score with a graph when
the forward pass has one, so adaptive attacks can descend on it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from robench.core.config import Configurable
from robench.core.data import Split
from robench.core.errors import ConfigError
from robench.core.models import Classifier, Forward
from robench.core.registry import Registry
from robench.defenses import Defense


@dataclass
class Detector(Configurable, ABC):
    """Base class; subclasses are dataclasses whose init fields are the hyper-parameters.

    Fitted state lives in ordinary attributes, is exported by ``fitted_state``
    (tensors only, so the cache loads it with ``weights_only=True``) and
    restored by ``load_fitted_state``.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    kind: ClassVar[str] = "detector"
    # Tables: the detector's column header, and its position (lower first; the built-ins take 0..4).
    label: ClassVar[str]
    table_rank: ClassVar[int] = 100
    higher_is_clean: ClassVar[bool] = True
    needs_fit: ClassVar[bool] = False

    def check_applicable(self, model: Classifier, defense: Defense) -> None:
        """Raise a one-line ConfigError if this detector cannot work with the model."""

    def fit(self, model: Classifier, defense: Defense, train: Split, device: torch.device) -> None:
        """Fit on clean training data (no-op for detectors without state); randomness comes from the detector's own
        seed field."""

    def fitted_state(self) -> dict[str, Tensor]:
        return {}

    def fitted_info(self) -> dict[str, object]:
        """What the fit chose, for run.json (e.g. KD's selected bandwidth); empty for most detectors."""
        return {}

    def load_fitted_state(self, state: dict[str, Tensor], device: torch.device) -> None:
        if state:
            raise ConfigError(f"detector '{self.name}' has no fitted state to load")

    @abstractmethod
    def score(self, model: Classifier, defense: Defense, forward: Forward) -> Tensor:
        """Per-sample score (N,), higher = looks clean."""


def threshold_at_fpr(clean_scores: Tensor, fpr: float) -> float:
    """The score below which an input is flagged, so that at most a fraction ``fpr`` of clean inputs is flagged.

    The threshold is the k-th smallest clean score with k = floor(fpr * n), so
    exactly k clean scores lie strictly below it when there are no ties (fewer
    with ties: the false-positive rate never exceeds ``fpr``). Use held-out
    clean scores, never the ones being evaluated.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ConfigError(f"false-positive rate must be in [0, 1], got {fpr}")
    scores = clean_scores.detach().double().flatten()
    if scores.numel() == 0:
        raise ConfigError("need clean scores to set a threshold")
    k = math.floor(fpr * scores.numel())
    return float("inf") if k >= scores.numel() else float(scores.sort().values[k])


def flagged(scores: Tensor, threshold: float) -> Tensor:
    """True where a score falls below the threshold (looks adversarial)."""
    return scores < threshold


DETECTORS: Registry[type[Detector]] = Registry("detector", base=Detector)

__all__ = ["DETECTORS", "Detector", "Forward", "flagged", "threshold_at_fpr"]
