"""Rebuilding an imported model from a bundle's state (``robench.checkpoints.bundle.load_bundle`` calls
:func:`rebuild`).

The bundle is untrusted input like any other: its arch_kwargs are validated field by field, its program
archive is checked before torch deserializes it (:mod:`robench.checkpoints.imported.archive`), its weights must be
exactly the program's, and one pass on a batch of zeros must give the recorded feature and class counts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from robench.checkpoints.imported.archive import load_checked_program
from robench.checkpoints.imported.program import (
    HEAD_KINDS,
    PROGRAM_KEY,
    SOURCE_KINDS,
    WEIGHTS_PREFIX,
    ImportedClassifier,
    PassHead,
    assemble,
    check_shapes,
    total_size,
    weight_specs,
)
from robench.checkpoints.model_factory import MAX_PARAMETERS
from robench.core.errors import BundleError
from robench.defenses import Defense
from robench.defenses.base import LinearHead


class ImportedMeta(Protocol):
    """The fields of a bundle's metadata (:class:`robench.checkpoints.bundle.BundleMeta`) that rebuilding an imported
    model reads."""

    arch_kwargs: dict[str, Any]
    feature_dim: int
    num_classes: int
    feature_layer: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_shape: tuple[int, int, int]


ARCH_KWARGS = ("source", "head", "head_bias", "mc_dropout")


def check_arch_kwargs(kwargs: dict[str, Any], source: str) -> None:
    """The arch_kwargs of an imported model: exactly :data:`ARCH_KWARGS`, each of its type and range."""
    if sorted(kwargs) != sorted(ARCH_KWARGS):
        raise BundleError(
            f"{source}: an imported model's arch_kwargs must be "
            f"{', '.join(ARCH_KWARGS)}; got {', '.join(sorted(kwargs)) or 'none'}"
        )
    rate = kwargs["mc_dropout"]
    if (
        kwargs["source"] not in SOURCE_KINDS
        or kwargs["head"] not in HEAD_KINDS
        or not isinstance(kwargs["head_bias"], bool)
        or isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not (math.isfinite(rate) and 0.0 <= rate < 1.0)
    ):
        raise BundleError(f"{source}: an imported model's arch_kwargs are malformed: {kwargs}")


def make_head(defense: Defense, feature_dim: int, num_classes: int, joint: bool, bias: bool) -> nn.Module:
    """The head an imported model's bundle holds: the defense's, a bias-free linear one, or the logits of the pass."""
    if joint:
        return PassHead(num_classes)
    if defense.name == "softmax" and not bias:
        return LinearHead(feature_dim, num_classes, bias=False)
    return defense.make_head(feature_dim, num_classes)


def rebuild(meta: ImportedMeta, state: dict[str, Tensor], defense: Defense, path: Path) -> ImportedClassifier:
    """The imported model a bundle describes; every inconsistency is a one-line :class:`BundleError`."""
    source = str(path)
    kwargs = meta.arch_kwargs
    check_arch_kwargs(kwargs, source)
    joint = kwargs["head"] == "joint"
    if joint and defense.name != "softmax":
        raise BundleError(
            f"{source}: an imported model without a separable head is a softmax classifier, not '{defense.name}'"
        )
    program = state.get(PROGRAM_KEY)
    if not isinstance(program, Tensor) or program.dtype != torch.uint8 or program.dim() != 1:
        raise BundleError(f"{source}: an imported model's bundle lacks its exported program ({PROGRAM_KEY})")
    ep = load_checked_program(program.numpy().tobytes(), f"{source} (its exported program)")
    specs = weight_specs(ep)
    if total_size(specs) > MAX_PARAMETERS:
        raise BundleError(
            f"{source}: the exported program has {total_size(specs):,} "
            f"weights, more than robench builds ({MAX_PARAMETERS:,})"
        )
    weights = {k[len(WEIGHTS_PREFIX) :]: v for k, v in state.items() if k.startswith(WEIGHTS_PREFIX)}
    try:
        head = make_head(defense, meta.feature_dim, meta.num_classes, joint, kwargs["head_bias"])
    except (ValueError, RuntimeError) as exc:
        raise BundleError(f"{source}: cannot build the '{defense.name}' head: {exc}") from None
    model = assemble(
        program, ep, weights, feature_layer=meta.feature_layer, feature_dim=meta.feature_dim, joint=joint,
        head=head, mean=meta.mean, std=meta.std, source=source,
    )  # fmt: skip
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc).splitlines()[0])
        raise BundleError(f"{source}: the weights do not fit the imported model: {first}") from None
    if abs(model.backbone.mc_rate - float(kwargs["mc_dropout"])) > 1e-9:
        raise BundleError(
            f"{source}: the program's dropout rate {model.backbone.mc_rate} "
            f"differs from the recorded {kwargs['mc_dropout']}"
        )
    check_shapes(model, meta.input_shape, meta.num_classes, source)
    return model
