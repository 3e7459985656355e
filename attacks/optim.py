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
The caller passes t, either one int for all rows ``idx`` (SPSA: every row updated
at t has taken exactly t - 1 steps, because a sample that stops never moves
again) or one per row (C&W, whose samples each run their own binary search and
so sit at different iterations: its rows restart at t = 1 with :meth:`reset`).
A per-row t gives the same bits as the int: the bias corrections 1 - beta^t are
computed by Python's float power either way and rounded once to the moments'
dtype, and on CUDA (which divides by a scalar as a product with its reciprocal)
multiplied by their reciprocal as the scalar kernel does (not checked on a GPU
here: none was available when this was written). The float operations and
their order are fixed; the C&W and SPSA results of robench are reproduced bit
for bit by them.
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
        # 1 - beta1^t and 1 - beta2^t for t = 1, 2, ... (row t - 1), grown on demand, for per-row step counts
        self._corrections = torch.zeros(0, 4, dtype=like.dtype, device=like.device)

    def reset(self, idx: Tensor) -> None:
        """Zero the moments of rows ``idx``: their next step is t = 1 again."""
        self.m[idx] = 0.0
        self.v[idx] = 0.0

    def step(self, idx: Tensor, grad: Tensor, t: int | Tensor) -> Tensor:
        """Update the moments of rows ``idx`` with their gradient ``grad``; return the step to subtract from them.

        ``t``: the 1-based step of every row in ``idx`` (an int), or of each (an integer tensor shaped like ``idx``).
        """
        beta1, beta2 = self.betas
        self.m[idx] = beta1 * self.m[idx] + (1 - beta1) * grad
        self.v[idx] = beta2 * self.v[idx] + (1 - beta2) * grad.square()
        if isinstance(t, Tensor):
            shape = (-1,) + (1,) * (self.m.ndim - 1)
            corrections = self._corrections_up_to(int(t.max()) if t.numel() else 0)[t - 1]
            if self.m.device.type == "cuda":
                # CUDA divides by a Python scalar as a product with its reciprocal (rounded in the moments' dtype)
                m_hat = self.m[idx] * corrections[:, 2].view(shape)
                v_hat = self.v[idx] * corrections[:, 3].view(shape)
            else:
                m_hat = self.m[idx] / corrections[:, 0].view(shape)
                v_hat = self.v[idx] / corrections[:, 1].view(shape)
        else:
            m_hat = self.m[idx] / (1 - beta1**t)
            v_hat = self.v[idx] / (1 - beta2**t)
        return self.lr * m_hat / (v_hat.sqrt() + self.eps)

    def _corrections_up_to(self, t: int) -> Tensor:
        """Rows 0 .. t - 1 of (1 - beta1^t, 1 - beta2^t) and their reciprocals: each correction Python's float
        rounded to the moments' dtype, as the int path's scalar division rounds it, and the reciprocal of that
        rounded in the same dtype (the CUDA kernel's ``1 / b``)."""
        have = self._corrections.shape[0]
        if t > have:
            beta1, beta2 = self.betas
            more = [(1 - beta1**s, 1 - beta2**s) for s in range(have + 1, max(t, 2 * have) + 1)]
            table = torch.tensor(more, dtype=torch.float64).to(self.m.dtype)
            table = torch.cat([table, 1.0 / table], dim=1).to(self.m.device)
            self._corrections = torch.cat([self._corrections, table])
        return self._corrections


__all__ = ["ADAM_BETAS", "ADAM_EPS", "MaskedAdam"]
