"""Reverse cross-entropy (RCE) training (Pang et al., NeurIPS 2018, "Towards Robust Detection of Adversarial Examples").

A linear layer gives logits Z = W z + b. Training minimises the cross-entropy
between softmax(Z) and the *reverse* label vector R_y, with R_y[y] = 0 and
R_y[j] = 1/(L-1) for j != y (L classes; Sec. 3.1):

    L_RCE(z, y) = -sum_j R_y[j] log softmax(Z)_j.

This drives Z_y far below the other logits and makes the other entries of
softmax(Z) equal, so at test time the prediction is argmax of the *negated*
logits -Z (Sec. 3.1: the trained logits are negated for inference). The head's
``forward`` returns -Z, and argmax of ``head(z)`` is the prediction, as for
every defense.

Adaptive objective (paper 004, App. B.4). 004 builds the attacker's objective
from the defense's own training loss L(z, y) (for MMC, L_MMC), not from
cross-entropy. The same rule here gives ``attack_loss(z, t) = L_RCE(z, t)``:
low exactly when Z_t is far below the other logits and those are equal, i.e.
when z is classified as t by -Z *and* looks like a normal RCE output (flat
non-maximal entries, which the paper's non-ME detection metric checks). This
is what we use. The alternative, cross-entropy on the test-time logits -Z,
also moves the prediction but ignores the non-maximal entries; we keep the
training loss so that the attack follows the surface the defense was shaped
on, as 004 does for MMC (and as the GM/L-GM attack losses do). The
margin form (C&W) loses nothing by this choice: L_RCE(z, t) - L_RCE(z, y) =
(log p_t - log p_y) / (L-1) = ((-Z)_y - (-Z)_t) / (L-1), the C&W logit
difference on the test-time logits, scaled by 1/(L-1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from robench.core.errors import ConfigError
from robench.defenses.base import DEFENSES, Defense, LinearHead, LossTerms, mean_terms


class NegatedLinear(LinearHead):
    """``forward(z) = -(W z + b)``; :meth:`reverse_logits` gives the trained logits Z = W z + b."""

    def reverse_logits(self, z: Tensor) -> Tensor:
        return super().forward(z)

    def forward(self, z: Tensor) -> Tensor:
        return -self.reverse_logits(z)


def reverse_labels(y: Tensor, num_classes: int) -> Tensor:
    """R_y (N x L): 0 at the label, 1/(L-1) elsewhere (Pang et al. 2018, Sec. 3.1)."""
    return (1.0 - F.one_hot(y, num_classes).float()) / (num_classes - 1)


def rce_per_sample(Z: Tensor, y: Tensor) -> Tensor:
    """-sum_j R_y[j] log softmax(Z)_j per sample (N,)."""
    return -(reverse_labels(y, Z.shape[1]).to(Z.dtype) * F.log_softmax(Z, dim=1)).sum(1)


@DEFENSES.register
@dataclass(frozen=True)
class RCEDefense(Defense):
    name: ClassVar[str] = "rce"
    label: ClassVar[str] = "RCE"
    table_rank: ClassVar[int] = 3
    description: ClassVar[str] = (
        "reverse cross-entropy training, negated logits at test time (Pang et al., NeurIPS 2018)"
    )

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        if num_classes < 2:
            raise ConfigError(f"rce needs at least 2 classes for the reverse labels, got {num_classes}")
        return NegatedLinear(feature_dim, num_classes)

    def loss(self, head: nn.Module, z: Tensor, y: Tensor) -> LossTerms:
        return mean_terms(self.attack_loss(head, z, y), "rce")

    def attack_loss(self, head: nn.Module, z: Tensor, labels: Tensor) -> Tensor:
        """L_RCE(z, labels): the training loss, 004 App. B.4's rule (module docstring)."""
        assert isinstance(head, NegatedLinear)
        return rce_per_sample(head.reverse_logits(z), labels)
