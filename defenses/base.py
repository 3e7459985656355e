"""The defense interface: a classification head, the loss that trains it, and the objective that attacks it.

A defense is a typed, frozen dataclass of its hyper-parameters (constraints as
field metadata, :mod:`robench.core.config`). ``for_dataset`` picks the paper's
defaults for a dataset family; ``make_head`` builds the module mapping features
z to test-time logits (``argmax`` is the prediction for every defense), which
declares its ``num_classes``; ``loss`` is the training objective. ``label`` and
``table_rank`` give its row name and position in the paper-layout tables.

Adaptive attacks (paper 004, App. B.4) do not hard-code cross-entropy: they ask
the defense for ``adaptive_objective``, built from the defense's own per-sample
classification loss L(z, y) (``attack_loss``):

====================  ==========================  ==========================
form                  untargeted                  targeted (target t)
====================  ==========================  ==========================
``gradient`` (PGD,    -L(z, y)                    L(z, t)
MIM, SPSA)
``margin`` (C&W)      L(z, y~) - L(z, y)          L(z, t) - L(z, y)
====================  ==========================  ==========================

where y~ is the highest-scoring label other than y. All objectives are to be
*minimised* by the attacker. For softmax, L is cross-entropy and the margin
form is exactly the C&W logit difference Z_y~ - Z_y. Defenses with a
likelihood term (GM, L-GM, MMC, ...) also expose it through ``likelihood_term``
so an attack can add it (``likelihood_weight``), e.g. to stay undetected by a
likelihood detector.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.core.config import Configurable
from robench.core.errors import ConfigError
from robench.core.registry import Registry

ObjectiveForm = Literal["gradient", "margin"]


@dataclass(frozen=True)
class LossTerms:
    """The scalar to minimise and its named parts (for logging)."""

    total: Tensor
    parts: dict[str, Tensor]


def best_other_label(logits: Tensor, y: Tensor) -> Tensor:
    """argmax over labels other than ``y`` (the y~ of paper 004, Sec. 3.2)."""
    masked = logits.detach().clone()
    masked.scatter_(1, y[:, None], float("-inf"))
    return masked.argmax(1)


class LinearHead(nn.Linear):
    """``nn.Linear`` that declares ``num_classes`` (its ``out_features``), as every defense head does."""

    @property
    def num_classes(self) -> int:
        return self.out_features


@dataclass(frozen=True)
class Defense(Configurable, ABC):
    """Base class; subclasses are frozen dataclasses whose fields are the hyper-parameters."""

    name: ClassVar[str]
    description: ClassVar[str]
    kind: ClassVar[str] = "defense"
    # Tables: the row label, and the row position (lower first; the built-ins take 0..7, baselines first, GM last).
    label: ClassVar[str]
    table_rank: ClassVar[int] = 100
    # Training settings this defense needs per family (e.g. a lower lr), applied before the user's overrides.
    train_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # True when ``attack_loss`` is cross-entropy on ``head(z)``: the untargeted gradient form then uses
    # the stable Z_y - logsumexp_{k != y} Z_k instead of -CE, whose gradient underflows to 0 once the
    # softmax saturates (it has the same sign; see ``robench.attacks.objectives``).
    attack_loss_is_cross_entropy: ClassVar[bool] = False

    @abstractmethod
    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        """The module mapping features z (N x d) to test-time logits (N x K); it has an int ``num_classes`` (K)."""

    @abstractmethod
    def loss(self, head: nn.Module, z: Tensor, y: Tensor) -> LossTerms:
        """The training loss on a batch of features and labels."""

    @abstractmethod
    def attack_loss(self, head: nn.Module, z: Tensor, labels: Tensor) -> Tensor:
        """Per-sample classification loss L(z, labels) (N,), low when z is classified as ``labels``.

        The test-time form: training-only devices (margins, label smoothing) are left out.
        """

    def likelihood_term(self, head: nn.Module, z: Tensor, labels: Tensor) -> Tensor | None:
        """Per-sample negative log-likelihood term of the defense (N,), or None if it has none."""
        return None

    def class_log_likelihood(self, head: nn.Module, z: Tensor) -> Tensor | None:
        """log p(z | class k) under the defense's generative model (N x K), or None for discriminative heads."""
        return None

    def adaptive_objective(
        self,
        head: nn.Module,
        z: Tensor,
        y: Tensor,
        target: Tensor | None = None,
        form: ObjectiveForm = "gradient",
        likelihood_weight: float = 0.0,
    ) -> Tensor:
        """The per-sample objective an adaptive attacker minimises (paper 004, App. B.4; table above).

        ``likelihood_weight`` > 0 adds the defense's likelihood term for the
        label the attacker wants (``target``, or y~ for untargeted margin attacks).
        """
        if form == "gradient":
            if target is not None:
                objective = self.attack_loss(head, z, target)
            elif self.attack_loss_is_cross_entropy:
                objective = stable_negative_cross_entropy(head(z), y)
            else:
                objective = -self.attack_loss(head, z, y)
            wanted = target
        elif form == "margin":
            wanted = best_other_label(head(z), y) if target is None else target
            objective = self.attack_loss(head, z, wanted) - self.attack_loss(head, z, y)
        else:
            raise ConfigError(f"unknown objective form '{form}' (use gradient or margin)")
        if likelihood_weight:
            if wanted is None:
                raise ConfigError("the likelihood term needs a target or the margin form")
            term = self.likelihood_term(head, z, wanted)
            if term is None:
                raise ConfigError(f"defense '{self.name}' has no likelihood term to add")
            objective = objective + likelihood_weight * term
        return objective


@dataclass(frozen=True)
class CrossEntropyDefense(Defense):
    """Base of the defenses attacked through cross-entropy on their test-time logits ``head(z)``.

    Training-only devices (margins, regularisers) stay in each subclass's ``loss``.
    """

    attack_loss_is_cross_entropy: ClassVar[bool] = True

    def attack_loss(self, head: nn.Module, z: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(head(z), labels, reduction="none")


def stable_negative_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Z_y - logsumexp_{k != y} Z_k: decreasing in -CE(Z, y) (-CE = -softplus(-this)), so minimising it
    is minimising -CE, but its gradient does not underflow when the softmax saturates."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - torch.logsumexp(others, dim=1)


def mean_terms(per_sample: Tensor, name: str) -> LossTerms:
    """LossTerms for a loss that is the batch mean of a per-sample loss."""
    total = per_sample.mean()
    return LossTerms(total=total, parts={name: total})


DEFENSES: Registry[type[Defense]] = Registry("defense", base=Defense)

__all__ = [
    "DEFENSES",
    "CrossEntropyDefense",
    "Defense",
    "LinearHead",
    "LossTerms",
    "ObjectiveForm",
    "best_other_label",
    "mean_terms",
    "stable_negative_cross_entropy",
]
