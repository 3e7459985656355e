"""Model building blocks: input normalization, the classifier wrapper, the architecture registry.

A robench model maps ``x`` in the dataset's value range (pixels, not
normalized) to logits, and exposes ``features(x) -> z``, the penultimate
representation used by the kernel-density detector and by the GM/MMC heads.
Normalization is the model's first layer, so attacks never see it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robench.core.errors import ConfigError
from robench.core.models.forward import Forward
from robench.core.registry import Registry, did_you_mean


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics stored as buffers (they travel in the checkpoint)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ConfigError(f"normalization needs one positive std per mean, got mean={mean} std={std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def head_num_classes(head: nn.Module) -> int:
    """The number of classes K a head maps features to: its ``num_classes`` (every defense head has one).

    A plain ``nn.Linear`` head (tests, hand-built models) gives its ``out_features``.
    """
    k = getattr(head, "num_classes", None)
    if k is None and isinstance(head, nn.Linear):
        k = head.out_features
    if isinstance(k, bool) or not isinstance(k, int):
        raise ConfigError(f"classification head {type(head).__name__} does not declare an integer num_classes")
    return k


class Classifier(nn.Module):
    """``logits = head(backbone(normalize(x)))``; ``features(x)`` returns the backbone output z.

    ``feature_layer`` names the module whose output is z, for the record in the
    checkpoint bundle. ``num_classes`` is read off the head (no forward pass).
    """

    feature_layer = "backbone"
    # Whether head(z) computes the logits from z. False for an imported model whose feature layer is not the
    # input of its last layer (robench.checkpoints.imported): one pass gives z and the logits together (forward_pass).
    separable_head = True

    def __init__(self, normalize: Normalize, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone
        self.head = head

    @property
    def feature_dim(self) -> int:
        return int(self.backbone.feature_dim)

    @property
    def num_classes(self) -> int:
        return head_num_classes(self.head)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward_pass(self, x: Tensor) -> Forward:
        """Inputs, features and logits of one pass (``Forward.of`` calls it); overridden where one pass yields both."""
        z = self.features(x)
        return Forward(x=x, z=z, logits=self.head(z))


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture: ``build(input_shape, **kwargs)`` returns a backbone with ``feature_dim``."""

    name: str
    description: str
    build: Callable[..., nn.Module]

    def kwarg_names(self) -> list[str]:
        params = inspect.signature(self.build).parameters
        return [p for p in params if p != "input_shape"]

    def resolve_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults and reject unknown keyword arguments with a did-you-mean error."""
        signature = inspect.signature(self.build)
        known = self.kwarg_names()
        for key in kwargs:
            if key not in known:
                raise ConfigError(
                    f"architecture '{self.name}' has no parameter "
                    f"'{key}'{did_you_mean(key, known)}; known: {', '.join(known)}"
                )
        resolved = {
            name: param.default
            for name, param in signature.parameters.items()
            if name != "input_shape" and param.default is not inspect.Parameter.empty
        }
        resolved.update(kwargs)
        return resolved


ARCHITECTURES: Registry[ArchSpec] = Registry("architecture", base=ArchSpec)

# Caps on the layer sizes an architecture's kwargs may ask for (they come from the command line and from
# bundles, which are untrusted); the model's total size is bounded separately (robench.checkpoints.model_factory).
MAX_CHANNELS = 4096  # conv filters (width)
MAX_UNITS = 65536  # hidden units and feature dimensions


def layer_size(name: str, value: object, cap: int) -> int:
    """``value`` checked as a layer size, an int in [1, cap]; a ValueError (one line) otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cap:
        raise ValueError(f"{name} must be an integer in [1, {cap}], got {value!r}")
    return value


def build_backbone(
    arch: str, input_shape: tuple[int, int, int], kwargs: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Build a registered backbone; returns it with the fully resolved kwargs (to store in the bundle)."""
    spec = ARCHITECTURES.get(arch)
    resolved = spec.resolve_kwargs(dict(kwargs or {}))
    try:
        backbone = spec.build(tuple(input_shape), **resolved)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build architecture '{arch}' for input shape {tuple(input_shape)}: {exc}") from None
    if not isinstance(getattr(backbone, "feature_dim", None), int):
        raise ConfigError(f"architecture '{arch}' does not declare an integer feature_dim")
    return backbone, resolved
