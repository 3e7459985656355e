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

Training. The loss and the test-time negation are Pang et al.'s (their code:
the same reverse-label loss, prediction by the argmin of softmax(Z)); their
ResNet-32 has batch norm and leaky ReLUs (slope 0.1) and is trained with
momentum SGD (lr 0.1). On robench's small MNIST CNN (plain ReLUs, no batch norm)
with the family's Adam (lr 2e-3) RCE trains to the loss's infimum log(L-1) and
in doing so kills the last hidden layer: the flat non-true logits it asks for
can only come from class-specific units (a unit active for two classes makes
their other logits unequal), and Adam keeps sharpening them after the gradient
has all but vanished. The first bundles kept 6-10 of 128 units active per
input (softmax about 33), 86 never active; attacks switched those few off, the
features fell to the biases and the outputs into a sink class (9), so targeted
attacks could not reach their targets (gradient masking by collapse, which
robench.runs.sanity now flags). Momentum SGD with a learning rate of 0.05 (at 0.1,
without batch norm, 13 units stayed active and a sink formed again) leaves the
late, tiny RCE gradients tiny: about 26 units stay
active, no sink forms, and the unbounded targeted attack reaches every target
(docs/defenses.md, RCE).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

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
    # SGD with Nesterov momentum, as Pang et al.'s own training (momentum SGD), not the family's Adam: Adam rescales
    # RCE's vanishing late gradients to full-size steps and keeps sharpening the flat non-true logits, which on a
    # ReLU network without batch norm or leaky units kills all but a few class-specific hidden units per input; the
    # attacks then switch those off and fall into a sink class (module docstring, "Training").
    train_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {"mnist": {"optimizer": "sgd", "lr": 0.05}}

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
