import pytest
import torch

from robench.core.errors import ConfigError
from robench.core.models import ARCHITECTURES, Classifier, Normalize, build_backbone


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
def test_cnn_shapes(shape):
    backbone, kwargs = build_backbone("cnn", shape, {"feature_dim": 12})
    assert kwargs == {"width": 32, "hidden": 128, "feature_dim": 12, "dropout": 0.25}
    assert backbone(torch.rand(3, *shape)).shape == (3, 12)
    assert backbone.feature_dim == 12


def test_classifier_normalizes_inside_and_exposes_features():
    backbone, _ = build_backbone("cnn", (1, 28, 28), {"width": 4, "hidden": 8, "feature_dim": 5})
    model = Classifier(Normalize((0.5,), (0.25,)), backbone, torch.nn.Linear(5, 10)).eval()
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(model.features(x), backbone((x - 0.5) / 0.25))
    torch.testing.assert_close(model(x), model.head(model.features(x)))


def test_bad_arch_arguments():
    with pytest.raises(ConfigError, match="did you mean 'width'"):
        build_backbone("cnn", (1, 28, 28), {"widht": 3})
    with pytest.raises(ConfigError, match="cannot build"):
        build_backbone("cnn", (1, 2, 2), {})
    with pytest.raises(ConfigError, match="positive std"):
        Normalize((0.5,), (0.0,))
    assert "cnn" in ARCHITECTURES
