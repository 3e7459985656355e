"""Plain softmax cross-entropy: a linear head, logits = W z + b."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from robench.defenses.base import DEFENSES, Defense, mean_terms


@DEFENSES.register("softmax")
@dataclass(frozen=True)
class SoftmaxDefense(Defense):
    name: ClassVar[str] = "softmax"
    description: ClassVar[str] = "linear head trained with softmax cross-entropy (the baseline)"
    attack_loss_is_cross_entropy: ClassVar[bool] = True

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        return nn.Linear(feature_dim, num_classes)

    def loss(self, head: nn.Module, z: Tensor, y: Tensor) -> LossTerms:
        return mean_terms(self.attack_loss(head, z, y), "ce")

    def attack_loss(self, head: nn.Module, z: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(head(z), labels, reduction="none")
