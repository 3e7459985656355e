"""Assemble a :class:`~robench.core.models.Classifier` from plain, JSON-able parts.

Training and checkpoint loading both build models here, so a bundle rebuilds
exactly the network that was trained. Before anything is allocated, the
backbone is planned on PyTorch's ``meta`` device (shapes without storage), so
architecture kwargs that would ask for gigabytes (from the command line or a
crafted bundle) are refused in one line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from robench.core.errors import ConfigError
from robench.core.models import Classifier, Normalize, build_backbone
from robench.defenses import Defense

MAX_PARAMETERS = 100_000_000  # 400 MB of float32 weights; the registered architectures have 0.03-2 M at their defaults


class _SkipInit(TorchFunctionMode):
    """Weight initialisers have nothing to write on the meta device; skip them (some load heavy machinery there)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if getattr(func, "__module__", None) == "torch.nn.init" or getattr(func, "__name__", "") in (
            "normal_",
            "uniform_",
        ):
            return args[0] if args else next(iter((kwargs or {}).values()))
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class BackbonePlan:
    """A backbone's state-dict shapes (keys prefixed ``backbone.``) and feature dimension, found without allocating."""

    shapes: dict[str, tuple[int, ...]]
    feature_dim: int
    resolved: dict[str, Any]


def plan_backbone(
    arch: str, arch_kwargs: Mapping[str, Any] | None, input_shape: tuple[int, int, int], num_classes: int
) -> BackbonePlan | None:
    """Build the backbone on the meta device and refuse (ConfigError) a model beyond :data:`MAX_PARAMETERS`.

    The head is counted as ``num_classes x (feature_dim + 1)``. Returns None for an architecture that
    cannot be built on the meta device (it is then built without this check).
    """
    try:
        with torch.device("meta"), _SkipInit():
            backbone, resolved = build_backbone(arch, input_shape, dict(arch_kwargs or {}))
    except (RuntimeError, NotImplementedError):
        return None
    shapes = {f"backbone.{k}": tuple(v.shape) for k, v in backbone.state_dict().items()}
    feature_dim = int(backbone.feature_dim)
    total = sum(math.prod(s) for s in shapes.values()) + num_classes * (feature_dim + 1)
    if total > MAX_PARAMETERS:
        raise ConfigError(
            f"architecture '{arch}' with {resolved} on inputs {tuple(input_shape)} and {num_classes} classes "
            "would have "
            f"{total:,} weights, more than robench builds ({MAX_PARAMETERS:,}); choose smaller architecture parameters"
        )
    return BackbonePlan(shapes, feature_dim, resolved)


def build_classifier(
    arch: str,
    arch_kwargs: Mapping[str, Any] | None,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    defense: Defense,
    num_classes: int,
    seed: int | None = None,
) -> tuple[Classifier, dict[str, Any]]:
    """Build normalize -> backbone -> defense head; returns the model and the resolved arch kwargs.

    With ``seed``, the initial weights are drawn under ``torch.random.fork_rng``,
    so the caller's global RNG state is left untouched.
    """
    if len(mean) != input_shape[0]:
        raise ConfigError(f"normalization has {len(mean)} channels but the input has {input_shape[0]}")
    plan_backbone(arch, arch_kwargs, input_shape, num_classes)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        backbone, resolved = build_backbone(arch, input_shape, dict(arch_kwargs or {}))
        head = defense.make_head(int(backbone.feature_dim), num_classes)
        model = Classifier(Normalize(tuple(mean), tuple(std)), backbone, head)
    return model, resolved
