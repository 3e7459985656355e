"""Softmax + centre loss (Wen et al., ECCV 2016,
"A Discriminative Feature Learning Approach for Deep Face Recognition").

A linear head gives the logits; training minimises, per sample,

    L = CE(W z + b, y) + lambda / 2 ||z - c_y||^2                      (Eqs. 2, 5)

with Eq. 5's sums over the mini-batch taken as means (the ratio of the two
terms, hence lambda, is unchanged). The class centres c_j are not trained by
the optimiser: Wen et al. update them once per iteration with their own rate
alpha (Sec. 3.2, Alg. 1),

    c_j <- c_j - alpha * sum_{i: y_i = j} (c_j - z_i) / (1 + n_j),

so here they are a buffer of the head, updated under ``torch.no_grad()``
inside :meth:`CenterDefense.loss` when the head is in training mode (the
training loop knows nothing about centres). The loss is computed with the
centres *before* the update, as in Alg. 1, and its gradient reaches only z.
Centres start at zero; classes absent from a batch keep their centre.

Defaults: lambda = 0.003 and alpha = 0.5, the values Wen et al. fix for their
experiments (Sec. 4; their parameter study varies one with the other held at
these values). Paper 004 (Sec. 4) says its centre-loss baseline follows the
original paper's settings, so these keep that comparison. With them the default cnn
reaches 98.4% on mnist-5k with the family's training settings; a larger
lambda pulls features harder to the centres (Wen et al., Fig. 3).

At test time the defense is a plain softmax classifier, so ``attack_loss`` is
cross-entropy on the linear logits (inherited from ``softmax``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.core.config import finite
from robench.defenses.base import DEFENSES, LinearHead, LossTerms
from robench.defenses.softmax import SoftmaxDefense


class CenterHead(LinearHead):
    """A linear head that also carries the class centres (K x d buffer, saved with the model)."""

    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__(feature_dim, num_classes)
        self.register_buffer("centers", torch.zeros(num_classes, feature_dim))


@torch.no_grad()
def update_centers(centers: Tensor, z: Tensor, y: Tensor, alpha: float) -> None:
    """One step of Wen et al.'s rule (Alg. 1) in place: c_j -= alpha * sum_{y_i=j}(c_j - z_i) / (1 + n_j)."""
    counts = torch.bincount(y, minlength=centers.shape[0]).to(centers.dtype)[:, None]
    sums = torch.zeros_like(centers).index_add_(0, y, z.detach().to(centers.dtype))
    centers -= alpha * (counts * centers - sums) / (1.0 + counts)


@DEFENSES.register
@dataclass(frozen=True)
class CenterDefense(SoftmaxDefense):
    lam: float = finite(0.003, low=0)
    # alpha <= 1 moves a centre at most n_j / (1 + n_j) of the way to its batch mean; above 1 it can overshoot.
    alpha: float = finite(0.5, low=0, high=1, note="the centres' update rate")

    name: ClassVar[str] = "center"
    label: ClassVar[str] = "Center"
    table_rank: ClassVar[int] = 1
    description: ClassVar[str] = "softmax + centre loss (Wen et al., ECCV 2016)"

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        return CenterHead(feature_dim, num_classes)

    def loss(self, head: nn.Module, z: Tensor, y: Tensor) -> LossTerms:
        assert isinstance(head, CenterHead)
        ce = F.cross_entropy(head(z), y)
        # Indexing copies the centres, so the in-place update below cannot disturb autograd.
        center = 0.5 * (z - head.centers[y]).pow(2).sum(1).mean()
        if head.training:
            update_centers(head.centers, z, y, self.alpha)
        return LossTerms(total=ce + self.lam * center, parts={"ce": ce, "center": center})
