"""Adam with per-sample state, for batched attacks whose samples stop at different iterations.

Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", Algorithm 1,
with ``torch.optim.Adam``'s defaults (betas 0.9 / 0.999, eps 1e-8, no weight
decay), written out because ``torch.optim.Adam`` keeps one state for the whole
tensor: here only the rows (samples) that move are updated, and a sample that
stops (C&W's early abort, SPSA's early stop) keeps its moments untouched.

The update for the rows ``idx`` at step t (1-based), gradient g:

    m <- beta1 m + (1 - beta1) g
    v <- beta2 v + (1 - beta2) g^2
    step = lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

and the caller subtracts ``step`` from its parameter (and may then project it).
The caller passes t: both attacks guarantee that every row updated at t has
taken exactly t - 1 steps, because a sample that stops never moves again. The
float operations and their order are fixed; the C&W and SPSA results of
robench are reproduced bit for bit by them.
"""

from __future__ import annotations

import torch
from torch import Tensor

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class MaskedAdam:
    """Adam moments of shape ``like`` (first dimension: samples), updated only for the rows given to :meth:`step`."""

    def __init__(self, like: Tensor, lr: float, betas: tuple[float, float] = ADAM_BETAS, eps: float = ADAM_EPS) -> None:
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)

    def step(self, idx: Tensor, grad: Tensor, t: int) -> Tensor:
        """Update the moments of rows ``idx`` with their gradient ``grad``; return the step to subtract from them."""
        beta1, beta2 = self.betas
        self.m[idx] = beta1 * self.m[idx] + (1 - beta1) * grad
        self.v[idx] = beta2 * self.v[idx] + (1 - beta2) * grad.square()
        m_hat = self.m[idx] / (1 - beta1**t)
        v_hat = self.v[idx] / (1 - beta2**t)
        return self.lr * m_hat / (v_hat.sqrt() + self.eps)


__all__ = ["ADAM_BETAS", "ADAM_EPS", "MaskedAdam"]
