"""The Carlini & Wagner L2 attack with a per-sample binary search over c (``cw-l2``; ``cw-hc`` for kappa = 10).

Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks"
(paper 001 Sec. 4.4 uses it with 5 binary-search steps, Adam, kappa 0, and
kappa 10 for "C&W-hc"; paper 004 Sec. 4.3 reports the minimal distortion it
finds with 1,000 iterations and 9 binary-search steps). With the change of
variables

    x'(w) = low + (high - low) * (tanh(w) + 1) / 2

(``target.bounds``, never a hard-coded [0, 1]) every w gives an input inside
the bounds, and Adam minimises, per sample,

    ||x'(w) - x||_2^2 + c * f(x'(w))

where f is a pluggable objective from :mod:`robench.attacks.objectives`:
``margin`` (C&W's f_6, clamped at -kappa) or ``adaptive-margin`` (the
defense's own margin objective, paper 004 App. B.4, optionally plus
``likelihood_weight`` times the defense's likelihood term). For each sample the
constant c is searched: start at ``initial_const``, multiply by 10 while no
adversarial example has been found with the current c (upper bound 1e10), then
bisect between the largest failing and the smallest succeeding c. The smallest
successful perturbation of all iterations of all search steps is kept.

Why it is written here rather than wrapped:

- torchattacks' ``CW`` has no binary search over c (one fixed c, 50 steps by
  default), and its f masks by multiplying with a one-hot: "other" is the max
  of ``(1 - onehot) * logits`` and "real" the max of ``onehot * logits``. When
  every logit is negative (GM and MMC logits always are) both maxima are the 0
  of a masked entry, so f is identically 0, its gradient vanishes, and the
  attack silently returns its inputs (``tests/attacks/test_cw.py`` shows it on
  a GM model: 0% success against 100% here).
- foolbox's ``L2CarliniWagnerAttack`` is correct, but its objective is fixed
  to the logit margin and its early abort looks at the loss of the whole batch;
  the adaptive objective and the detector / likelihood term that the white-box
  C&W-wb threat (paper 001 Sec. 4.4) needs must plug in here. A test checks
  that this implementation is at least as strong as foolbox's with equal
  settings.

Everything runs batched with per-sample tensors of c, its search interval and
the Adam state; there is no per-sample Python loop, and a sample's result does
not depend on the rest of the batch up to float rounding (which can depend on
the batch size; a float64 test compares batched with one-at-a-time runs):

- early abort (``abort_early``) is judged per sample, as in Carlini's
  reference, whose default batch size is 1 (foolbox and torchattacks stop the
  whole batch on the summed loss): the iterations are cut into windows of
  ``steps // 10``, and a sample whose lowest loss in a window is not at least
  a relative 1e-4 below its lowest loss in the window before stops moving for
  the rest of this search step. The reference compares the single losses at the
  two checks; the minimum over the window is less easily fooled by Adam's
  oscillation around the decision boundary;
- each sample runs its own binary search: it carries its search step and its
  iteration, and starts its next search step (fresh w and Adam moments, its
  next c) as soon as it aborts or has run ``steps`` iterations, without waiting
  for the rest of the batch. Every iteration forwards all samples still
  searching, whatever their search step, so the batch stays full until fewer
  samples are left than it holds: aborted samples cost nothing, and a batch no
  longer waits for its slowest sample at every search step (only at the end).
  Adam's bias correction follows each sample's own step count
  (``MaskedAdam.step`` with a per-sample t).

Success, for the binary search and for keeping a candidate, is judged as in
the reference: the model predicts a wrong class (untargeted) or the target
(targeted), *and* the margin objective (without the likelihood term) has
reached -kappa, i.e. the winning logit leads by at least kappa. The likelihood
term only shapes the optimisation. Samples that are already adversarial on the
clean input are returned unchanged (distortion 0) and not optimised. For a
sample for which no adversarial example is ever found the attack returns its
best attempt (``return_attempt``, the default, as the references do: an iterate
classified as wanted if there was one, else the one with the smallest
objective; for C&W-wb the target-classified iterate with the smallest f_2),
with its criterion marked as not reached, so ``Attack.__call__`` reports it as
a failure and the record flags it (``best_attempt``); with
``return_attempt=False`` it returns the clean input.

Adam (Kingma & Ba, the same update as ``torch.optim.Adam``) is
:class:`robench.attacks.optim.MaskedAdam`, with per-sample state, because a
sample that aborts must keep its state frozen while others move.
No randomness is used; the generator is ignored.

Cost: the defaults (5 search steps x up to 1,000 Adam iterations, one forward
and backward pass each) are meant for a GPU. On one CPU thread the tests'
small MNIST CNN needs about 20 s for 16 images (early abort included), i.e.
on the order of 20 minutes per thousand; use fewer ``steps`` (and a larger
``lr``) for smoke tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from robench.attacks.base import ATTACKS, Attack, AttackTarget, Crafted
from robench.attacks.objectives import objective_value
from robench.attacks.optim import MaskedAdam
from robench.core.config import boolean, choice, finite, positive_int
from robench.core.errors import ConfigError
from robench.core.models import Forward

# The atanh argument is clamped to +-(1 - 1e-6), as Carlini's reference scales it by 0.999999:
# inputs exactly on a bound map to |w| ~ 7.25 instead of infinity.
_ATANH_LIMIT = 1.0 - 1e-6
# The reference's upper bound on c: while the upper bound is still this, c is multiplied by 10.
_CONST_UPPER = 1e10
# Early abort: stop a sample whose loss has not dropped below (1 - 1e-4) of its previous check (reference: 0.9999).
_ABORT_RELATIVE_DROP = 1e-4

CW_OBJECTIVES = ("margin", "adaptive-margin")


@ATTACKS.register
@dataclass(frozen=True)
class CarliniWagnerL2(Attack):
    """Carlini & Wagner L2 with a per-sample binary search over c (see the module docstring).

    Fields (defaults):

    - ``binary_search_steps`` = 5: search steps over c (paper 001 Sec. 4.4; 004 Sec. 4.3 uses 9;
      foolbox's 9, foolbox/attacks/carlini_wagner.py:51; Carlini's own code is not on this machine,
      not verified). From 10 steps on, the last step reruns at the best c found, as in
      the reference.
    - ``steps`` = 1000: maximal Adam iterations per search step (004 Sec. 4.3's 1,000; foolbox
      allows 10,000 with early abort, foolbox/attacks/carlini_wagner.py:52). CPU cost: see the module docstring.
    - ``lr`` = 0.01: Adam's learning rate, foolbox's (``stepsize``, foolbox/attacks/carlini_wagner.py:53)
      and torchattacks' (torchattacks/attacks/cw.py:39), said to be Carlini's reference value (not
      verified: that code is not on this machine); 004 Sec. 4.3 uses 0.005, 001 Sec. 4.4's text 0.001.
      Not 0.001 because Adam moves each coordinate of w by
      about ``lr`` per iteration, and an input on a bound (most MNIST pixels) sits at
      |w| ~ 7.25: with lr 0.001 it can move by about 1 in w in 1,000 iterations, which
      changes the pixel by less than 1e-5, so the attack could only use the
      intermediate pixels. Set ``lr=0.001`` to reproduce 001's setting literally.
    - ``initial_const`` = 1e-3: the first c, foolbox's (foolbox/attacks/carlini_wagner.py:55; Carlini's
      own code not verified); 004 Sec. 4.3 uses 0.01.
    - ``kappa`` = 0: required confidence; the margin objective is clamped at -kappa
      and success needs the winning logit to lead by kappa (``cw-hc``: 10, paper 001 Sec. 4.4).
    - ``abort_early`` = True: per-sample early abort every ``steps // 10`` iterations.
    - ``objective`` = "margin": C&W's f_6 on the logits; "adaptive-margin" uses the
      defense's own margin objective (paper 004 App. B.4).
    - ``likelihood_weight`` = 0: weight of the defense's likelihood term added to the
      adaptive objective (needs ``objective="adaptive-margin"`` and a defense with a
      likelihood term); it shapes the optimisation, not the success criterion.
    - ``return_attempt`` = True: for a sample never reached, return the best attempt
      (classified as wanted if any iterate was, then the smallest objective), as
      Carlini's and the RCE reference code do, instead of the clean input; the record
      marks it (``best_attempt``) and it never counts as a success. False returns the
      clean input, so detector AUCs over every attempt see failures as clean inputs.
    - ``search_tolerance`` = 0.01: a sample's binary search stops once its bounds on c meet,
      ``upper - lower <= search_tolerance * upper`` (a successful c is known and the failing one
      lies within 1% below it: the remaining steps would retry nearly the same c). 0 runs every
      search step for every sample, as the reference does.
    """

    binary_search_steps: int = positive_int(5)
    steps: int = positive_int(1000)
    lr: float = finite(0.01, low=0, low_open=True)
    initial_const: float = finite(1e-3, low=0, low_open=True)
    kappa: float = finite(0.0, low=0)
    abort_early: bool = boolean(True)
    objective: str = choice("margin", *CW_OBJECTIVES, note="C&W needs a margin objective")
    likelihood_weight: float = finite(0.0, low=0)
    return_attempt: bool = boolean(True)
    search_tolerance: float = finite(0.01, low=0, high=1)

    name: ClassVar[str] = "cw-l2"
    description: ClassVar[str] = (
        "Carlini & Wagner L2, Adam in tanh space, per-sample binary search over c (001 Sec. 4.4, 004 Sec. 4.3)"
    )
    norm: ClassVar[str] = "l2"
    iterative: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.likelihood_weight and self.objective != "adaptive-margin":
            raise ConfigError(f"{self.describe()}: likelihood_weight needs objective=adaptive-margin")

    def run(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator
    ) -> Crafted:
        del generator  # deterministic
        return self._search(target, x, y, targets)

    def cost(self) -> float:
        """Up to ``binary_search_steps`` x ``steps`` Adam iterations per image."""
        return float(self.binary_search_steps * self.steps)

    def criterion(self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, forward: Forward) -> Tensor:
        """Classified as wanted with the margin at -kappa, and f_2 = 0 where the attack has a penalty."""
        with torch.no_grad():
            reached = self._reached(target, forward, y, targets, self._margin(target, forward, y, targets))
            penalty = self._penalty(target, forward, targets, self._context(target, x, y, targets))
        return reached if penalty is None else reached & (penalty <= 0)

    def _search(
        self,
        target: AttackTarget,
        x: Tensor,
        y: Tensor,
        targets: Tensor | None,
        start: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Crafted:
        """The binary search over c from ``start`` (default: the clean input); distances are always to ``x``.

        ``generator`` goes to :meth:`_context`, for a penalty that draws randomness (C&W-wb on a randomized
        detector); plain C&W draws none.

        Returns the smallest successful perturbation per sample and, where none was found, the
        best attempt (``return_attempt``) or the clean input, with the criterion per sample.

        Every sample runs its own search: it carries its search step and its iteration in it, and
        moves on to its next search step (fresh w and Adam moments, the next c) as soon as its
        current one ends (early abort or ``steps`` iterations), whatever the others do. Each
        iteration forwards every sample still searching, so the batch stays full until fewer
        samples are left than it holds; a sample's computation is the reference's, step for step.
        """
        n = x.shape[0]
        best_adv = x.clone()
        if n == 0:
            return Crafted(best_adv, torch.zeros(0, dtype=torch.bool, device=x.device))
        device = x.device
        low, width = target.bounds.low, target.bounds.width
        best_l2 = torch.full((n,), math.inf, dtype=x.dtype, device=device)
        # The best attempt of a sample never reached: classified as wanted (target / wrong class) first,
        # then the smallest objective f = margin term + penalty (for C&W-wb: the smallest f_2 among those).
        attempt_adv = x.clone()
        attempt_hit = torch.zeros(n, dtype=torch.bool, device=device)
        attempt_value = torch.full((n,), math.inf, dtype=x.dtype, device=device)

        context = self._context(target, x, y, targets, generator)
        with torch.no_grad():
            forward = target.forward(x)
            already = self._reached(target, forward, y, targets, self._margin(target, forward, y, targets))
            penalty = self._penalty(target, forward, targets, context)
            if penalty is not None:
                already &= penalty <= 0
        best_l2[already] = 0.0
        origin = x if start is None else start
        w_start = torch.atanh(((origin - low) / width * 2.0 - 1.0).clamp(-_ATANH_LIMIT, _ATANH_LIMIT))

        # Per sample: the binary search over c (float64), its search step and its iteration within it.
        consts = torch.full((n,), float(self.initial_const), dtype=torch.float64, device=device)
        lower = torch.zeros(n, dtype=torch.float64, device=device)
        upper = torch.full((n,), _CONST_UPPER, dtype=torch.float64, device=device)
        search_step = torch.zeros(n, dtype=torch.long, device=device)
        iteration = torch.zeros(n, dtype=torch.long, device=device)
        check_every = max(self.steps // 10, 1)
        # The state of the current search step, reset when a sample starts its next one.
        c = consts.to(x.dtype)
        w = w_start.clone()
        adam = MaskedAdam(w, self.lr)
        found = torch.zeros(n, dtype=torch.bool, device=device)
        previous = torch.full((n,), math.inf, dtype=x.dtype, device=device)
        window_min = torch.full((n,), math.inf, dtype=x.dtype, device=device)
        # Search step 0 never settles (upper is still _CONST_UPPER) and is no final repeat (that needs >= 10 steps).
        moving = ~already

        while True:
            idx = moving.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            w_i = w[idx].requires_grad_(True)
            x_i = self._to_input(w_i, low, width, target)
            forward = target.forward(x_i)
            y_i = y[idx]
            t_i = None if targets is None else targets[idx]
            value = objective_value(self.objective, target, forward, y_i, t_i, self.kappa, self.likelihood_weight)
            penalty = self._penalty(target, forward, t_i, None if context is None else context[idx])
            sq_dist = (x_i - x[idx]).flatten(1).square().sum(1)
            loss = sq_dist + c[idx] * (value if penalty is None else value + penalty)
            (grad,) = torch.autograd.grad(loss.sum(), w_i)

            with torch.no_grad():
                detached = Forward(x=x_i.detach(), z=forward.z.detach(), logits=forward.logits.detach())
                margin = value.detach() if not self.likelihood_weight else self._margin(target, detached, y_i, t_i)
                hit = self._hit(detached, y_i, t_i)
                success = hit & (margin <= -self.kappa)
                objective = margin if penalty is None else margin + penalty.detach()
                if penalty is not None:
                    success &= penalty.detach() <= 0
                dist = sq_dist.detach().sqrt()
                found[idx[success]] = True
                better = success & (dist < best_l2[idx])
                if penalty is not None and bool(better.any()):
                    better &= self._confirmed(target, detached, t_i, None if context is None else context[idx], better)
                best_l2[idx[better]] = dist[better]
                best_adv[idx[better]] = detached.x[better]
                if self.return_attempt:
                    seen_hit = attempt_hit[idx]
                    improves = (hit & ~seen_hit) | ((hit == seen_hit) & (objective < attempt_value[idx]))
                    j = idx[improves]
                    attempt_hit[j] = hit[improves]
                    attempt_value[j] = objective[improves]
                    attempt_adv[j] = detached.x[improves]

                loss = loss.detach()
                it_i = iteration[idx]
                step_now = torch.ones_like(success)
                window_min[idx] = torch.minimum(window_min[idx], loss)
                if self.abort_early:
                    # the samples at a check (their iteration a multiple of check_every) compare their windows
                    check = it_i % check_every == 0
                    before, now = previous[idx], window_min[idx]
                    stalled = check & torch.isfinite(before) & (now > before - _ABORT_RELATIVE_DROP * before.abs())
                    previous[idx] = torch.where(check, now, before)
                    window_min[idx] = torch.where(check, torch.full_like(now, math.inf), now)
                    step_now = ~stalled
                j = idx[step_now]
                # each sample's own Adam step count: the iterations it has taken in this search step, plus one
                w[j] = w[j] - adam.step(j, grad[step_now], it_i[step_now] + 1)
                iteration[j] += 1
                # a search step ends by early abort or after `steps` iterations: the sample moves on to its next
                ended = idx[~step_now | (it_i + 1 >= self.steps)]
                if ended.numel():
                    self._next_search_step(ended, found, consts, lower, upper, search_step, moving)
                    fresh = ended[moving[ended]]
                    c[fresh] = consts[fresh].to(x.dtype)
                    w[fresh] = w_start[fresh]
                    adam.reset(fresh)
                    iteration[fresh] = 0
                    found[fresh] = False
                    previous[fresh] = math.inf
                    window_min[fresh] = math.inf

        reached = torch.isfinite(best_l2)
        if self.return_attempt:
            best_adv = torch.where(reached.view(-1, *([1] * (x.ndim - 1))), best_adv, attempt_adv)
        return Crafted(best_adv, reached)

    def _confirmed(
        self, target: AttackTarget, forward: Forward, targets: Tensor | None, context: Any, candidates: Tensor
    ) -> Tensor:
        """Per row: whether a candidate (``candidates``: it met the criterion and would be the smallest output yet)
        is kept. Always here; a penalty judged on a noisy estimate checks it again independently (C&W-wb on BU)."""
        del target, forward, targets, context
        return torch.ones_like(candidates)

    def _next_search_step(
        self,
        ended: Tensor,
        found: Tensor,
        consts: Tensor,
        lower: Tensor,
        upper: Tensor,
        search_step: Tensor,
        moving: Tensor,
    ) -> None:
        """The samples ``ended`` finished a search step: update their c by the reference's rule and advance them.

        Updates, in place, ``consts``, ``lower``, ``upper``, ``search_step`` and ``moving`` (False
        where the search is over: every search step run, or the bounds met).
        """
        hit = found[ended]
        up = torch.where(hit, torch.minimum(upper[ended], consts[ended]), upper[ended])
        lo = torch.where(hit, lower[ended], torch.maximum(lower[ended], consts[ended]))
        nxt = torch.where(up < _CONST_UPPER * 0.1, (lo + up) / 2, consts[ended] * 10)
        step = search_step[ended] + 1
        if self.binary_search_steps >= 10:
            # the reference's final repeat at the best c found
            nxt = torch.where(step == self.binary_search_steps - 1, up, nxt)
        upper[ended], lower[ended], consts[ended] = up, lo, nxt
        search_step[ended] = step
        # bounds that met: the search is over for the sample (search_tolerance; the reference has no such stop)
        settled = (up < _CONST_UPPER) & (up - lo <= self.search_tolerance * up)
        moving[ended] = (step < self.binary_search_steps) & ~settled

    @staticmethod
    def _to_input(w: Tensor, low: float, width: float, target: AttackTarget) -> Tensor:
        # mathematically inside the bounds; the clip only absorbs float rounding (it passes gradients at the bound)
        return target.bounds.clip(low + width * (torch.tanh(w) + 1.0) / 2.0)

    def _context(
        self,
        target: AttackTarget,
        x: Tensor,
        y: Tensor,
        targets: Tensor | None,
        generator: torch.Generator | None = None,
    ) -> Tensor | None:
        """Per-sample constants a subclass's penalty needs (computed once per batch, indexed by sample); None here.

        ``generator``: the attack's, for a penalty that draws randomness; None when the criterion is judged again.
        """
        return None

    def _penalty(
        self, target: AttackTarget, forward: Forward, targets: Tensor | None, context: Tensor | None
    ) -> Tensor | None:
        """An extra per-sample term f_2 >= 0 added to the objective (weighted by c); success needs f_2 = 0.

        None here; C&W-wb (``cw-wb``) adds the kernel-density term of paper 001 Sec. 4.4.2.
        """
        return None

    def _margin(self, target: AttackTarget, forward: Forward, y: Tensor, targets: Tensor | None) -> Tensor:
        """The margin objective without the likelihood term, clamped at -kappa."""
        return objective_value(self.objective, target, forward, y, targets, self.kappa, 0.0)

    def _reached(
        self, target: AttackTarget, forward: Forward, y: Tensor, targets: Tensor | None, margin: Tensor
    ) -> Tensor:
        """Per-sample success: wrong class (or the target) with the margin objective at -kappa."""
        return self._hit(forward, y, targets) & (margin <= -self.kappa)

    @staticmethod
    def _hit(forward: Forward, y: Tensor, targets: Tensor | None) -> Tensor:
        """Per sample: classified as wanted (a wrong class untargeted, the target targeted)."""
        predicted = forward.logits.argmax(1)
        return predicted != y if targets is None else predicted == targets


@ATTACKS.register
@dataclass(frozen=True)
class CarliniWagnerHighConfidence(CarliniWagnerL2):
    """C&W-hc of paper 001 Sec. 4.4: ``cw-l2`` with kappa = 10 (high-confidence adversarial examples)."""

    kappa: float = 10.0

    name: ClassVar[str] = "cw-hc"
    description: ClassVar[str] = "Carlini & Wagner L2 with confidence kappa = 10 (C&W-hc, paper 001 Sec. 4.4)"
