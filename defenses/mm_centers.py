"""Max-Mahalanobis centres (Pang et al. 2018; paper 004, App. B.1, Algorithm 1) and the fixed-centre head.

The L centres lie on the sphere of radius C_MM and are as far apart as
possible: every pair has the same inner product -C_MM^2 / (L - 1), the
minimum of max_{i != j} <mu_i, mu_j> (paper 004, Sec. 3.3). They are the
vertices of a regular simplex, so they need d >= L - 1 feature dimensions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robench.core.errors import ConfigError


def max_mahalanobis_centers(num_classes: int, dim: int, c_mm: float) -> Tensor:
    """The L x d Max-Mahalanobis centres of norm ``c_mm`` (Algorithm 1 of paper 004, App. B.1; Pang et al. 2018).

    Computed in float64 (the recursion divides by earlier diagonal entries),
    returned as float32. Deterministic: the same arguments give the same centres.
    """
    L, d = int(num_classes), int(dim)
    if L < 1 or d < 1:
        raise ConfigError(f"Max-Mahalanobis centres need num_classes >= 1 and dim >= 1, got {L} and {d}")
    if L > d + 1:
        raise ConfigError(
            f"Max-Mahalanobis centres for {L} classes need a feature dimension of at least {L - 1}, got {d}"
            f" (e.g. --arch-param feature_dim={max(L - 1, 64)})"
        )
    if not c_mm > 0:
        raise ConfigError(f"C_MM must be > 0, got {c_mm}")
    mu = torch.zeros(L, d, dtype=torch.float64)
    mu[0, 0] = 1.0  # mu_1 = e_1
    for i in range(1, L):
        # Fix the first i coordinates so that <mu_i, mu_j> = -1 / (L - 1) for every earlier j ...
        for j in range(i):
            mu[i, j] = -(1.0 + torch.dot(mu[i], mu[j]) * (L - 1)) / (mu[j, j] * (L - 1))
        # ... then the i-th so that ||mu_i|| = 1. For i = d (only when L = d + 1) there is no
        # such coordinate, and the residual is 0 up to round-off.
        if i < d:
            mu[i, i] = math.sqrt(max(1.0 - float(mu[i] @ mu[i]), 0.0))
    return (c_mm * mu).to(torch.float32)


class MMHead(nn.Module):
    """Fixed Max-Mahalanobis centres; ``forward(z) = -||z - mu*_k||^2 / 2`` (argmax = nearest centre).

    The centres are a *buffer*: not trained (paper 004, Sec. 3.3: "invariable
    during training"), but saved in the state dict and moved by ``.to()`` /
    ``.double()`` with the rest of the model.
    """

    centers: Tensor

    def __init__(self, feature_dim: int, num_classes: int, c_mm: float) -> None:
        super().__init__()
        self.register_buffer("centers", max_mahalanobis_centers(num_classes, feature_dim, c_mm))

    @property
    def num_classes(self) -> int:
        return int(self.centers.shape[0])

    def half_sq_distances(self, z: Tensor) -> Tensor:
        """s_k = ||z - mu*_k||^2 / 2 for every class (N x K).

        Differences rather than ||z||^2 - 2 z.mu + ||mu||^2: with ||mu|| = 10 the
        expansion loses float32 precision exactly where s is small.
        """
        return 0.5 * (z[:, None, :] - self.centers).pow(2).sum(-1)

    def half_sq_distance_to(self, z: Tensor, labels: Tensor) -> Tensor:
        """||z - mu*_label||^2 / 2 per sample (N,)."""
        return 0.5 * (z - self.centers[labels]).pow(2).sum(1)

    def log_likelihood(self, z: Tensor) -> Tensor:
        """log N(z; mu*_k, I) for every class (N x K)."""
        return -self.half_sq_distances(z) - 0.5 * z.shape[1] * math.log(2 * math.pi)

    def forward(self, z: Tensor) -> Tensor:
        return -self.half_sq_distances(z)
