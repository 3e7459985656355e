"""SPSA: the gradient-free L-inf attack of Uesato et al. 2018 ("Adversarial Risk and the Dangers of
Evaluating Against Weak Attacks"), as paper 004 Sec. 4.4 uses it against MMC.

Each iteration estimates the gradient of the per-sample objective J (the one the
attacker *minimises*, :func:`robench.attacks.objectives.objective_value`) by
simultaneous perturbation with central differences,

    g = 1/S * sum_i [(J(x_t + delta v_i) - J(x_t - delta v_i)) / (2 delta)] v_i,   v_i ~ Rademacher (+-1)^d

(2 S model evaluations per image, no backward pass), takes one Adam step on it
and projects onto the eps L-inf ball around x and into ``target.bounds``
(never a hard-coded [0, 1]). For a linear J the bracket is exactly v_i . grad J,
so E[g] = grad J (E[v v^T] = I); for smooth J the central difference is exact
up to O(delta^2).

Defaults: Adam lr 0.01, delta 0.01 and S = 128 perturbations ("batch size")
per iteration are 004's values after Uesato et al. (004 Table 3 also uses 4096
and 8192). 004 does not state the number of iterations; ``steps`` = 100
because Adam moves a coordinate by at most about ``lr`` per step, so 100 steps
of 0.01 can cross the whole MNIST ball (2 * 0.3) and the CIFAR ball (2 * 8/255)
many times, at a cost of 100 * 2 * 128 = 25,600 forwards per image. The
objective defaults to ``adaptive``: 004 App. B.4 runs SPSA on the gradient-form
adaptive objective (for softmax models that is the cross-entropy form).

Written here rather than wrapped, after reading the two PyTorch versions:

- torchattacks' ``SPSA`` (from advertorch) has a fixed logit-margin loss, so
  004's adaptive objectives cannot be plugged in, and its ``forward`` never
  calls ``get_target_label``: of the targeted modes only "by label" works (the
  targets passed in place of the labels); ``set_mode_targeted_random`` and
  ``..._least_likely`` silently attack towards the *true* label and do nothing
  (a test shows it). It also clips to a hard-coded [0, 1], has no early stop,
  and draws each perturbation once for the whole batch (``v`` is sliced to size
  1 along the image dimension), from the global RNG.
- cleverhans' PyTorch ``spsa`` evaluates the model at 2x + delta v rather than
  at x + delta v: its gradient helper passes ``x + delta_x`` to a loss that
  adds ``x`` again, and it always probes around the clean x, never around the
  current iterate. Here the probes are x_t +- delta v (a test checks it).

Early stop (``early_stop``, Uesato et al. also stop early): before every
iteration the current iterates are classified; a sample that is adversarial
(misclassified, or classified as its target) is frozen at that first
adversarial point, costs no more forwards, and is returned as it is. A sample
that is adversarial on the clean input is returned unchanged.

Randomness: only the ``torch.Generator`` passed to ``run``. When it lives on
another device than the inputs (the runner passes a CPU generator; the model
may be on a GPU), one seed is drawn from it to seed a generator on the inputs'
device, so the perturbations are drawn where they are used instead of being
copied across each iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from robench.attacks.base import ATTACKS, Attack, AttackTarget
from robench.attacks.objectives import OBJECTIVES, objective_value
from robench.attacks.optim import MaskedAdam
from robench.core.config import boolean, choice, finite, integer, positive_int
from robench.core.errors import ConfigError

LossFn = Callable[[Tensor], Tensor]


@torch.no_grad()
def spsa_gradient(
    loss_fn: LossFn, x: Tensor, delta: float, samples: int, generator: torch.Generator, max_batch: int
) -> Tensor:
    """SPSA estimate of the gradient of ``loss_fn`` at each image of ``x`` (Uesato et al. 2018, central differences).

    ``loss_fn`` gets k stacked perturbed copies of the batch, shape (k * N) x C x H x W, where row r
    perturbs image ``r % N``, and returns the k * N per-row losses. Every image gets its own
    independent Rademacher draws. At most ``max(max_batch, 2 * N)`` rows go into one call.
    """
    n = x.shape[0]
    per_call = max(1, max_batch // (2 * n))  # perturbations per call; each costs 2 rows per image
    total = torch.zeros_like(x)
    done = 0
    while done < samples:
        k = min(per_call, samples - done)
        v = _rademacher((k, *x.shape), generator, x)
        probes = torch.cat([x + delta * v, x - delta * v]).reshape(2 * k * n, *x.shape[1:])
        losses = loss_fn(probes).reshape(2, k, n)
        slope = (losses[0] - losses[1]) / (2 * delta)
        total += (slope.reshape(k, n, *([1] * (x.ndim - 1))) * v).sum(0)
        done += k
    return total / samples


def _rademacher(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """+-1 with probability 1/2 each, drawn from ``generator`` (on its device), in ``like``'s dtype and device."""
    bits = torch.randint(0, 2, shape, generator=generator, device=generator.device, dtype=torch.int8)
    return bits.to(device=like.device, dtype=like.dtype).mul_(2).sub_(1)


