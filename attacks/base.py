"""The attack interface (foolbox-3 style): a final ``__call__`` that checks and scores, subclasses write ``run``.

An :class:`AttackTarget` is what the attacker knows: the model, its defense
(whose adaptive objective it may use, paper 004 App. B.4), the input bounds the
model declares, and optionally a detector (white-box C&W-wb). ``Attack.__call__``

1. checks that the inputs lie in the bounds, labels are valid, and targets differ from labels;
2. calls ``run`` (the subclass's algorithm), which returns adversarial inputs;
3. checks that they are finite and in the bounds (never clamps a buggy attack's output silently);
4. recomputes success from the model's own prediction on the returned inputs, in fp32 even when
   ``run`` ran under bf16 / fp16 autocast (``AttackTarget.precision``, :mod:`robench.core.precision`)
   (misclassified, or classified as the target), never trusting the attack's claim. An attack
   with a criterion of its own (C&W's confidence kappa, C&W-wb's f_2 = 0) returns
   :class:`Crafted` with that criterion per sample; success then needs both, so the attack
   can only make success stricter (at a lower precision the criterion is judged again in fp32,
   :meth:`Attack.criterion`). Where the criterion failed and the attack returned
   something other than the clean input (its best attempt), ``AttackResult.best_attempt`` says so.

Randomness comes only from the ``torch.Generator`` passed in; the global RNG is never touched.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, final

import torch
from torch import Tensor

from robench.core.config import Configurable
from robench.core.errors import ConfigError
from robench.core.models import Classifier, Forward
from robench.core.precision import FP32, full_precision, lowered
from robench.core.registry import Registry
from robench.defenses import Defense

if TYPE_CHECKING:  # only the detector-aware attacks use detectors, and import them themselves
    from robench.attacks.detector_terms import KnownDetector
    from robench.detectors import Detector

_BOUND_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Bounds:
    """The input domain the model declares (its dataset's value range); attacks clip to it."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ConfigError(f"bounds need low < high, got ({self.low}, {self.high})")

    def clip(self, x: Tensor) -> Tensor:
        return x.clamp(self.low, self.high)

    def contains(self, x: Tensor) -> bool:
        if x.numel() == 0:
            return True
        return bool(x.min() >= self.low - _BOUND_TOLERANCE and x.max() <= self.high + _BOUND_TOLERANCE)

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass
class AttackTarget:
    """What the attacker attacks and knows: model, defense, input bounds, optionally a fitted detector."""

    model: Classifier
    defense: Defense
    bounds: Bounds
    detector: Detector | None = None
    # The -log KD level eta a white-box attack on a kernel-density detector must reach (C&W-wb, paper 001 Sec. 4.4.2):
    # the leave-one-out median over the training set, and the same median per class (K,).
    detector_eta: float | None = None
    detector_eta_per_class: Tensor | None = None
    # The scored detectors an attack that asks for them (AttackNeeds.detectors) knows: fitted, with the attacker's
    # own flag thresholds on held-out clean data (robench.attacks.detector_terms).
    known_detectors: tuple[KnownDetector, ...] = ()
    # The precision the attack loop runs at (robench.core.precision); its output is judged in fp32 either way.
    precision: str = FP32

    def forward(self, x: Tensor) -> Forward:
        """The model's pass on ``x``; at a lower precision the backbone runs under the caller's autocast.

        Its features come back up-cast to ``x``'s dtype and the head runs in fp32 on them
        (differentiably), so the logits, the objectives, the margins and the densities are fp32.
        """
        if self.precision == FP32 or not getattr(self.model, "separable_head", True):
            # a model without a separable head (an imported one) runs in one pass, which up-casts z and the logits
            return Forward.of(self.model, x)
        # the backbone at the lower precision; the head (GM / MMC distances, whose expanded squares a bf16
        # product would cancel away) in fp32 on the up-cast features
        z = self.model.features(x).to(x.dtype)
        with full_precision(x.device):
            return Forward(x=x, z=z, logits=self.model.head(z))

    def predict(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(x).argmax(1)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass(frozen=True)
class Crafted:
    """What ``run`` may return instead of a bare tensor: the inputs and whether the attack's own criterion was met.

    ``reached[i]`` False means sample i failed the attack's criterion (C&W: no iterate reached
    the target with margin kappa, C&W-wb: and f_2 = 0); ``x_adv[i]`` is then the clean input or,
    for an attack that returns its best attempt, the best iterate it found.
    """

    x_adv: Tensor
    reached: Tensor


@dataclass(frozen=True)
class AttackResult:
    """Adversarial inputs and per-sample success as judged by the model (not by the attack).

    ``success`` is the model's judgement (misclassified, or the target), and the attack's own
    criterion where it has one; ``best_attempt`` marks failures returned as an attempt other
    than the clean input (they may be misclassified without counting as successes).
    """

    x_adv: Tensor
    success: Tensor
    predicted: Tensor
    forward: Forward  # the model's eval-mode pass on x_adv (no graph), reused for detector scores
    best_attempt: Tensor


@dataclass(frozen=True)
class AttackNeeds:
    """What an attack needs the runner to provide beyond the model (see :meth:`Attack.needs`).

    ``density``: an attacker-side kernel density over the crafting model's training features,
    with its eta levels, in ``AttackTarget.detector`` / ``detector_eta`` /
    ``detector_eta_per_class`` (C&W-wb, 001 Sec. 4.4.2). Its settings follow the run's scored
    ``kd`` detector (bandwidth, training points per class, seed) unless the attack sets them:
    ``kd_per_class`` (0 = all) and ``kd_bandwidth``, None = the scored detector's.

    ``detectors``: the scored detectors the attacker knows (:mod:`robench.attacks.detector_terms`), with its
    thresholds on held-out clean data, in ``AttackTarget.known_detectors``: a name or ``all``.
    """

    density: bool = False
    kd_per_class: int | None = None
    kd_bandwidth: float | None = None
    kd_subset: str | None = None  # which kd_per_class points: "random" (seeded) or "first"; None = the scored's
    # The scored detectors the attack targets, in AttackTarget.known_detectors: one detector's name, "all" (every
    # scored detector), or None (none).
    detectors: str | None = None


@dataclass(frozen=True)
class Attack(Configurable, ABC):
    """Base class; subclasses are frozen dataclasses whose fields are the attack's parameters.

    The fields' constraints are field metadata (:mod:`robench.core.config`), checked on construction.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    kind: ClassVar[str] = "attack"
    # "linf", "l2" or "none" (noise, rotation): the norm the budget is measured in.
    norm: ClassVar[str] = "none"
    # For tables and sanity checks: an optimiser that takes several steps (BIM, PGD, C&W, SPSA, ...),
    # one that takes a single gradient step (FGSM), and the field that sizes the attack (None: unbounded, C&W).
    iterative: ClassVar[bool] = False
    single_step: ClassVar[bool] = False
    budget_param: ClassVar[str | None] = None

    @final
    def __call__(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None = None, *, generator: torch.Generator
    ) -> AttackResult:
        if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ConfigError(
                "attack inputs need x of shape N x C x H x W and y "
                f"of shape N, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if not target.bounds.contains(x):
            raise ConfigError(
                f"attack inputs fall outside the model's bounds ({target.bounds.low}, {target.bounds.high})"
            )
        k = target.num_classes
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            raise ConfigError(f"labels must lie in 0..{k - 1}")
        if targets is not None:
            if targets.shape != y.shape or (targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= k)):
                raise ConfigError(f"targets must have the labels' shape and lie in 0..{k - 1}")
            if bool((targets == y).any()):
                raise ConfigError("a target equals the true label; targets must be wrong classes")
        was_training = target.model.training
        target.model.eval()
        device = x.device
        try:
            with lowered(device, target.precision):
                crafted = self.run(target, x.detach(), y, targets, generator)
            if isinstance(crafted, Crafted):
                x_adv, reached = crafted.x_adv.detach(), crafted.reached.to(torch.bool)
                if reached.shape != y.shape:
                    raise RuntimeError(
                        f"attack '{self.name}' returned a criterion of shape {tuple(reached.shape)} for {len(y)} inputs"
                    )
            else:
                x_adv, reached = crafted.detach(), None
            if x_adv.shape != x.shape or not torch.isfinite(x_adv).all():
                raise RuntimeError(f"attack '{self.name}' returned non-finite or mis-shaped inputs")
            if not target.bounds.contains(x_adv):
                raise RuntimeError(f"attack '{self.name}' left the input bounds")
            with torch.no_grad(), full_precision(device):
                forward = target.forward(x_adv)
                if x_adv.dtype != x.dtype:
                    raise RuntimeError(f"attack '{self.name}' returned {x_adv.dtype} inputs for {x.dtype} ones")
                if reached is not None and target.precision != FP32:  # the attack's own criterion again, in fp32
                    again = self.criterion(target, x, y, targets, forward)
                    reached = reached if again is None else reached & again.to(torch.bool)
        finally:
            target.model.train(was_training)
        predicted = forward.predicted
        success = predicted == targets if targets is not None else predicted != y
        best_attempt = torch.zeros_like(success)
        if reached is not None:
            success = success & reached
            best_attempt = ~reached & (x_adv != x).flatten(1).any(1)
        return AttackResult(
            x_adv=x_adv, success=success, predicted=predicted, forward=forward, best_attempt=best_attempt
        )

    def cost(self) -> float:
        """Estimated model passes per image (a forward with its backward counts as one):
        the cascade's cheapest-first key.

        :mod:`robench.scoring.cascade` runs a threat's attacks in increasing cost; the estimate only
        orders them, it is never reported as a measurement (run.json counts the passes made).
        """
        return float(getattr(self, "steps", 1))

    def criterion(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, forward: Forward
    ) -> Tensor | None:
        """The attack's own success criterion on ``forward`` (a pass on its output), or None for none.

        ``__call__`` judges it again in fp32 when the attack ran at a lower precision, so a
        criterion met only under bf16 / fp16 rounding never counts (C&W's margin, C&W-wb's f_2).
        """
        return None

    def needs(self) -> AttackNeeds:
        """What the runner must provide in the AttackTarget; most attacks need nothing beyond the model."""
        return AttackNeeds()

    def attacked_detectors(self, scored: Sequence[str]) -> tuple[str, ...]:
        """The scored detectors (of ``scored``, the run's) this attack descends on; empty for a detector-blind one.

        Records keep it per attack (``attack_detectors``), so a detector-aware figure can say whether any attack
        of its threat targeted that detector (the ``detector-not-attacked`` sanity flag).
        """
        needs = self.needs()
        if needs.detectors is not None:
            return tuple(scored) if needs.detectors == "all" else tuple(d for d in scored if d == needs.detectors)
        if needs.density:  # a kernel density of the crafting model's features: the scored 'kd' detector's kind
            return tuple(d for d in scored if d == "kd")
        return ()

    @abstractmethod
    def run(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator
    ) -> Tensor | Crafted:
        """Return adversarial inputs for the batch (same shape as x, inside ``target.bounds``), or :class:`Crafted`."""


def attack_eps(attack: Attack) -> float:
    """The attack's eps budget in its norm (NaN for a minimum-norm attack, which has none, or a corruption).

    A bounded attack sizes itself with ``budget_param`` = ``eps`` (PGD, APGD, SPSA, the library attacks with a
    budget); C&W, FMN, DDN and the library's minimum-norm attacks have none; noise and rotation measure
    ``sigma`` and degrees, not a norm ball.
    """
    if attack.budget_param != "eps" or getattr(attack, "norm", "none") == "none":
        return math.nan
    value = getattr(attack, "eps", None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


ATTACKS: Registry[type[Attack]] = Registry("attack", base=Attack)
