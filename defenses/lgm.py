"""The large-margin Gaussian-mixture (L-GM) loss of Wan et al. (CVPR 2018; paper 002).

Features z of class k are modelled as N(mu_k, Lambda_k) with a *diagonal*
covariance Lambda_k and a uniform prior p(k) = 1/K (Sec. 3.5). With the
Mahalanobis half-distance

    d_k = (z - mu_k)^T Lambda_k^{-1} (z - mu_k) / 2                    (Eqs. 13, 18)

the posterior is softmax over k of -d_k - 1/2 log|Lambda_k| (Eq. 12, the
|Lambda_k|^{-1/2} factor of the Gaussian kept in the logit). Training minimises,
per sample (Eq. 17),

    L = CE(softmax(-d_k (1 + alpha 1(k = y)) - 1/2 log|Lambda_k|), y)
        + lambda (d_y + 1/2 log|Lambda_y|)

i.e. the adaptive margin m = alpha d_y (Sec. 3.3, Eq. 14) multiplies the
ground-truth distance only, and the likelihood regulariser (Eq. 10) uses only
the ground-truth class, unlike the GM loss of paper 001 (``gm``), whose
regulariser runs over all K means. Eq. 10 sums over the N samples; we average
over the batch, as Eq. 7 does, so that lambda does not depend on the batch size.

Lambda_k is parametrised by its log-diagonal (initialised to 0, Lambda = I), so
it stays positive under unconstrained gradient steps; Sec. 3.5 restricts the
covariance to be diagonal because gradient updates of a full matrix "may
suffer from singularity problems". Test-time logits have no margin.

Caveat of Eq. 17 itself: with learned covariances L_lkd is unbounded below
(scaling z, mu and sqrt(Lambda) together by s -> 0 leaves every d_k and the
posterior unchanged while 1/2 log|Lambda_y| -> -inf). With the default 20
epochs of Adam on mnist-5k the loss stays positive (about 0.2 at the end), so
this does not bite, but long runs may drift.

Defaults (Sec. 4, opening paragraphs before 4.1): alpha = 1.0, 0.3, 0.1 for
MNIST, CIFAR-10, CIFAR-100 and lambda = 0.1. SVHN has no value in the paper;
we use CIFAR-10's 0.3 (as ``gm`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.defenses.base import DEFENSES, LossTerms
from robench.defenses.gm import GaussianMixtureDefense, margined_logits


class LGMHead(nn.Module):
    """Trainable means ``mu`` and log-variances (K x d); ``forward(z) = -d_k - 1/2 log|Lambda_k|`` (Eq. 12 logits)."""

    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.means = nn.Parameter(torch.randn(num_classes, feature_dim))
        self.log_var = nn.Parameter(torch.zeros(num_classes, feature_dim))

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    def half_mahalanobis(self, z: Tensor) -> Tensor:
        """d_k for every class (N x K), Eq. 18, without an N x K x d intermediate."""
        precision = torch.exp(-self.log_var)
        sq = (z * z) @ precision.t() - 2.0 * z @ (self.means * precision).t() + (self.means**2 * precision).sum(1)
        return 0.5 * sq.clamp_min(0.0)

    def half_log_det(self) -> Tensor:
        """1/2 log|Lambda_k| per class (K,)."""
        return 0.5 * self.log_var.sum(1)

    def forward(self, z: Tensor) -> Tensor:
        return -self.half_mahalanobis(z) - self.half_log_det()


def lgm_loss(d: Tensor, half_log_det: Tensor, y: Tensor, alpha: float, lam: float) -> LossTerms:
    """L-GM (Eq. 17) from the distances ``d`` (N x K), 1/2 log|Lambda_k| (K,) and labels, batch-averaged."""
    # margined_logits gives -d_k - 1(k = y) alpha d_y = -(1 + alpha 1(k = y)) d_k: Eq. 17's exponents.
    cls = F.cross_entropy(margined_logits(d, y, alpha) - half_log_det, y)
    lkd = (d.gather(1, y[:, None]).squeeze(1) + half_log_det[y]).mean()
    return LossTerms(total=cls + lam * lkd, parts={"cls": cls, "lkd": lkd})


@DEFENSES.register
@dataclass(frozen=True)
class LGMDefense(GaussianMixtureDefense):
    name: ClassVar[str] = "lgm"
    label: ClassVar[str] = "L-GM"
    table_rank: ClassVar[int] = 2
    description: ClassVar[str] = (
        "large-margin Gaussian-mixture loss with diagonal covariances (Wan et al., CVPR 2018; paper 002)"
    )
    family_defaults: ClassVar = {
        "mnist": {"alpha": 1.0},
        "cifar10": {"alpha": 0.3},
        "cifar100": {"alpha": 0.1},
        "svhn": {"alpha": 0.3},
    }

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        return LGMHead(feature_dim, num_classes)

    def loss(self, head: nn.Module, z: Tensor, y: Tensor) -> LossTerms:
        assert isinstance(head, LGMHead)
        return lgm_loss(head.half_mahalanobis(z), head.half_log_det(), y, self.alpha, self.lam)

    def likelihood_term(self, head: nn.Module, z: Tensor, labels: Tensor) -> Tensor:
        """d_label + 1/2 log|Lambda_label|: the per-sample term of Eq. 10 (NLL up to (d/2) log 2 pi)."""
        assert isinstance(head, LGMHead)
        return head.half_mahalanobis(z).gather(1, labels[:, None]).squeeze(1) + head.half_log_det()[labels]
