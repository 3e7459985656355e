"""L-infinity gradient-sign attacks: one batched engine, five named configurations.

Every attack here is the iteration

    x_0     = x                      (or x + U(-eps, eps)^n, clipped, with ``random_start``)
    g_t     = grad_x J(x_t)          J = the per-sample objective to *minimise*
                                     (:func:`robench.attacks.objectives.objective_value`)
    m_t     = decay * m_{t-1} + g_t / ||g_t||_1    (only when ``decay`` > 0: momentum, MIM)
    x_{t+1} = clip_bounds( Proj_{||. - x||_inf <= eps}( x_t - step * sign(g_t or m_t) ) )

run for ``steps`` iterations on the whole batch at once (one forward and one
backward pass per iteration; gradients are taken with respect to the input only,
so nothing accumulates in the model's ``.grad``). The objective is pluggable:
``ce`` is the non-adaptive cross-entropy of the original papers (-CE(Z, y)
untargeted, CE(Z, t) targeted, so the step is the usual ``+ step * sign(grad CE)``
resp. ``- step * sign(grad CE_t)``), ``adaptive`` is the defense's own loss
(paper 004, App. B.4), ``margin`` / ``adaptive-margin`` the C&W-style forms.
The projection clips to the bounds the model declares (``target.bounds``), never
to a hard-coded [0, 1].

Registered configurations (paper defaults; every field can be overridden):

=========  =====================================  ======  ======  =====  ============  =====
name       paper                                  eps     step    steps  random start  decay
=========  =====================================  ======  ======  =====  ============  =====
``fgsm``   Goodfellow et al. 2015; 001 Sec. 4.4   0.1     = eps   1      no            0
``bim``    Kurakin et al. 2017; 001 Sec. 4.4      0.2     0.01    20     no            0
``ilcm``   Kurakin et al. 2017; 001 Sec. 4.4      0.2     0.01    20     no            0
``pgd``    Madry et al. 2018; 004 Sec. 4.3        8/255   2/255   10     yes           0
``mim``    Dong et al. 2018; 004 Sec. 4.4         8/255   2/255   10     no            1.0
=========  =====================================  ======  ======  =====  ============  =====

Choices the papers leave open:

- FGSM: paper 001 uses eps = 0.1 for pixels in [-0.5, 0.5]; robench pixels lie
  in [0, 1], the same scale, so eps = 0.1. ``step`` defaults to ``None``, which
  means "= eps" (the single full step), so overriding ``eps`` alone keeps it an FGSM.
- BIM / ILCM: paper 001 gives 20 iterations of step 0.01 but no budget. The
  default eps = 0.2 = steps * step is the farthest 20 such steps can reach, so
  the projection never binds and the attack is exactly the paper's 20 clipped
  steps; set ``eps`` explicitly for a tighter budget (Kurakin et al. use
  min(eps + 4, 1.25 eps) iterations of 1/255 for a given eps).
- ILCM is BIM aimed at the least-likely class. Target selection belongs to the
  caller (:func:`robench.attacks.targets.choose_targets` with
  ``default_target_mode == "least-likely"``); ``ilcm`` refuses to run without
  targets rather than silently degrading to an untargeted BIM.
- PGD: eps 8/255, step 2/255, 10 steps with a uniform random start (paper 004,
  Sec. 4.3, after Madry et al.); PGD-50 is ``steps=50``. The start is drawn from
  the ``torch.Generator`` passed to the attack, never the global RNG.
- MIM: decay mu = 1.0, each per-sample gradient L1-normalised before it is
  accumulated (Dong et al. 2018, Alg. 1), paper 004's budget (8/255, 2/255, 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from robench.attacks.base import ATTACKS, Attack, AttackTarget
from robench.attacks.norm_balls import draw
from robench.attacks.objectives import OBJECTIVES, objective_value
from robench.core.config import boolean, choice, finite, positive_int
from robench.core.errors import ConfigError

_ADAPTIVE = ("adaptive", "adaptive-margin")
_L1_FLOOR = 1e-12  # per-sample L1 norm floor: a zero gradient stays zero instead of becoming NaN


@dataclass(frozen=True)
class LinfGradientAttack(Attack):
    """The shared iterative L-inf gradient-sign engine (see the module docstring).

    Fields:
        eps: L-inf budget, in the units of the model's input bounds.
        step: step size per iteration; ``None`` means ``eps`` (FGSM's single full step).
        steps: number of iterations (one forward and backward pass each).
        random_start: start from a uniform point of the eps-ball (Madry et al. 2018).
        decay: momentum decay mu (Dong et al. 2018); 0 disables momentum.
        objective: one of ``ce``, ``margin``, ``adaptive``, ``adaptive-margin``.
        likelihood_weight: weight of the defense's likelihood term (adaptive objectives only).
    """

    name: ClassVar[str] = "linf"
    description: ClassVar[str] = "iterative L-inf gradient-sign attack"
    norm: ClassVar[str] = "linf"
    # The target mode the papers run this attack with; None leaves it to the caller.
    default_target_mode: ClassVar[str | None] = None
    requires_targets: ClassVar[bool] = False
    iterative: ClassVar[bool] = True
    budget_param: ClassVar[str | None] = "eps"

    eps: float = finite(8 / 255, low=0, low_open=True)
    step: float | None = finite(2 / 255, low=0, low_open=True, optional=True, note="None: step = eps")
    steps: int = positive_int(10)
    random_start: bool = boolean(False)
    decay: float = finite(0.0, low=0)
    objective: str = choice("ce", *OBJECTIVES)
    likelihood_weight: float = finite(0.0, low=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.likelihood_weight and self.objective not in _ADAPTIVE:
            raise ConfigError(
                f"{self.describe()}: likelihood_weight needs an adaptive objective ({' or '.join(_ADAPTIVE)}), "
                f"not '{self.objective}', which would ignore it"
            )

    @property
    def step_size(self) -> float:
        """The step actually taken: ``step``, or ``eps`` when ``step`` is None."""
        return float(self.eps if self.step is None else self.step)

    def run(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        if targets is None and self.requires_targets:
            raise ConfigError(
                f"attack '{self.name}' is targeted: pass targets "
                f"(e.g. choose_targets('{self.default_target_mode}', ...))"
            )
        if x.shape[0] == 0:
            return x.clone()
        eps, step, bounds = float(self.eps), self.step_size, target.bounds
        x = x.detach()
        lower, upper = x - eps, x + eps
        if self.random_start:
            x_adv = bounds.clip(x + (2 * draw(x.shape, x, generator) - 1) * eps)
        else:
            x_adv = x.clone()
        momentum = torch.zeros_like(x) if self.decay > 0 else None
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            loss = objective_value(
                self.objective, target, target.forward(x_adv), y, targets, likelihood_weight=self.likelihood_weight
            )
            # Per-sample losses are independent (eval mode), so the gradient of the sum is per-sample.
            (grad,) = torch.autograd.grad(loss.sum(), x_adv)
            if momentum is not None:
                l1 = grad.abs().flatten(1).sum(1).clamp_min(_L1_FLOOR).view(-1, *([1] * (grad.ndim - 1)))
                momentum = self.decay * momentum + grad / l1
                grad = momentum
            with torch.no_grad():
                x_adv = x_adv.detach() - step * grad.sign()
                x_adv = bounds.clip(torch.maximum(torch.minimum(x_adv, upper), lower))
        return x_adv.detach()


@ATTACKS.register
@dataclass(frozen=True)
class FGSM(LinfGradientAttack):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps; paper 001, Sec. 4.4 (eps 0.1 for
    pixels in [-0.5, 0.5], a range of width 1 as robench's [0, 1])."""

    name: ClassVar[str] = "fgsm"
    iterative: ClassVar[bool] = False
    single_step: ClassVar[bool] = True
    description: ClassVar[str] = (
        "fast gradient sign method, one step of size eps (Goodfellow et al. 2015; 001: eps 0.1)"
    )

    eps: float = 0.1
    step: float | None = None
    steps: int = 1


@ATTACKS.register
@dataclass(frozen=True)
class BIM(LinfGradientAttack):
    """Basic iterative method (Kurakin et al. 2017): 20 clipped steps of 0.01, paper 001 Sec. 4.4;
    eps 0.2 = 20 * 0.01 (robench's: 001 states no eps for BIM/ILCM, so the ball is the one 20 steps can reach)."""

    name: ClassVar[str] = "bim"
    description: ClassVar[str] = "basic iterative method, 20 steps of 0.01, eps 0.2 (Kurakin et al. 2017; 001)"

    eps: float = 0.2
    step: float | None = 0.01
    steps: int = 20


@ATTACKS.register
@dataclass(frozen=True)
class ILCM(BIM):
    """Iterative least-likely class method (Kurakin et al. 2017): BIM targeted at the least-likely class.

    The caller picks the targets (``choose_targets("least-likely", ...)``, the
    ``default_target_mode``); without targets the attack raises a ConfigError.
    """

    name: ClassVar[str] = "ilcm"
    description: ClassVar[str] = (
        "iterative least-likely class method: BIM targeted at the least-likely class (Kurakin et al. 2017; 001)"
    )
    default_target_mode: ClassVar[str | None] = "least-likely"
    requires_targets: ClassVar[bool] = True


@dataclass(frozen=True)
class _Paper004Budget(LinfGradientAttack):
    """Paper 004's L-inf budget, shared by PGD and MIM (not registered): eps 8/255, step 2/255, 10 steps."""

    eps: float = 8 / 255
    step: float | None = 2 / 255
    steps: int = 10

    # 8/255 is 004's CIFAR budget; on MNIST 004 (Fig. 3, after Madry et al.) uses eps 0.3, step 0.01.
    family_defaults: ClassVar = {"mnist": {"eps": 0.3, "step": 0.01}}


@ATTACKS.register
@dataclass(frozen=True)
class PGD(_Paper004Budget):
    """Projected gradient descent (Madry et al. 2018) with a uniform random start; paper 004 Sec. 4.3
    (8/255 or 16/255, step 2/255, 10 or 50 steps; MNIST: eps 0.3, step 0.01, 004 Fig. 3's caption)."""

    name: ClassVar[str] = "pgd"
    description: ClassVar[str] = (
        "projected gradient descent with random start, eps 8/255, step 2/255, 10 steps (Madry et al. 2018; 004)"
    )

    random_start: bool = True


@ATTACKS.register
@dataclass(frozen=True)
class MIM(_Paper004Budget):
    """Momentum iterative method (Dong et al. 2018): decay 1.0 (torchattacks' MIFGSM, torchattacks/attacks/mifgsm.py:32;
    Dong et al.'s paper is not on this machine), L1-normalised gradients; paper 004's budget (Sec. 4.3)."""

    name: ClassVar[str] = "mim"
    description: ClassVar[str] = (
        "momentum iterative method, decay 1.0, eps 8/255, step 2/255, 10 steps (Dong et al. 2018; 004)"
    )

    decay: float = 1.0


LINF_ATTACKS: tuple[type[LinfGradientAttack], ...] = (FGSM, BIM, ILCM, PGD, MIM)

__all__ = ["BIM", "FGSM", "ILCM", "LINF_ATTACKS", "MIM", "PGD", "LinfGradientAttack"]