@ATTACKS.register
@dataclass(frozen=True)
class SPSA(Attack):
    """Gradient-free SPSA with Adam (Uesato et al. 2018; 004 Sec. 4.4), see the module docstring.

    Fields (defaults):

    - ``eps`` = 8/255: L-inf budget (004's CIFAR budget); on MNIST 0.3, Madry et al.'s
      budget, the same as robench's PGD default there and 004 Fig. 3.
    - ``lr`` = 0.01: Adam's learning rate (004 Sec. 4.4, "as suggested by Uesato et al.").
    - ``delta`` = 0.01: finite-difference step (004 Sec. 4.4, after Uesato et al.).
    - ``samples`` = 128: Rademacher perturbations per iteration, 004 Sec. 4.4's "batch size" (Table 3: 4096, 8192).
    - ``steps`` = 100: iterations; 004 does not give the number (reason in the module docstring).
    - ``objective`` = "adaptive": 004 App. B.4; any of ``ce``, ``margin``, ``adaptive``, ``adaptive-margin``.
    - ``max_batch`` = 0: at most this many perturbed inputs go through the model in one forward;
      0 = by device, 4096 on CUDA and 512 on a CPU (a CPU runs this CNN's forward about 1.4x faster per
      input in batches of 256-512 than of 2048, measured: the activations then stay in its caches). The
      draws are made per forward, so the value changes the random perturbations, not their distribution.
    - ``early_stop`` = True: freeze a sample at its first adversarial iterate.
    """

    eps: float = finite(8 / 255, low=0, low_open=True)
    lr: float = finite(0.01, low=0, low_open=True)
    delta: float = finite(0.01, low=0, low_open=True)
    samples: int = positive_int(128)
    steps: int = positive_int(100)
    objective: str = choice("adaptive", *OBJECTIVES)
    max_batch: int = integer(
        0, low=0, note="0 = by device (4096 on CUDA, 512 on CPU); both probes of an image go through one forward"
    )
    early_stop: bool = boolean(True)

    name: ClassVar[str] = "spsa"
    description: ClassVar[str] = (
        "gradient-free SPSA with Adam, lr 0.01, delta 0.01, 128 samples (Uesato et al. 2018; 004 Sec. 4.4)"
    )
    norm: ClassVar[str] = "linf"
    iterative: ClassVar[bool] = True
    budget_param: ClassVar[str | None] = "eps"
    family_defaults: ClassVar = {"mnist": {"eps": 0.3}}  # Madry et al.'s MNIST budget, as PGD's and 004 Fig. 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_batch == 1:  # both probes of an image go through one forward
            raise ConfigError(f"{self.describe()}: max_batch must be 0 (by device) or at least 2, got 1")

    def run(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        n = x.shape[0]
        x_adv = x.detach().clone()
        if n == 0:
            return x_adv
        generator = _on_device(generator, x.device)
        bounds = target.bounds
        lower = (x_adv - self.eps).clamp_min(bounds.low)
        upper = (x_adv + self.eps).clamp_max(bounds.high)
        adam = MaskedAdam(x_adv, self.lr)
        moving = torch.ones(n, dtype=torch.bool, device=x.device)
        # A central difference needs both probes of an image in one forward, so images go in groups of max_batch // 2.
        max_batch = self.rows_per_forward(x.device)
        group = max_batch // 2

        for t in range(1, self.steps + 1):
            if self.early_stop:
                idx = moving.nonzero().squeeze(1)
                moving[
                    idx[self._adversarial(target, x_adv[idx], y[idx], None if targets is None else targets[idx])]
                ] = False
            idx = moving.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            grad = torch.cat(
                [self._gradient(target, x_adv, y, targets, chunk, generator) for chunk in idx.split(group)]
            )
            # every moving sample has taken exactly t - 1 steps: frozen samples never move again
            step = x_adv[idx] - adam.step(idx, grad, t)
            x_adv[idx] = torch.maximum(torch.minimum(step, upper[idx]), lower[idx])
        return x_adv

    def rows_per_forward(self, device: torch.device) -> int:
        """``max_batch``, or for 0 the device's default (4096 on CUDA, 512 on a CPU)."""
        if self.max_batch:
            return max(2, int(self.max_batch))
        return 4096 if device.type == "cuda" else 512

    def cost(self) -> float:
        """2 x ``samples`` forwards per step, without a backward pass (about a third of a forward + backward each)."""
        return float(self.steps * 2 * self.samples) / 3.0

    def _gradient(
        self,
        target: AttackTarget,
        x_adv: Tensor,
        y: Tensor,
        targets: Tensor | None,
        idx: Tensor,
        generator: torch.Generator,
    ) -> Tensor:
        """SPSA gradient of the objective for the images ``idx`` at their current iterates."""
        y_i = y[idx]
        t_i = None if targets is None else targets[idx]

        def loss(probes: Tensor) -> Tensor:
            copies = probes.shape[0] // idx.numel()
            tiled_targets = None if t_i is None else t_i.repeat(copies)
            return objective_value(self.objective, target, target.forward(probes), y_i.repeat(copies), tiled_targets)

        return spsa_gradient(
            loss, x_adv[idx], float(self.delta), self.samples, generator, self.rows_per_forward(x_adv.device)
        )

    @staticmethod
    @torch.no_grad()
    def _adversarial(target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        predicted = target.model(x).argmax(1)
        return predicted != y if targets is None else predicted == targets


def _on_device(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """``generator`` if it draws on ``device``, else a generator there seeded from it (one draw)."""
    here, there = generator.device, torch.device(device)
    if here.type == there.type and (here.index or 0) == (there.index or 0):
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)


__all__ = ["SPSA", "spsa_gradient"]
