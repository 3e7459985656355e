"""KD + BU combined by logistic regression (Feinman et al. 2017, Sec. 4.3).

The two scores are z-scored and fed to a logistic regression that separates
clean from adversarial inputs. Unlike the reference code, which fits the
scaler and the regression on the very samples it then scores (and pools
statistics over the adversarial inputs), robench fits on one held-out split and
scores another (:meth:`KDBUDetector.holdout_scores`; in a run,
:func:`robench.scoring.combiner.combine` does it per summary group, over the
samples): the AUC it reports is out-of-sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from robench.core.config import field_like, finite
from robench.core.data import Split
from robench.core.errors import ConfigError
from robench.core.models import Classifier, Forward
from robench.defenses import Defense
from robench.detectors.base import DETECTORS, Detector
from robench.detectors.bu import BayesianUncertaintyDetector
from robench.detectors.kd import KernelDensityDetector


def fit_logistic(clean: np.ndarray, adversarial: np.ndarray, seed: int) -> dict[str, Tensor]:
    """Fit scaler + logistic regression on [clean; adversarial] feature rows; returns tensors
    (label 1 = adversarial)."""
    from sklearn.linear_model import LogisticRegression

    features = np.concatenate([clean, adversarial]).astype(np.float64)
    labels = np.concatenate([np.zeros(len(clean)), np.ones(len(adversarial))])
    if len(clean) < 2 or len(adversarial) < 2:
        raise ConfigError("kd+bu needs at least 2 clean and 2 adversarial samples to fit its combiner")
    mean, std = features.mean(0), features.std(0)
    std[std == 0] = 1.0
    # scikit-learn takes a seed in [0, 2^32); robench's seeds are any 64-bit integer
    model = LogisticRegression(random_state=seed % 2**32).fit((features - mean) / std, labels)
    return {
        "mean": torch.from_numpy(mean),
        "std": torch.from_numpy(std),
        "coef": torch.from_numpy(model.coef_[0].astype(np.float64)),
        "intercept": torch.tensor(float(model.intercept_[0]), dtype=torch.float64),
    }


def combiner_scores(combiner: dict[str, Tensor], features: Tensor) -> Tensor:
    """Minus the logit of 'adversarial' of a :func:`fit_logistic` combiner at feature rows (N x 2), in float64.

    Higher = looks clean, like every detector score. Pure: neither argument is changed.
    """
    c = {k: v.to(features.device) for k, v in combiner.items()}
    return -(((features.double() - c["mean"]) / c["std"]) @ c["coef"] + c["intercept"])


def holdout_split(n: int, fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random (fit, score) partition of range(n)."""
    order = torch.randperm(n, generator=generator)
    cut = int(round(n * fraction))
    return order[:cut], order[cut:]


@DETECTORS.register
@dataclass
class KDBUDetector(Detector):
    # KD's and BU's parameters, with their defaults and constraints
    bandwidth: float | str = field_like(KernelDensityDetector, "bandwidth")
    per_class: int = field_like(KernelDensityDetector, "per_class")
    passes: int = field_like(BayesianUncertaintyDetector, "passes")
    seed: int = field_like(KernelDensityDetector, "seed")
    fit_fraction: float = finite(0.5, low=0, high=1, low_open=True, high_open=True)

    name: ClassVar[str] = "kd+bu"
    label: ClassVar[str] = "KD+BU"
    table_rank: ClassVar[int] = 2
    description: ClassVar[str] = (
        "logistic regression on z-scored [KD, BU], fitted on a held-out split (Feinman et al. 2017)"
    )
    needs_fit: ClassVar[bool] = True
    family_defaults: ClassVar = KernelDensityDetector.family_defaults
    combiner: dict[str, Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kd = KernelDensityDetector(bandwidth=self.bandwidth, per_class=self.per_class, seed=self.seed)
        self.bu = BayesianUncertaintyDetector(passes=self.passes, seed=self.seed)

    def check_applicable(self, model: Classifier, defense: Defense) -> None:
        self.bu.check_applicable(model, defense)

    def fit(self, model: Classifier, defense: Defense, train: Split, device: torch.device) -> None:
        self.kd.fit(model, defense, train, device)

    def fitted_state(self) -> dict[str, Tensor]:
        return self.kd.fitted_state()

    def load_fitted_state(self, state: dict[str, Tensor], device: torch.device) -> None:
        self.kd.load_fitted_state(state, device)

    def fitted_info(self) -> dict[str, object]:
        return self.kd.fitted_info()

    def raw_features(self, model: Classifier, defense: Defense, forward: Forward) -> Tensor:
        """[KD, BU] score pairs (N x 2)."""
        with torch.no_grad():
            return torch.stack([self.kd.score(model, defense, forward), self.bu.score(model, defense, forward)], dim=1)

    def fit_combiner(self, clean_features: Tensor, adversarial_features: Tensor) -> None:
        self.combiner = fit_logistic(
            clean_features.double().cpu().numpy(), adversarial_features.double().cpu().numpy(), self.seed
        )

    def score_features(self, features: Tensor) -> Tensor:
        """Minus the regression's logit of 'adversarial' (higher = clean)."""
        if not self.combiner:
            raise ConfigError("kd+bu: the combiner is not fitted; it needs adversarial examples from a held-out split")
        return combiner_scores(self.combiner, features).float()

    def score(self, model: Classifier, defense: Defense, forward: Forward) -> Tensor:
        return self.score_features(self.raw_features(model, defense, forward))

    def holdout_scores(
        self, clean_features: Tensor, adversarial_features: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Fit the combiner on one part of each set and score the other part.

        Returns (clean scores, adversarial scores, clean indices scored, adversarial indices scored).
        """
        generator = torch.Generator().manual_seed(self.seed)
        clean_fit, clean_eval = holdout_split(len(clean_features), self.fit_fraction, generator)
        adv_fit, adv_eval = holdout_split(len(adversarial_features), self.fit_fraction, generator)
        self.fit_combiner(clean_features[clean_fit], adversarial_features[adv_fit])
        return (
            self.score_features(clean_features[clean_eval]),
            self.score_features(adversarial_features[adv_eval]),
            clean_eval,
            adv_eval,
        )
