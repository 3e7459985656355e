"""The Max-Mahalanobis center (MMC) loss of Pang et al. (ICLR 2020; paper 004, Sec. 3.3).

Class centres mu*_k are fixed before training (Algorithm 1, App. B.1) with
||mu*_k|| = C_MM, and training regresses the feature onto its class's centre:

    L_MMC(z, y) = ||z - mu*_y||^2 / 2                                 (Eq. 8)

averaged over the batch. The prediction is the nearest centre, i.e. the argmax
of the logits -||z - mu*_k||^2 / 2 (the MMD posterior of Sec. 3.3 under a
uniform prior). With ``attack_loss`` = L_MMC, the base class's adaptive
objectives are exactly App. B.4's: -L_MMC(z, y) and L_MMC(z, y_t) (PGD, MIM,
SPSA), L_MMC(z, y~) - L_MMC(z, y) and L_MMC(z, y_t) - L_MMC(z, y) (C&W).

Default C_MM = 10 ("MMC-10", Sec. 4.1, chosen by the cross-validation of
Pang et al. 2018). The centres need feature_dim >= num_classes - 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from robench.core.config import finite
from robench.defenses.base import DEFENSES, Defense, LossTerms, mean_terms
from robench.defenses.mm_centers import MMHead


@DEFENSES.register
@dataclass(frozen=True)
class MMCDefense(Defense):
    """MMC loss on fixed Max-Mahalanobis centres (paper 004, Eq. 8).

    Trains with the repository's mnist defaults (Adam, lr 2e-3, cosine): Adam
    normalises the gradient scale, so the large early gradients of the squared
    loss (||z - mu*_y|| ~ C_MM = 10 at initialisation) need no lower rate.
    """

    c_mm: float = finite(10.0, low=0, low_open=True)

    name: ClassVar[str] = "mmc"
    label: ClassVar[str] = "MMC"
    table_rank: ClassVar[int] = 5
    description: ClassVar[str] = "Max-Mahalanobis center loss on fixed MM centres (Pang et al., ICLR 2020; paper 004)"

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        return MMHead(feature_dim, num_classes, self.c_mm)

    def loss(self, head: nn.Module, z: Tensor, y: Tensor) -> LossTerms:
        """Eq. 8, batch mean."""
        return mean_terms(self.attack_loss(head, z, y), "mmc")

    def attack_loss(self, head: nn.Module, z: Tensor, labels: Tensor) -> Tensor:
        """L_MMC(z, labels) = ||z - mu*_labels||^2 / 2 per sample (Eq. 8; App. B.4's adaptive objectives build on
        it)."""
        assert isinstance(head, MMHead)
        return head.half_sq_distance_to(z, labels)

    def likelihood_term(self, head: nn.Module, z: Tensor, labels: Tensor) -> Tensor:
        """-log N(z; mu*_label, I) up to a constant: the MMC loss itself (App. B.3)."""
        assert isinstance(head, MMHead)
        return head.half_sq_distance_to(z, labels)

    def class_log_likelihood(self, head: nn.Module, z: Tensor) -> Tensor:
        """log N(z; mu*_k, I), the MMD class conditionals (Sec. 3.3)."""
        assert isinstance(head, MMHead)
        return head.log_likelihood(z)
