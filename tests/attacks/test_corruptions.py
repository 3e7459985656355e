import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from robench.attacks.base import AttackTarget, Bounds
from robench.attacks.corruptions import GaussianNoise, RandomRotation, rotate
from robench.core.errors import ConfigError
from robench.defenses import DEFENSES
from tiny import make_tiny


@pytest.mark.parametrize("angle", [0.0, 17.0, -30.0, 90.0])
def test_batched_rotation_matches_torchvision(angle):
    x = torch.rand(3, 2, 28, 20, generator=torch.Generator().manual_seed(0))
    ours = rotate(x, torch.full((3,), angle), fill=0.0)
    reference = TF.rotate(x, angle, interpolation=TF.InterpolationMode.BILINEAR, fill=0.0)
    assert (ours - reference).abs().max() < 1e-5


def test_rotation_uses_one_angle_per_image_from_the_generator():
    model, _ = make_tiny()
    target = AttackTarget(model, DEFENSES.get("softmax")(), Bounds(0.0, 1.0))
    x = torch.rand(6, 1, 28, 28)
    y = torch.zeros(6, dtype=torch.long)
    a = RandomRotation(max_degrees=30)(target, x, y, generator=torch.Generator().manual_seed(1))
    b = RandomRotation(max_degrees=30)(target, x, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv[0], rotate(x[:1], torch.tensor([30.0]), 0.0)[0])
    assert RandomRotation(max_degrees=0)(target, x, y, generator=torch.Generator()).x_adv.sub(x).abs().max() < 1e-5


def test_noise_is_clipped_to_the_declared_bounds_and_has_the_right_scale():
    model, _ = make_tiny()
    target = AttackTarget(model, DEFENSES.get("softmax")(), Bounds(0.0, 0.5))
    x = torch.full((4, 1, 28, 28), 0.25)
    result = GaussianNoise(sigma=0.1)(
        target, x, torch.zeros(4, dtype=torch.long), generator=torch.Generator().manual_seed(0)
    )
    assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 0.5
    # sigma is relative to the range width (0.5): std of the noise is 0.05 where no clipping happens
    assert abs(float((result.x_adv - x).std()) - 0.05) < 0.005
    with pytest.raises(ConfigError):
        GaussianNoise(sigma=-1.0)
    with pytest.raises(ConfigError, match="outside the model's bounds"):
        GaussianNoise()(target, torch.ones(1, 1, 28, 28), torch.zeros(1, dtype=torch.long), generator=torch.Generator())
