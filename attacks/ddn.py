"""Decoupled Direction and Norm attack (DDN; Rony, Hafemann, Oliveira, Ben Ayed, Sabourin, Granger, CVPR 2019), L2.

Rony et al., "Decoupling Direction and Norm for Efficient Gradient-Based L2 Adversarial Attacks and
Defenses" (CVPR 2019; arXiv:1811.09600), Algorithm 1, as foolbox 3.3.4 (``foolbox/attacks/ddn.py``,
the version robench pins) and the authors' code (jeromerony/fast_adversarial,
``fast_adv/attacks/ddn.py``) implement it. DDN looks for the smallest adversarial L2 perturbation
by taking a normalised gradient step on the perturbation delta and then *setting* its norm to a
radius eps that it adapts every step: eps shrinks by a factor (1 - gamma) while the iterate is
adversarial and grows by (1 + gamma) while it is not, so the direction (the gradient steps) and
the norm (eps) are decoupled. With J the per-sample objective robench *minimises* (``objective``
below; the paper maximises the cross-entropy of the true class), x the clean input, delta_0 = 0,
eps_0 = ``init_epsilon``, delta* = none and P_B the model's bounds (``target.bounds``, never a
hard-coded [0, 1]), for k = 0, ..., K - 1:

    g_k       = grad_delta J(x + delta_k)                      one forward and backward pass
    adv_k     = the model's prediction at x + delta_k is wrong (or the target, targeted)
    delta*    = delta_k  if adv_k and ||delta_k||_2 < ||delta*||_2        (the best point so far)
    d_k       = delta_k - alpha_k g_k / ||g_k||_2                          (the direction step)
    eps_{k+1} = eps_k (1 - gamma)  if adv_k  else  eps_k (1 + gamma)      (the norm step)
    eps_{k+1} = min(eps_{k+1}, ||max(x - low, high - x)||_2)              (no larger than any point in bounds)
    delta_{k+1} = P_B(x + eps_{k+1} d_k / ||d_k||_2) - x                  (d_k rescaled to norm eps, then clipped)

The step size alpha follows cosine annealing from ``alpha_init`` to ``alpha_final``,
alpha_k = alpha_final + (alpha_init - alpha_final) (1 + cos(pi k / K)) / 2, indexed k = 0, ..., K - 1 as
foolbox's (lines 121-126) and the authors' (``CosineAnnealingLR``). A zero gradient (a saturated
objective) is replaced by a standard normal direction, as foolbox's ``normalize_gradient_l2_norms``
(lines 20-33) and the authors' code do; robench draws it from the passed generator only (foolbox draws it
from its framework's global RNG). The returned point of each sample is x + delta*, its smallest adversarial
perturbation over all iterates, or the clean input where no iterate was adversarial (``Attack.__call__``
then reports a failure). foolbox never evaluates the last iterate delta_K; robench checks it too (one
forward pass, no backward), so its result is never worse than foolbox's on the same run.

Unlike FMN (:mod:`robench.attacks.fmn`) DDN always rescales the step to the radius (it projects onto the
eps-*sphere*, not the ball: foolbox line 152, ``delta *= epsilon / ||delta||``), so its iterates' norms
track eps except where the bounds clip them.

Everything is batched: eps, the best norm and the found flags are per-sample tensors; every step forwards the
whole batch (as FMN, so the model's judgement of a stored point cannot change with the batch composition). A
clean input that is already misclassified is its own best point (distance 0). At a lower precision
(``AttackTarget.precision`` bf16 / fp16) the gradient pass runs under autocast but each iterate is judged
adversarial or not by an extra fp32 forward pass, as FMN does and for the same reason: a minimum-norm point
sits on the decision boundary, where the rounding decides the class, and ``Attack.__call__`` judges in fp32.

Defaults and where they come from (foolbox 3.3.4, ``foolbox/attacks/ddn.py``; the authors' ``ddn.py`` has
the same values, and by default (``quantize=True``, ``levels=256``) rounds every iterate to 256 levels, which
foolbox and robench do not):

- ``steps`` = 100: foolbox's ``steps`` default (line 57); the authors' code takes ``steps`` without a default.
- ``init_epsilon`` = 1.0: foolbox's ``init_epsilon`` (line 56), the authors' ``init_norm``, in input units.
- ``gamma`` = 0.05: foolbox's ``gamma`` (line 58), the paper's and the authors' gamma.
- ``alpha_init`` = 1.0: foolbox's ``max_stepsize`` (line 97, hard-coded), the authors' SGD ``lr=1``.
- ``alpha_final`` = 0.01: the minimum of foolbox's cosine schedule (lines 123-126, hard-coded), the authors'
  ``CosineAnnealingLR(..., eta_min=0.01)``.
- ``objective`` = ``adaptive``: the defense's adaptive objective in its gradient form (paper 004 App. B.4;
  :meth:`robench.defenses.Defense.adaptive_objective`). For every defense attacked through cross-entropy on its
  logits (softmax, GM, L-GM, MMLDA, ...) it is the stable Z_y - logsumexp_{k != y} Z_k untargeted, whose
  gradient has the direction of -CE(Z, y)'s, and CE(Z, t) targeted: after the L2 normalisation of the step
  exactly the paper's and foolbox's (lines 100-108) cross-entropy step, without -CE's gradient underflow once
  the softmax saturates. ``ce`` uses the test-time logits whatever the defense; the margin and DLR forms are
  accepted too (unclamped).

tests/attacks/test_ddn.py cross-checks the median L2 distance against foolbox's ``DDNAttack`` on the committed
bundles. Registered: ``ddn``, an unbounded minimum-norm attack (no budget parameter: the summary's distortion
is what it measures); the built-in ``minimum-norm`` threat runs it with FMN-L2 and FMN-Linf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from robench.attacks.base import ATTACKS, Attack, AttackTarget
from robench.attacks.norm_balls import l2_norms
from robench.attacks.objectives import OBJECTIVES, objective_value
from robench.core.config import choice, finite, positive_int
from robench.core.errors import ConfigError
from robench.core.precision import FP32, full_precision

_NORM_FLOOR = 1e-12  # per-sample norm floor, as foolbox's 1e-12 (line 30): a zero vector stays zero instead of NaN


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, ...) broadcastable against ``like``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


@ATTACKS.register
@dataclass(frozen=True)
class DDN(Attack):
    """L2 Decoupled Direction and Norm attack (Rony et al. 2019, Alg. 1); unbounded (see the module docstring).

    Fields:
        steps: iterations K (one forward and backward pass each, plus one forward for the last iterate).
        init_epsilon: the initial radius eps_0, in input units.
        gamma: the relative step of the radius (eps grows or shrinks by the factor 1 +- gamma each step).
        alpha_init: initial step size of the direction step, in input units (cosine-annealed to ``alpha_final``).
        alpha_final: final step size.
        objective: any of robench's objectives; ``adaptive`` (the defense's loss, gradient form) by default.
    """

    name: ClassVar[str] = "ddn"
    description: ClassVar[str] = (
        "Decoupled Direction and Norm attack, L2: eps 1.0 +- 5% per step, 100 steps, alpha 1 -> 0.01 (Rony et al. 2019)"
    )
    norm: ClassVar[str] = "l2"
    iterative: ClassVar[bool] = True

    steps: int = positive_int(100)
    init_epsilon: float = finite(1.0, low=0, low_open=True)
    gamma: float = finite(0.05, low=0, high=1, low_open=True, high_open=True)
    alpha_init: float = finite(1.0, low=0, low_open=True)
    alpha_final: float = finite(0.01, low=0, low_open=True)
    objective: str = choice("adaptive", *OBJECTIVES)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha_final > self.alpha_init:
            raise ConfigError(
                f"{self.describe()}: alpha_final ({self.alpha_final:g}) must be <= alpha_init ({self.alpha_init:g})"
            )

    def cost(self) -> float:
        """``steps`` forward-backward passes and one forward pass (the last iterate); at bf16 / fp16 each step adds
        an fp32 forward pass (the judgement of the iterate), which this estimate leaves out."""
        return float(self.steps + 1)

    def run(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        x = x.detach()
        n = x.shape[0]
        if n == 0:
            return x.clone()
        bounds = target.bounds
        # the largest perturbation any point in the bounds has: eps never needs to exceed it
        worst = l2_norms(torch.maximum(x - bounds.low, bounds.high - x))
        eps = torch.full((n,), float(self.init_epsilon), dtype=x.dtype, device=x.device)
        best_x = x.clone()
        best_norm = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
        x_adv = x.clone()
        for k in range(self.steps):
            cosine = (1 + math.cos(math.pi * k / self.steps)) / 2
            alpha = self.alpha_final + (self.alpha_init - self.alpha_final) * cosine
            grad, adversarial = self._evaluate(target, x_adv, y, targets)
            with torch.no_grad():
                delta = x_adv - x
                self._keep_best(x_adv, l2_norms(delta), adversarial, best_x, best_norm)
                direction = self._direction(grad, generator)
                delta = delta - alpha * direction
                eps = torch.minimum(eps * torch.where(adversarial, 1 - self.gamma, 1 + self.gamma), worst)
                delta = delta * _per_sample(eps / l2_norms(delta).clamp_min(_NORM_FLOOR), delta)
                x_adv = bounds.clip(x + delta)
        with torch.no_grad(), full_precision(x.device):  # the last iterate, which foolbox never evaluates
            adversarial = _fooled(target.forward(x_adv).logits, y, targets)
            self._keep_best(x_adv, l2_norms(x_adv - x), adversarial, best_x, best_norm)
        return best_x

    @staticmethod
    def _direction(grad: Tensor, generator: torch.Generator) -> Tensor:
        """The L2-normalised gradient; a zero one replaced by a standard normal direction drawn from ``generator``."""
        norms = l2_norms(grad)
        zero = norms == 0
        if bool(zero.any()):
            noise = torch.randn(
                (int(zero.sum()), *grad.shape[1:]), generator=generator, device=generator.device, dtype=grad.dtype
            )
            grad = grad.clone()
            grad[zero] = noise.to(grad.device)
            norms = l2_norms(grad)
        return grad / _per_sample(norms.clamp_min(_NORM_FLOOR), grad)

    @staticmethod
    def _keep_best(x_adv: Tensor, norm: Tensor, adversarial: Tensor, best_x: Tensor, best_norm: Tensor) -> None:
        """Store (in place) the adversarial iterates smaller than each sample's best so far."""
        better = adversarial & (norm < best_norm)
        best_norm[better] = norm[better]
        best_x[better] = x_adv[better]

    def loss(self, target: AttackTarget, x_adv: Tensor, y: Tensor, targets: Tensor | None):
        """J at ``x_adv`` (N,) and the pass it came from."""
        forward = target.forward(x_adv)
        return objective_value(self.objective, target, forward, y, targets, kappa=math.inf), forward

    def _evaluate(
        self, target: AttackTarget, x_adv: Tensor, y: Tensor, targets: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """J's input gradient at ``x_adv`` and whether each sample is fooled there (same pass; fp32 at bf16 / fp16)."""
        x_adv = x_adv.detach().requires_grad_(True)
        loss, forward = self.loss(target, x_adv, y, targets)
        # Per-sample losses are independent (eval mode), so the gradient of the sum is per-sample.
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        if target.precision == FP32:
            return grad.detach(), _fooled(forward.logits.detach(), y, targets)
        # A minimum-norm point lies on the boundary, where bf16 / fp16 rounding decides the class: judge it in fp32,
        # as Attack.__call__ will, so the point kept (and the eps update) is one fp32 confirms.
        with torch.no_grad(), full_precision(x_adv.device):
            fooled = _fooled(target.forward(x_adv.detach()).logits, y, targets)
        return grad.detach(), fooled


def _fooled(logits: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
    predicted = logits.argmax(1)
    return predicted == targets if targets is not None else predicted != y


__all__ = ["DDN"]
