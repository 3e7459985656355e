"""Bayesian uncertainty (BU) from Monte-Carlo dropout (Feinman et al. 2017, Sec. 3.2; Gal & Ghahramani 2016).

With T stochastic passes (dropout on, everything else in eval mode) giving
class probabilities p_t, the uncertainty is

    U(x) = (1/T) sum_t ||p_t||^2 - ||(1/T) sum_t p_t||^2

(Feinman's Eq. 3 with the constant prior term dropped). Adversarial inputs tend
to have higher U, so the score is -U. A model without active dropout layers has
U = 0 everywhere: the detector refuses it with a one-line error instead of
reporting a meaningless AUC. The dropout masks are drawn under
``torch.random.fork_rng`` seeded from the detector's seed, so scores are
reproducible and the global RNG is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robench.core.config import integer
from robench.core.errors import ConfigError
from robench.core.models import Classifier, Forward
from robench.defenses import Defense
from robench.detectors.base import DETECTORS, Detector


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def mc_dropout_uncertainty(model: Classifier, x: Tensor, passes: int, seed: int) -> Tensor:
    """U(x) from ``passes`` dropout samples; batched over x, one loop over passes."""
    layers = dropout_layers(model)
    devices = [x.device] if x.device.type == "cuda" else []
    was_training = model.training
    try:
        model.eval()  # batch norm and everything else in eval mode; only dropout samples
        for m in layers:
            m.train()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            first = torch.zeros(x.shape[0], device=x.device)
            mean = None
            for _ in range(passes):
                p = torch.softmax(model(x), dim=1)
                first = first + (p * p).sum(1)
                mean = p if mean is None else mean + p
    finally:
        model.train(was_training)
    mean = mean / passes
    return first / passes - (mean * mean).sum(1)


@DETECTORS.register
@dataclass
class BayesianUncertaintyDetector(Detector):
    passes: int = integer(50, low=2, note="Monte-Carlo dropout passes")
    seed: int = integer(0)

    name: ClassVar[str] = "bu"
    label: ClassVar[str] = "BU"
    table_rank: ClassVar[int] = 1
    description: ClassVar[str] = "Bayesian uncertainty from MC dropout, 50 passes (Feinman et al. 2017); needs dropout"

    def check_applicable(self, model: Classifier, defense: Defense) -> None:
        if not dropout_layers(model):
            raise ConfigError(
                "detector 'bu' needs MC dropout but the model has no dropout layer with p > 0 "
                "(train with --arch-param dropout=0.25, or leave 'bu' out)"
            )

    def score(self, model: Classifier, defense: Defense, forward: Forward) -> Tensor:
        self.check_applicable(model, defense)
        with torch.no_grad():
            return -mc_dropout_uncertainty(model, forward.x, self.passes, self.seed)
