"""Assemble a :class:`~robench.core.models.Classifier` from plain, JSON-able parts.

Training and checkpoint loading both build models here, so a bundle rebuilds
exactly the network that was trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from robench.defenses import Defense
from robench.core.models import Classifier, Normalize, build_backbone


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
        from robench.core.errors import ConfigError

        raise ConfigError(f"normalization has {len(mean)} channels but the input has {input_shape[0]}")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        backbone, resolved = build_backbone(arch, input_shape, dict(arch_kwargs or {}))
        head = defense.make_head(int(backbone.feature_dim), num_classes)
        model = Classifier(Normalize(tuple(mean), tuple(std)), backbone, head)
    return model, resolved
