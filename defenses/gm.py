"""The large-margin Gaussian-mixture (GM) loss of Wan et al. (TPAMI; paper 001).

Features z of class k are modelled as N(mu_k, I) with a uniform prior, so with
s_k = ||z - mu_k||^2 / 2 (Eq. 18, identity covariance) the posterior is
softmax(-s) (Eq. 3). Training minimises

    L_GM = L_cls^m + lambda * L_lkd                                   (Eq. 8)

where L_cls^m is the cross-entropy of Eq. 4 with the margin of Eq. 19, the
ground-truth class's exponent becoming -s_y - m with the adaptive margin
m = alpha * s_y (Sec. 3.3, Eq. 20 and below), and L_lkd is the Jensen lower
bound of the mixture log-likelihood, (1/K) sum_k ||z - mu_k||^2 (Eqs. 5-7).
Unlike L-GM (paper 002) the regulariser runs over all K means, not only mu_y.
Eq. 7 sums over the N samples; we average over the batch, as Eq. 4 does, so
that lambda does not depend on the batch size.

At test time the logits are -s_k with no margin (Eq. 3), which are always
negative: an attack must not assume positive logits.

Defaults (Sec. 4.3): lambda = 0.1 for image classification; alpha = 1.0 on
MNIST, 0.3 on CIFAR-10, 0.3 on CIFAR-100 (best in Table 6). SVHN has no value
in the paper; we use CIFAR-10's 0.3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.core.config import finite
from robench.defenses.base import DEFENSES, CrossEntropyDefense, LossTerms


class GMHead(nn.Module):
    """Trainable means ``mu`` (K x d); ``forward(z) = -||z - mu_k||^2 / 2`` (Eq. 3 logits)."""

    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.means = nn.Parameter(torch.randn(num_classes, feature_dim))

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    def half_sq_distances(self, z: Tensor) -> Tensor:
        """s_k = ||z - mu_k||^2 / 2 for every class (N x K), Eq. 18 with identity covariance."""
        sq = (z * z).sum(1, keepdim=True) - 2.0 * z @ self.means.t() + (self.means * self.means).sum(1)
        return 0.5 * sq.clamp_min(0.0)

    def forward(self, z: Tensor) -> Tensor:
        return -self.half_sq_distances(z)


def margined_logits(s: Tensor, y: Tensor, alpha: float) -> Tensor:
    """Eq. 19's exponents: -s_k, except -s_y - m for the ground truth, with m = alpha * s_y."""
    margin = alpha * s.gather(1, y[:, None])
    return -(s + F.one_hot(y, s.shape[1]).to(s.dtype) * margin)


def gm_loss(s: Tensor, y: Tensor, alpha: float, lam: float) -> LossTerms:
    """L_GM from the half squared distances ``s`` (N x K) and labels ``y`` (Eqs. 4, 7, 8, 19)."""
    cls = F.cross_entropy(margined_logits(s, y, alpha), y)
    lkd = (2.0 * s).mean(1).mean()  # (1/K) sum_k ||z - mu_k||^2, batch mean
    return LossTerms(total=cls + lam * lkd, parts={"cls": cls, "lkd": lkd})


@dataclass(frozen=True)
class GaussianMixtureDefense(CrossEntropyDefense):
    """What GM and L-GM (``lgm``) share: ``alpha`` (the adaptive margin) and ``lam`` (the weight of the
    likelihood regulariser), and test-time logits (no margin) that are log N(z; mu_k, Sigma_k) up to
    the constant (d/2) log(2 pi). The attack loss is their per-sample cross-entropy (GM: Eq. 4 on -s;
    L-GM: Eq. 12).
    """

    alpha: float = finite(1.0, low=0)
    lam: float = finite(0.1, low=0)

    def class_log_likelihood(self, head: nn.Module, z: Tensor) -> Tensor:
        """log N(z; mu_k, Sigma_k) = logits - (d/2) log(2 pi): for GM -s_k - (d/2) log(2 pi) (Eq. 2, identity
        covariance), for L-GM -d_k - 1/2 log|Lambda_k| - (d/2) log(2 pi) (paper 002, Eq. 5, diagonal Lambda_k)."""
        return head(z) - 0.5 * z.shape[1] * math.log(2 * math.pi)


@DEFENSES.register
@dataclass(frozen=True)
class GMDefense(GaussianMixtureDefense):
    name: ClassVar[str] = "gm"
    label: ClassVar[str] = "GM"
    table_rank: ClassVar[int] = 7
    description: ClassVar[str] = "large-margin Gaussian-mixture loss (Wan et al., TPAMI; paper 001)"
    family_defaults: ClassVar = {
        "mnist": {"alpha": 1.0},
        "cifar10": {"alpha": 0.3},
        "cifar100": {"alpha": 0.3},
        "svhn": {"alpha": 0.3},
    }

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        return GMHead(feature_dim, num_classes)

    def loss(self, head: nn.Module, z: Tensor, y: Tensor) -> LossTerms:
        assert isinstance(head, GMHead)
        return gm_loss(head.half_sq_distances(z), y, self.alpha, self.lam)

    def likelihood_term(self, head: nn.Module, z: Tensor, labels: Tensor) -> Tensor:
        """||z - mu_label||^2 / 2, the negative log-likelihood under the label's Gaussian up to a constant."""
        assert isinstance(head, GMHead)
        return head.half_sq_distances(z).gather(1, labels[:, None]).squeeze(1)
