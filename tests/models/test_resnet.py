"""CIFAR ResNets of He et al. 2016 (Sec. 4.2): structure, kwargs, shapes, and the Classifier wrapper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robench.core.errors import ConfigError
from robench.core.models import ARCHITECTURES, Classifier, Normalize, build_backbone

BLOCKS = {"resnet20": 3, "resnet32": 5, "resnet56": 9, "resnet110": 18}


def count(module: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize("name,n", BLOCKS.items())
def test_structure_and_shapes(name: str, n: int) -> None:
    backbone, resolved = build_backbone(name, (3, 32, 32), {})
    assert resolved == {"width": 16, "feature_dim": None, "shortcut": "A", "dropout": 0.0}
    # depth = 6n + 2 weighted layers: 6n + 1 convs (option A adds none) plus the head's FC.
    assert count(backbone, nn.Conv2d) == 6 * n + 1
    assert count(backbone, nn.Linear) == 0
    assert backbone.feature_dim == 64
    backbone.eval()
    z = backbone(torch.randn(2, 3, 32, 32))
    assert z.shape == (2, 64)
    assert (z >= 0).all()  # post-ReLU pooled features, as in the paper


@pytest.mark.parametrize("name", BLOCKS)
def test_registered(name: str) -> None:
    spec = ARCHITECTURES.get(name)
    assert spec.name == name
    assert "He et al." in spec.description
    assert spec.kwarg_names() == ["width", "feature_dim", "shortcut", "dropout"]


@pytest.mark.parametrize("name", BLOCKS)
def test_feature_dim_adds_linear_layer(name: str) -> None:
    backbone, resolved = build_backbone(name, (3, 32, 32), {"feature_dim": 10})
    assert resolved["feature_dim"] == 10
    assert backbone.feature_dim == 10
    assert count(backbone, nn.Linear) == 1
    backbone.eval()
    z = backbone(torch.randn(4, 3, 32, 32))
    assert z.shape == (4, 10)
    assert (z < 0).any()  # no activation: negative coordinates are reachable


@pytest.mark.parametrize("name,n", BLOCKS.items())
def test_shortcut_b_adds_projections(name: str, n: int) -> None:
    backbone, _ = build_backbone(name, (3, 32, 32), {"shortcut": "B"})
    assert count(backbone, nn.Conv2d) == 6 * n + 1 + 2  # one 1x1 projection per stride-2 stage
    backbone.eval()
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 64)


@pytest.mark.parametrize("name", BLOCKS)
def test_bad_shortcut_is_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="shortcut"):
        build_backbone(name, (3, 32, 32), {"shortcut": "C"})


def test_unknown_kwarg_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'width'"):
        build_backbone("resnet20", (3, 32, 32), {"widht": 32})


@pytest.mark.parametrize(
    "kwargs",
    [{"width": 0}, {"feature_dim": 0}, {"dropout": 1.0}, {"dropout": -0.1}],
)
def test_bad_values_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        build_backbone("resnet20", (3, 32, 32), kwargs)


def test_too_small_input_is_config_error() -> None:
    with pytest.raises(ConfigError, match="8 x 8"):
        build_backbone("resnet20", (3, 7, 32), {})


def test_resnet20_parameter_count_matches_paper() -> None:
    backbone, _ = build_backbone("resnet20", (3, 32, 32), {})
    total = sum(p.numel() for p in backbone.parameters()) + 64 * 10 + 10  # + the 10-way FC
    assert 260_000 <= total <= 280_000  # He et al. 2016, Table 6: 0.27M


def test_width_scales_stages() -> None:
    backbone, _ = build_backbone("resnet20", (3, 32, 32), {"width": 8})
    assert backbone.feature_dim == 32
    backbone.eval()
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 32)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_grayscale_odd_sizes(shortcut: str) -> None:
    backbone, _ = build_backbone("resnet20", (1, 28, 28), {"shortcut": shortcut})
    backbone.eval()
    assert backbone(torch.randn(3, 1, 28, 28)).shape == (3, 64)
    small, _ = build_backbone("resnet20", (1, 9, 8), {"shortcut": shortcut})
    small.eval()
    assert small(torch.randn(2, 1, 9, 8)).shape == (2, 64)


def test_gradient_reaches_input() -> None:
    backbone, _ = build_backbone("resnet20", (3, 32, 32), {"feature_dim": 10})
    backbone.eval()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    backbone(x).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_dropout_is_stochastic_in_train_mode_only() -> None:
    torch.manual_seed(0)
    backbone, _ = build_backbone("resnet20", (3, 32, 32), {"dropout": 0.5, "feature_dim": 16})
    x = torch.randn(2, 3, 32, 32)
    backbone.eval()
    assert torch.equal(backbone(x), backbone(x))
    # MC dropout: dropout modules in train mode, BatchNorm kept in eval mode.
    for module in backbone.modules():
        if isinstance(module, nn.Dropout):
            module.train()
    assert not torch.equal(backbone(x), backbone(x))


def test_classifier_wraps_resnet() -> None:
    torch.manual_seed(0)
    backbone, _ = build_backbone("resnet20", (3, 32, 32), {})
    normalize = Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    model = Classifier(normalize, backbone, nn.Linear(64, 10)).eval()
    assert model.feature_dim == 64
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        z = model.features(x)
        assert logits.shape == (4, 10)
        torch.testing.assert_close(z, backbone(normalize(x)))
        torch.testing.assert_close(logits, model.head(z))
