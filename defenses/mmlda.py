"""Max-Mahalanobis linear discriminant analysis (MMLDA; Pang et al., ICML 2018), as stated in paper 004, Eq. 10.

Features are modelled as the Max-Mahalanobis distribution: z | y=k ~ N(mu*_k, I)
with the fixed centres of Algorithm 1 (App. B.1) and a uniform prior, so Bayes'
theorem gives the posterior softmax(-||z - mu*_k||^2 / 2) and training
minimises its cross-entropy

    L_MMLDA(z, y) = -log softmax_y(-||z - mu*_k||^2 / 2)               (Eq. 10)

Unlike MMC (Eq. 8) it does not pull features onto their centre, only across
the decision boundaries (Remark 4). Because all centres have the same norm the
logits equal z^T mu*_k up to a per-sample constant (Eq. 10, right-hand form).

C_MM: paper 004 gives no separate value for MMLDA; Sec. 4.1 says MMLDA
"follow[s] the settings in the original paper" and that MMC's C_MM = 10 comes
from that paper's cross-validation (its C = ||mu||^2 = 100, App. B.1 notes the
change of notation). So the default here is C_MM = 10 as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from robench.defenses.base import DEFENSES, CrossEntropyDefense, LossTerms, mean_terms
from robench.defenses.mmc import MMCDefense


@DEFENSES.register
@dataclass(frozen=True)
class MMLDADefense(CrossEntropyDefense, MMCDefense):
    """Softmax cross-entropy on the quadratic logits of fixed MM centres (paper 004, Eq. 10).

    Shares MMC's head, centres, ``c_mm`` and Gaussian likelihood; only the losses differ: the attack
    loss is Eq. 10 per sample, cross-entropy on the logits -||z - mu*_k||^2 / 2 (``CrossEntropyDefense``).
    """

    name: ClassVar[str] = "mmlda"
    label: ClassVar[str] = "MMLDA"
    table_rank: ClassVar[int] = 4
    description: ClassVar[str] = (
        "Max-Mahalanobis LDA: cross-entropy on fixed MM centres (Pang et al., ICML 2018; paper 004 Eq. 10)"
    )

    def loss(self, head: nn.Module, z: Tensor, y: Tensor) -> LossTerms:
        """Eq. 10, batch mean."""
        return mean_terms(self.attack_loss(head, z, y), "ce")
