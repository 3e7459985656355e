"""Auto-PGD (APGD, Croce & Hein, ICML 2020): step-size-free PGD with momentum, on robench's objectives.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks" (ICML 2020), Algorithm 1. With J the per-sample
objective robench *minimises* (:func:`robench.attacks.objectives.objective_value`;
the paper maximises f = -J) and P the projection onto the eps-ball around x
intersected with the model's bounds (``target.bounds``, never a hard-coded [0, 1]):

    x_0     = P(x + U(ball))                             random start from the generator
    z_{k+1} = P(x_k - eta * s(grad J(x_k)))              s = sign (L-inf), g / ||g||_2 (L2)
    x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1}))     alpha = 1 at k = 0

with momentum alpha = 0.75 and initial step eta = 2 eps. At the checkpoints
w_j = ceil(p_j N), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06),
a sample's step is halved and its iterate (and the gradient used next) reset
to its best point so far when

1. J decreased in fewer than rho (w_j - w_{j-1}) of the steps since w_{j-1} (rho = 0.75), or
2. its step was not halved at w_{j-1} and its best J did not improve since then.

The paper writes condition 1 as a strict "<" (the reference implementation, and
torchattacks', use "<="); robench follows the paper. At the first checkpoint
condition 2 compares with J(x_0).

Everything is batched: the step sizes, the improvement counters and the
condition flags are per-sample tensors; the checkpoints are shared (they depend
only on N). Each sample stops at its first adversarial iterate (misclassified, or
classified as its target when ``targets`` are given, robench's target
selection), which is what it returns; a sample never fooled returns its
lowest-J iterate over all restarts. Samples that stop leave the batch, so later
iterations run on the rest only. A clean input that is already misclassified
is returned unchanged. Restarts attack the samples not yet fooled, each from a
new random start.

Why robench writes its own instead of wrapping ``torchattacks.APGD``: that one
computes its CE / DLR loss on the logits itself, so it cannot optimise a
defense's adaptive objective (paper 004, App. B.4: ``adaptive``,
``adaptive-margin``, ``adaptive-dlr``), and its untargeted CE gradient underflows
once the softmax saturates (robench's ``ce`` is the stable form, see
:mod:`robench.attacks.objectives`). It also reseeds the global RNG. tests/attacks/test_apgd.py
cross-checks this implementation's robust accuracy against torchattacks'
APGD-CE and APGD-DLR on the committed regression bundles.

Registered: ``apgd`` (L-inf; eps 8/255, 0.3 on MNIST-like data, as robench's
PGD) and ``apgd-l2`` (L2; eps 0.5, RobustBench's CIFAR-10 L2 budget, and 2.0 on
MNIST-like data, a common MNIST L2 budget that no robench paper fixes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import Tensor

from robench.attacks.base import ATTACKS, Attack, AttackTarget
from robench.attacks.norm_balls import L2Ball, LinfBall
from robench.attacks.objectives import OBJECTIVES, objective_value
from robench.core.config import choice, finite, positive_int


def checkpoints(steps: int) -> tuple[int, ...]:
    """APGD's checkpoints w_1 < w_2 < ... < steps (Croce & Hein 2020, Sec. 3.2): w_j = ceil(p_j * steps).

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06). Duplicates (short runs) are
    dropped, and so is a checkpoint at ``steps`` itself, after the last iteration.
    """
    previous, current = 0.0, 0.22
    found: list[int] = []
    while current <= 1.0:
        # the tolerance keeps float noise (0.41 * 100 = 41.000000000000007) from moving a checkpoint
        w = math.ceil(current * steps - 1e-9)
        if 1 <= w < steps and (not found or w > found[-1]):
            found.append(w)
        previous, current = current, current + max(current - previous - 0.03, 0.06)
    return tuple(found)


@dataclass
class _Live:
    """Per-sample state of the samples still being attacked in one restart (first dimension: those samples)."""

    index: Tensor  # their positions in the batch
    x: Tensor
    y: Tensor
    targets: Tensor | None
    x_cur: Tensor
    x_prev: Tensor
    grad: Tensor
    loss: Tensor
    x_best: Tensor
    grad_best: Tensor
    loss_best: Tensor
    eta: Tensor  # step size, (m,)
    decreases: Tensor  # steps since the last checkpoint in which J decreased, (m,)
    best_at_check: Tensor  # best J at the last checkpoint, (m,)
    halved_at_check: Tensor  # whether the step was halved at the last checkpoint, (m,)

    def keep(self, mask: Tensor) -> _Live:
        """The state of the samples where ``mask`` is True."""
        return _Live(
            **{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[mask] for f in fields(self)}
        )


@dataclass(frozen=True)
class _APGDBase(Attack):
    """The shared APGD engine (see the module docstring); subclasses fix the norm's step, projection and start.

    Fields:
        eps: the budget, in the units of the model's input bounds.
        steps: iterations N per restart (one forward and backward pass each, plus one at the start point).
        n_restarts: random restarts; each attacks the samples not yet fooled.
        rho: condition 1's fraction of steps that must decrease J for the step size to stay.
        momentum: alpha, the weight of the new step against the previous one.
        objective: any of OBJECTIVES (``ce``, ``dlr``, the defense's ``adaptive`` and ``adaptive-dlr``, ...).

    Defaults and their sources: ``rho`` = 0.75 and ``n_restarts`` = 1 are torchattacks' (APGD's ``__init__``,
    torchattacks/attacks/apgd.py:52 and :48); ``momentum`` = 0.75 the value torchattacks hard-codes
    (torchattacks/attacks/apgd.py:184, ``a = 0.75 if i > 0 else 1.0``); ``steps`` = 100 is said to be Croce &
    Hein's (not verified: their paper and code are not on this machine; torchattacks' default is 10,
    torchattacks/attacks/apgd.py:47); ``eps`` 8/255 and MNIST's 0.3 are robench's PGD budget (004 Sec. 4.3, Fig. 3).
    """

    description: ClassVar[str] = "Auto-PGD"
    iterative: ClassVar[bool] = True
    budget_param: ClassVar[str | None] = "eps"

    eps: float = finite(8 / 255, low=0, low_open=True)
    steps: int = positive_int(100)
    n_restarts: int = positive_int(1)
    rho: float = finite(0.75, low=0, high=1)
    momentum: float = finite(0.75, low=0, high=1, low_open=True)
    objective: str = choice("ce", *OBJECTIVES)

    def cost(self) -> float:
        """n_restarts x (steps + 1) forward-backward passes (the start point's included), plus the clean forward."""
        return float(self.n_restarts * (self.steps + 1) + 1)

    # ---- the norm (_direction, _project, _start): a ball of robench.attacks.norm_balls, mixed in by each subclass

    # ---- the algorithm

    def run(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        x = x.detach()
        x_out = x.clone()
        if x.shape[0] == 0:
            return x_out
        with torch.no_grad():
            done = self._fooled(target.forward(x).logits, y, targets)  # already misclassified: returned as is
        best_loss = torch.full((x.shape[0],), float("inf"), device=x.device)
        marks = checkpoints(self.steps)
        for _ in range(self.n_restarts):
            index = (~done).nonzero().squeeze(1)
            if index.numel() == 0:
                break
            live = self._restart(target, x, y, targets, index, x_out, done, best_loss, marks, generator)
            if live is not None and live.index.numel():  # never fooled: keep the best iterate over the restarts
                better = live.loss_best < best_loss[live.index]
                x_out[live.index[better]] = live.x_best[better]
                best_loss[live.index[better]] = live.loss_best[better]
        return x_out

    def _restart(
        self,
        target: AttackTarget,
        x: Tensor,
        y: Tensor,
        targets: Tensor | None,
        index: Tensor,
        x_out: Tensor,
        done: Tensor,
        best_loss: Tensor,
        marks: tuple[int, ...],
        generator: torch.Generator,
    ) -> _Live | None:
        """One run of Algorithm 1 on the samples ``index``; fooled samples are written to ``x_out`` / ``done``."""
        x_live = x[index]
        y_live = y[index]
        t_live = None if targets is None else targets[index]
        x_cur = self._start(x_live, target, generator)
        loss, grad, fooled = self._evaluate(target, x_cur, y_live, t_live)
        m = len(index)
        live = _Live(
            index=index,
            x=x_live,
            y=y_live,
            targets=t_live,
            x_cur=x_cur,
            x_prev=x_cur.clone(),
            grad=grad,
            loss=loss,
            x_best=x_cur.clone(),
            grad_best=grad.clone(),
            loss_best=loss.clone(),
            eta=torch.full((m,), 2.0 * float(self.eps), device=x.device, dtype=x.dtype),
            decreases=torch.zeros(m, device=x.device, dtype=torch.long),
            best_at_check=loss.clone(),
            halved_at_check=torch.zeros(m, device=x.device, dtype=torch.bool),
        )
        live = self._retire(live, fooled, x_out, done)
        last_mark = 0
        for k in range(self.steps):
            if live.index.numel() == 0:
                return None
            with torch.no_grad():
                alpha = 1.0 if k == 0 else float(self.momentum)
                eta = live.eta.view(-1, *([1] * (x.ndim - 1)))
                z = self._project(live.x_cur - eta * self._direction(live.grad), live.x, target)
                x_new = self._project(
                    live.x_cur + alpha * (z - live.x_cur) + (1 - alpha) * (live.x_cur - live.x_prev), live.x, target
                )
            live.x_prev, live.x_cur = live.x_cur, x_new
            loss, live.grad, fooled = self._evaluate(target, x_new, live.y, live.targets)
            with torch.no_grad():
                live.decreases += (loss < live.loss).long()
                live.loss = loss
                better = loss < live.loss_best
                live.x_best[better] = x_new[better]
                live.grad_best[better] = live.grad[better]
                live.loss_best[better] = loss[better]
            live = self._retire(live, fooled, x_out, done)
            if k + 1 in marks:
                mark = k + 1
                with torch.no_grad():
                    few_decreases = live.decreases.double() < self.rho * (mark - last_mark)  # condition 1
                    stalled = ~live.halved_at_check & (live.loss_best >= live.best_at_check)  # condition 2
                    halve = few_decreases | stalled
                    live.eta = torch.where(halve, live.eta / 2, live.eta)
                    live.x_cur[halve] = live.x_best[halve]  # restart from the best point, with its gradient
                    live.grad[halve] = live.grad_best[halve]
                    live.loss[halve] = live.loss_best[halve]
                    live.halved_at_check = halve
                    live.best_at_check = live.loss_best.clone()
                    live.decreases.zero_()
                last_mark = mark
        return live

    def _evaluate(
        self, target: AttackTarget, x_adv: Tensor, y: Tensor, targets: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """J at ``x_adv`` (m,), its input gradient, and whether each sample is fooled there (same pass)."""
        x_adv = x_adv.detach().requires_grad_(True)
        forward = target.forward(x_adv)
        loss = objective_value(self.objective, target, forward, y, targets)
        # Per-sample losses are independent (eval mode), so the gradient of the sum is per-sample.
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        return loss.detach(), grad.detach(), self._fooled(forward.logits.detach(), y, targets)

    @staticmethod
    def _fooled(logits: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        predicted = logits.argmax(1)
        return predicted == targets if targets is not None else predicted != y

    @staticmethod
    def _retire(live: _Live, fooled: Tensor, x_out: Tensor, done: Tensor) -> _Live:
        """Write the samples fooled at their current iterate (their first adversarial one) and drop them."""
        if not bool(fooled.any()):
            return live
        x_out[live.index[fooled]] = live.x_cur[fooled]
        done[live.index[fooled]] = True
        return live.keep(~fooled)


@ATTACKS.register
@dataclass(frozen=True)
class APGD(LinfBall, _APGDBase):
    """L-inf Auto-PGD (Croce & Hein 2020, Alg. 1); eps as robench's PGD: 8/255, 0.3 on MNIST-like data."""

    name: ClassVar[str] = "apgd"
    description: ClassVar[str] = (
        "Auto-PGD, L-inf, 100 steps, step-size halving at checkpoints, momentum 0.75 (Croce & Hein 2020)"
    )


@ATTACKS.register
@dataclass(frozen=True)
class APGDL2(L2Ball, _APGDBase):
    """L2 Auto-PGD (Croce & Hein 2020, Alg. 1 with the L2 step g / ||g||_2); eps 0.5, 2.0 on MNIST-like data."""

    name: ClassVar[str] = "apgd-l2"
    description: ClassVar[str] = (
        "Auto-PGD, L2, 100 steps, step-size halving at checkpoints, momentum 0.75 (Croce & Hein 2020)"
    )

    eps: float = 0.5


__all__ = ["APGD", "APGDL2", "checkpoints"]
