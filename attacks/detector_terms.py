"""What an adaptive attacker knows of the detectors a run scores, and their differentiable scores.

A detector is only as strong as the strongest attack that knows it (Carlini & Wagner 2017, "Adversarial
examples are not easily detected"; Tramer et al. 2020; Bryniarski et al. 2022). The runner hands an attack
that declares it (:attr:`robench.attacks.base.AttackNeeds.detectors`) one :class:`KnownDetector` per scored
detector it targets, in ``AttackTarget.known_detectors``:

- the fitted detector itself (the one that scores the run: the attacker attacks exactly the scored detector);
- the attacker's *threshold*: the score below which the detector flags an input, at the run's false-positive
  rate (5%) on held-out clean data (training-split samples the attacker draws, never the evaluated ones;
  :mod:`robench.runs.knowledge`);
- a *scale*, the spread of those held-out clean scores, so the terms of several detectors can be added, and a
  *level*, their median (C&W-wb's density level eta, for any detector: as clean-looking as the median clean input);
- for KD+BU, the attacker's own logistic regression on the z-scored pair [KD, BU] (the scored one is fitted
  after the attacks, on a split of the attacked samples, so the attacker cannot know it; it fits its own the
  way Feinman et al. do, on held-out clean and noisy inputs against detector-blind adversarial ones).

:meth:`KnownDetector.score` is the detector's score (higher = looks clean) with a graph to the input:

- ``kd``, ``gm-likelihood``, ``max-prob`` and any detector whose ``score`` keeps the graph: directly;
- ``bu`` (Monte-Carlo dropout, a randomized score): an expectation over fresh dropout masks (EOT,
  Athalye et al. 2018), ``passes`` stochastic passes whose masks are seeded from the attack's generator at
  every call, so each step sees new masks and the result is reproducible;
- ``kd+bu``: KD's and BU's (EOT) scores through the attacker's regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.core.precision import full_precision
from robench.detectors import DETECTORS, Detector
from robench.detectors.bu import BayesianUncertaintyDetector, mc_dropout_uncertainty
from robench.detectors.combined import KDBUDetector, combiner_scores

ALL_DETECTORS = "all"  # an attack's ``detector`` value for every detector the run scores at once
RANDOMIZED = (BayesianUncertaintyDetector, KDBUDetector)


def randomized_detector(detector: str) -> bool:
    """Whether an attack on the detector named ``detector`` scores through dropout masks (BU, KD+BU) and so needs an
    expectation over them; ``all`` counts as randomized (the run's detectors are not known yet, BU may be one)."""
    if detector == ALL_DETECTORS:
        return True
    return detector in DETECTORS.names() and issubclass(DETECTORS.get(detector), RANDOMIZED)


@dataclass(frozen=True)
class KnownDetector:
    """One scored detector as the attacker knows it: fitted, with its flag threshold (see the module docstring)."""

    name: str
    detector: Detector
    threshold: float  # flagged when score < threshold (the attacker's, at 5% FPR on held-out clean data)
    scale: float  # spread of the held-out clean scores (> 0)
    level: float  # the median held-out clean score: a level an attack may aim at (C&W-wb's eta for any detector)
    combiner: dict[str, Tensor] | None = field(default=None, repr=False)  # kd+bu: the attacker's regression

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ConfigError(f"detector '{self.name}': the attacker's score scale must be > 0, got {self.scale}")
        if isinstance(self.detector, KDBUDetector) and not self.combiner:
            raise ConfigError(f"detector '{self.name}': the attacker needs its own KD+BU regression")

    @property
    def randomized(self) -> bool:
        """Whether the score draws dropout masks (BU, KD+BU): an attack then needs an expectation over them."""
        return isinstance(self.detector, RANDOMIZED)

    def score(self, target, forward: Forward, generator: torch.Generator | None = None, passes: int = 10) -> Tensor:
        """The detector's score (N,) at ``forward`` (higher = clean), differentiable in ``forward.x``.

        ``target`` is the :class:`~robench.attacks.base.AttackTarget` (untyped: attacks.base imports this module).
        A randomized detector draws ``passes`` (>= 2) dropout masks per call from a seed drawn from ``generator``.
        """
        model, defense, detector = target.model, target.defense, self.detector
        if isinstance(detector, KDBUDetector):
            kd = detector.kd.score(model, defense, forward)
            bu = -self._uncertainty(target, forward.x, generator, passes)
            return combiner_scores(self.combiner, torch.stack([kd, bu], dim=1)).to(forward.x.dtype)
        if isinstance(detector, BayesianUncertaintyDetector):
            return -self._uncertainty(target, forward.x, generator, passes)
        # a score read off the forward pass, in fp32 whatever the attack's autocast (the GM likelihood's expanded
        # squared distances lose their digits in bf16), as the scorer computes it
        with full_precision(forward.z.device):
            fp32 = Forward(x=forward.x, z=forward.z.float(), logits=forward.logits.float())
            return detector.score(model, defense, fp32).to(forward.x.dtype)

    def flagged(self, score: Tensor) -> Tensor:
        """True where ``score`` falls below the attacker's threshold."""
        return score < self.threshold

    def _uncertainty(self, target, x: Tensor, generator: torch.Generator | None, passes: int) -> Tensor:
        """BU's U(x) over ``passes`` fresh masks, on the scale of the scorer's estimate: U over T passes is a sample
        variance with divisor T, whose expectation is (1 - 1/T) tr Cov, so a T-pass estimate is rescaled by
        (1 - 1/P) / (1 - 1/T) to the P passes the scored detector draws (unscaled, 10 passes against the scorer's
        50 would see 8% less uncertainty than the scorer will)."""
        if generator is None:
            raise ConfigError("a randomized detector's score needs the attack's torch.Generator (fresh dropout masks)")
        if passes < 2:
            raise ConfigError(f"Monte-Carlo dropout needs at least 2 passes per estimate, got {passes}")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        scored = scored_passes(self)
        return mc_dropout_uncertainty(target.model, x, passes, seed) * ((1 - 1 / scored) / (1 - 1 / passes))


def scored_passes(known: KnownDetector) -> int:
    """The Monte-Carlo dropout passes the scored detector draws per input (BU's, or the BU of KD+BU); 0 for a
    deterministic detector."""
    detector = known.detector
    bu = detector.bu if isinstance(detector, KDBUDetector) else detector
    return int(bu.passes) if isinstance(bu, BayesianUncertaintyDetector) else 0


def select_known(known: Sequence[KnownDetector], detector: str, attack: str) -> tuple[KnownDetector, ...]:
    """The known detectors an attack with ``detector`` (a name, or :data:`ALL_DETECTORS`) targets; a one-line error
    when the run does not score it."""
    if detector == ALL_DETECTORS:
        if not known:
            raise ConfigError(f"attack '{attack}' targets the run's detectors, but the run scores none")
        return tuple(known)
    chosen = tuple(k for k in known if k.name == detector)
    if not chosen:
        scored = ", ".join(k.name for k in known) or "none"
        raise ConfigError(f"attack '{attack}' targets detector '{detector}', which this run does not score ({scored})")
    return chosen


__all__ = ["ALL_DETECTORS", "RANDOMIZED", "KnownDetector", "randomized_detector", "scored_passes", "select_known"]
