"""The defense interface: a classification head plus the loss that trains it.

A defense is a typed dataclass of its hyper-parameters. ``for_dataset`` picks
the paper's defaults for a dataset family; ``make_head`` builds the module that
maps features z to test-time logits; ``loss`` is the training objective on
(z, y). Later work adds each defense's adaptive attack objective here.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from robench.config import replace_fields
from robench.registry import Registry


@dataclass(frozen=True)
class LossTerms:
    """The scalar to minimise and its named parts (for logging)."""

    total: Tensor
    parts: dict[str, Tensor]


@dataclass(frozen=True)
class Defense(ABC):
    """Base class; subclasses are frozen dataclasses whose fields are the hyper-parameters."""

    name: ClassVar[str]
    description: ClassVar[str]
    # Per dataset-family defaults, e.g. {"mnist": {"alpha": 1.0}}; families not listed use the field defaults.
    family_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @classmethod
    def for_dataset(cls, family: str, overrides: Mapping[str, Any] | None = None) -> Defense:
        """The paper's defaults for ``family``, then ``overrides`` (type-checked, did-you-mean on typos)."""
        base = replace_fields(cls(), cls.family_defaults.get(family, {}), f"defense '{cls.name}'")
        return replace_fields(base, overrides or {}, f"defense '{cls.name}'")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Defense:
        """Rebuild from the ``params()`` stored in a checkpoint bundle."""
        return replace_fields(cls(), params, f"defense '{cls.name}'")

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @abstractmethod
    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        """The module mapping features z (N x d) to test-time logits (N x K)."""

    @abstractmethod
    def loss(self, head: nn.Module, z: Tensor, y: Tensor) -> LossTerms:
        """The training loss on a batch of features and labels."""


DEFENSES: Registry[type[Defense]] = Registry("defense")
