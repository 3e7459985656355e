"""The Gaussian class-conditional simplex (GCCS) loss of Ali et al. (paper 003).

The network maps its input to a latent vector u in R^D, D = number of classes
(Sec. III: a "latent space mapper" of fully connected layers, the last without
activation; Sec. IV-A: "a fully-connected layer that outputs a vector with
dimension D"). Here that mapper is the head's *learned* linear layer
R^d -> R^K on top of the backbone's feature z (64-d on the default cnn), so the
backbone is unchanged and every dimension of z can be used. Class i's target
is P_i = N(mu_T e_i, sigma_T^2 I_D): centres on the vertices of a regular
simplex, all equally far apart (Sec. III-A).

Training (Sec. III-B) matches the per-class sample statistics of a batch to the
targets, summing over classes (Eq. 2):

    L = sum_i [ KL_i + lambda (K_i - 3) ],
    KL_i = log(|Sigma_T| / |Sigma_Oi|) - D + tr(Sigma_T^-1 Sigma_Oi)
           + (mu_Ti - mu_Oi)^T Sigma_T^-1 (mu_Ti - mu_Oi)             (Eq. 1, as printed: no factor 1/2)
    K_i  = 1/D sum_j mean_n ((u_nj - mu_Oij) / sigma_Oij)^4           (kurtosis, Joanes & Gill's b2 = m4 / m2^2)

Choices the paper leaves open, documented here:

* Sigma_Oi is the *diagonal* of the sample covariance (unbiased variances). A
  batch of 64 holds about 6 samples per class, fewer than D + 1 = 11, so the
  full sample covariance is singular and log|Sigma_Oi| = -inf; the diagonal is
  well defined from 2 samples and matches the per-component kurtosis.
* A class with a single sample in the batch (e.g. in the short last batch)
  contributes only its mean term; classes absent from the batch contribute 0.
* The kurtosis term is taken literally, lambda (K_i - 3), not |K_i - 3|: it is
  bounded below (b2 >= 1) and penalises heavy tails, as Sec. IV-B describes
  ("GCCS provides lighter distribution tails").

Decision rule (Sec. III-C, Eq. 3): the nearest centre, which is argmax_i u_i
because ||u - mu_T e_i||^2 = ||u||^2 - 2 mu_T u_i + mu_T^2. Test-time logits
are the negative Euclidean distances to the centres.

The attack loss cannot use batch statistics (a single sample has no variance
or kurtosis), so it is Eq. 1 for a one-sample "batch" of the target class:
only the mean term survives, ||u - mu_T e_t||^2 / sigma_T^2. Its margin form is
then linear in u: 2 mu_T (u_y - u_t) / sigma_T^2.

Defaults (Sec. III-B and IV-A1): lambda = 0.2, mu_T = 70, sigma_T = 1, for all
datasets. The paper notes classes stay separable only if mu_T / sigma_T >
sqrt(2D) (Sec. III-A) but sweeps mu_T down to 0.5 (Fig. 2), so smaller values
are allowed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robench.core.config import finite
from robench.defenses.base import DEFENSES, Defense, LossTerms

# Floor for variances and squared distances, so degenerate inputs give large finite values and gradients, not inf/nan.
_FLOOR = 1e-12


class GCCSHead(nn.Module):
    """Learned latent mapper u = A z + b (R^d -> R^K); ``forward`` is minus the distance to mu_T e_k."""

    def __init__(self, feature_dim: int, num_classes: int, mu_t: float) -> None:
        super().__init__()
        self.mapper = nn.Linear(feature_dim, num_classes)
        self.mu_t = float(mu_t)

    @property
    def num_classes(self) -> int:
        return self.mapper.out_features

    def latent(self, z: Tensor) -> Tensor:
        return self.mapper(z)

    def sq_distances(self, u: Tensor) -> Tensor:
        """||u - mu_T e_k||^2 for every class (N x K), from the closed form of the simplex centres."""
        return ((u * u).sum(1, keepdim=True) - 2.0 * self.mu_t * u + self.mu_t**2).clamp_min(0.0)

    def forward(self, z: Tensor) -> Tensor:
        # The floor keeps the gradient of sqrt finite at a centre.
        return -self.sq_distances(self.latent(z)).clamp_min(_FLOOR).sqrt()


def gccs_loss(u: Tensor, y: Tensor, mu_t: float, sigma_t: float, lam: float) -> LossTerms:
    """Eq. 2 on a batch of latent vectors ``u`` (N x K) with labels ``y``; per-class statistics by scatter-add."""
    num_classes = u.shape[1]
    n = torch.bincount(y, minlength=num_classes).to(u.dtype)[:, None]  # samples per class (K x 1)
    means = u.new_zeros(num_classes, num_classes).index_add(0, y, u) / n.clamp_min(1)
    centred = u - means[y]
    sq = torch.zeros_like(means).index_add(0, y, centred**2)
    fourth = torch.zeros_like(means).index_add(0, y, centred**4)
    enough = n >= 2  # variance and kurtosis need two samples
    # torch.where on the *inputs* of log/division: masking only the outputs would leak nan gradients.
    var = torch.where(enough, sq / (n - 1).clamp_min(1), torch.ones_like(sq)).clamp_min(_FLOOR)
    m2 = torch.where(enough, sq / n.clamp_min(1), torch.ones_like(sq)).clamp_min(_FLOOR)
    m4 = torch.where(enough, fourth / n.clamp_min(1), torch.ones_like(sq))

    targets = mu_t * torch.eye(num_classes, dtype=u.dtype, device=u.device)
    var_t = sigma_t**2
    mean_term = ((targets - means) ** 2).sum(1) / var_t
    cov_term = (math.log(var_t) - torch.log(var) - 1.0 + var / var_t).sum(1)
    kurtosis = (m4 / m2**2).mean(1)
    present, enough = (n > 0).squeeze(1), enough.squeeze(1)
    kl = (mean_term * present).sum() + (cov_term * enough).sum()
    kurt = ((kurtosis - 3.0) * enough).sum()
    return LossTerms(total=kl + lam * kurt, parts={"kl": kl, "kurtosis": kurt})


@DEFENSES.register
@dataclass(frozen=True)
class GCCSDefense(Defense):
    lam: float = finite(0.2, low=0)
    mu_t: float = finite(70.0, low=0, low_open=True)
    sigma_t: float = finite(1.0, low=0, low_open=True)

    name: ClassVar[str] = "gccs"
    label: ClassVar[str] = "GCCS"
    table_rank: ClassVar[int] = 6
    description: ClassVar[str] = (
        "Gaussian class-conditional simplex loss: KL + kurtosis to simplex-centred Gaussians (Ali et al.; paper 003)"
    )

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        return GCCSHead(feature_dim, num_classes, self.mu_t)

    def loss(self, head: nn.Module, z: Tensor, y: Tensor) -> LossTerms:
        assert isinstance(head, GCCSHead)
        return gccs_loss(head.latent(z), y, head.mu_t, self.sigma_t, self.lam)

    def attack_loss(self, head: nn.Module, z: Tensor, labels: Tensor) -> Tensor:
        """||u - mu_T e_label||^2 / sigma_T^2: Eq. 1 for a one-sample batch (module docstring)."""
        assert isinstance(head, GCCSHead)
        return head.sq_distances(head.latent(z)).gather(1, labels[:, None]).squeeze(1) / self.sigma_t**2
