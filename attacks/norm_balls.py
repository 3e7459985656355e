"""The step, projection and random start of a norm ball, shared by the attacks that take steps inside one.

An attack class mixes in :class:`LinfBall` or :class:`L2Ball` before its engine (``class APGD(LinfBall,
_APGDBase)``): the engine calls ``_direction`` (the norm's steepest-descent direction of a gradient), ``_project``
(onto the eps-ball around the clean input, then into the model's declared bounds, never a hard-coded [0, 1]) and
``_start`` (a uniform point of the ball, drawn from the attack's generator only). The attack's ``eps`` field sizes
the ball.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

_NORM_FLOOR = 1e-12  # per-sample L2 norm floor: a zero gradient / perturbation stays zero instead of NaN


def draw(shape: torch.Size, x: Tensor, generator: torch.Generator, normal: bool = False) -> Tensor:
    """U[0, 1) (or N(0, 1)) noise of ``shape`` from ``generator`` only (on its device, then moved to x's)."""
    sample = torch.randn if normal else torch.rand
    return sample(shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def l2_norms(t: Tensor) -> Tensor:
    """Per-sample L2 norms of ``t``, shape (N,)."""
    return t.flatten(1).norm(dim=1)


def sample_norms(t: Tensor) -> Tensor:
    """Per-sample L2 norms of ``t``, shaped to broadcast against it (N x 1 x ... x 1)."""
    return l2_norms(t).view(-1, *([1] * (t.ndim - 1)))


class LinfBall:
    """Sign steps, projection onto the L-inf ball, a uniform start in it; eps as robench's PGD (0.3 on MNIST-like
    data, Madry et al.'s budget, 004 Fig. 3)."""

    norm: ClassVar[str] = "linf"
    family_defaults: ClassVar = {"mnist": {"eps": 0.3}}
    eps: float

    def _direction(self, grad: Tensor) -> Tensor:
        return grad.sign()

    def _project(self, x_new: Tensor, x: Tensor, target) -> Tensor:
        eps = float(self.eps)
        return target.bounds.clip(torch.maximum(torch.minimum(x_new, x + eps), x - eps))

    def _start(self, x: Tensor, target, generator: torch.Generator) -> Tensor:
        return target.bounds.clip(x + (2 * draw(x.shape, x, generator) - 1) * float(self.eps))


class L2Ball:
    """Steps along g / ||g||_2, projection onto the L2 ball, a uniform start in it; eps 2.0 on MNIST-like data
    (robench's nominal budget, :mod:`robench.specs.budgets`)."""

    norm: ClassVar[str] = "l2"
    family_defaults: ClassVar = {"mnist": {"eps": 2.0}}
    eps: float

    def _direction(self, grad: Tensor) -> Tensor:
        return grad / sample_norms(grad).clamp_min(_NORM_FLOOR)

    def _project(self, x_new: Tensor, x: Tensor, target) -> Tensor:
        # onto the ball, then into the bounds; clipping towards x (which lies in the bounds) never leaves the ball
        delta = x_new - x
        scale = (float(self.eps) / sample_norms(delta).clamp_min(_NORM_FLOOR)).clamp(max=1.0)
        return target.bounds.clip(x + delta * scale)

    def _start(self, x: Tensor, target, generator: torch.Generator) -> Tensor:
        # uniform in the ball: a Gaussian direction, radius eps * U^(1/d)
        direction = draw(x.shape, x, generator, normal=True)
        radius = float(self.eps) * draw(torch.Size((x.shape[0],) + (1,) * (x.ndim - 1)), x, generator) ** (
            1.0 / x[0].numel()
        )
        return self._project(x + direction / sample_norms(direction).clamp_min(_NORM_FLOOR) * radius, x, target)


__all__ = ["L2Ball", "LinfBall", "draw", "l2_norms", "sample_norms"]
