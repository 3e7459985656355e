"""Detectors read off the classifier itself: the GM likelihood and the maximum softmax probability."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from robench.core.errors import ConfigError
from robench.core.models import Classifier, Forward
from robench.defenses import Defense
from robench.detectors.base import DETECTORS, Detector


@DETECTORS.register
@dataclass
class GMLikelihoodDetector(Detector):
    """log p(z | predicted class) under the defense's Gaussian model (paper 002, Sec. 4.3, "adversarial verification").

    Only for defenses with a generative head (GM, L-GM, MMC, MMLDA); others are
    refused with a one-line error.
    """

    name: ClassVar[str] = "gm-likelihood"
    label: ClassVar[str] = "Likelihood"
    table_rank: ClassVar[int] = 4
    description: ClassVar[str] = "log-likelihood of z under the predicted class's Gaussian (GM, L-GM, MMC, MMLDA heads)"

    def check_applicable(self, model: Classifier, defense: Defense) -> None:
        probe = torch.zeros(1, model.feature_dim, device=next(model.parameters()).device)
        if defense.class_log_likelihood(model.head, probe) is None:
            raise ConfigError(
                f"detector 'gm-likelihood' needs a Gaussian head (e.g. gm, lgm, mmc, mmlda); defense '{defense.name}' "
                "has none"
            )

    def score(self, model: Classifier, defense: Defense, forward: Forward) -> Tensor:
        log_lik = defense.class_log_likelihood(model.head, forward.z)
        if log_lik is None:
            self.check_applicable(model, defense)
        return log_lik.gather(1, forward.predicted[:, None]).squeeze(1)


@DETECTORS.register
@dataclass
class MaxProbabilityDetector(Detector):
    """The maximum softmax probability of the test-time logits (Hendrycks & Gimpel 2017), the trivial baseline."""

    name: ClassVar[str] = "max-prob"
    label: ClassVar[str] = "MaxProb"
    table_rank: ClassVar[int] = 3
    description: ClassVar[str] = "maximum softmax probability (baseline)"

    def score(self, model: Classifier, defense: Defense, forward: Forward) -> Tensor:
        return torch.softmax(forward.logits, dim=1).max(1).values
