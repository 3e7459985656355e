"""Plain softmax cross-entropy: a linear head, logits = W z + b."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from robench.defenses.base import DEFENSES, CrossEntropyDefense, LinearHead, LossTerms, mean_terms


@DEFENSES.register
@dataclass(frozen=True)
class SoftmaxDefense(CrossEntropyDefense):
    name: ClassVar[str] = "softmax"
    label: ClassVar[str] = "Softmax"
    table_rank: ClassVar[int] = 0
    description: ClassVar[str] = "linear head trained with softmax cross-entropy (the baseline)"

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        return LinearHead(feature_dim, num_classes)

    def loss(self, head: nn.Module, z: Tensor, y: Tensor) -> LossTerms:
        return mean_terms(self.attack_loss(head, z, y), "ce")
