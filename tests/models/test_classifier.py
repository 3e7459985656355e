"""The Classifier's num_classes (read off the head, no forward pass) and the shared Forward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robench.core.errors import ConfigError
from robench.core.models import Classifier, Forward, Normalize, build_backbone
from robench.defenses import DEFENSES
from tiny import make_tiny


@pytest.mark.parametrize("defense", DEFENSES.names())
@pytest.mark.parametrize("k", [2, 10])
def test_every_defense_head_declares_num_classes(defense: str, k: int) -> None:
    head = DEFENSES.get(defense).for_dataset("mnist").make_head(12, k)
    assert head.num_classes == k and isinstance(head.num_classes, int)

    def no_forward(*args, **kwargs):
        raise AssertionError("num_classes must not run the head")

    head.forward = no_forward  # type: ignore[method-assign]
    backbone, _ = build_backbone("cnn", (1, 28, 28), {"width": 4, "hidden": 16, "feature_dim": 12})
    assert Classifier(Normalize((0.5,), (0.5,)), backbone, head).num_classes == k


def test_plain_linear_heads_and_heads_without_num_classes() -> None:
    backbone, _ = build_backbone("cnn", (1, 28, 28), {"width": 4, "hidden": 16, "feature_dim": 12})
    assert Classifier(Normalize((0.5,), (0.5,)), backbone, nn.Linear(12, 7)).num_classes == 7
    odd = Classifier(Normalize((0.5,), (0.5,)), backbone, nn.Sequential(nn.Linear(12, 3)))
    with pytest.raises(ConfigError, match="does not declare an integer num_classes"):
        odd.num_classes


def test_forward_of_a_classifier() -> None:
    model, _ = make_tiny("gm")
    x = torch.rand(3, 1, 28, 28)
    forward = Forward.of(model, x)
    assert torch.equal(forward.z, model.features(x)) and torch.equal(forward.logits, model(x))
    assert torch.equal(forward.predicted, model(x).argmax(1))


def test_forward_is_re_exported_where_it_used_to_live() -> None:
    from robench.detectors import Forward as from_detectors
    from robench.detectors.base import Forward as from_detectors_base

    assert from_detectors is Forward and from_detectors_base is Forward
