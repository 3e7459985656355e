"""Random corruptions that are not optimised: Gaussian noise and rotation (paper 004, Sec. 4.5).

They use the Attack interface so that their records and metrics come out of the
same runner: "success" is misclassification of the corrupted input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from robench.attacks.base import ATTACKS, Attack, AttackTarget
from robench.core.config import finite


@ATTACKS.register
@dataclass(frozen=True)
class GaussianNoise(Attack):
    """x + N(0, sigma^2) per pixel, clipped to the model's bounds; sigma in units of the input range (004 uses 0.05)."""

    sigma: float = finite(0.05, low=0, note="in units of the input range")

    name: ClassVar[str] = "gaussian-noise"
    description: ClassVar[str] = "additive Gaussian noise, clipped to the input range (004 Sec. 4.5)"
    budget_param: ClassVar[str | None] = "sigma"

    def run(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
        return target.bounds.clip(x + self.sigma * target.bounds.width * noise)


def rotate(x: Tensor, degrees: Tensor, fill: float) -> Tensor:
    """Rotate each image by its own angle (counter-clockwise, about the centre), bilinear, batched.

    Matches ``torchvision.transforms.v2.functional.rotate`` with bilinear
    interpolation for a single angle (a test checks this); areas rotated in
    from outside the image take ``fill``.
    """
    theta = degrees.to(x.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates (y pointing down), so a counter-clockwise
    # rotation on screen takes this matrix; the aspect factors keep non-square images undistorted.
    h, w = x.shape[-2:]
    matrix = torch.stack([torch.stack([cos, -sin * h / w, zero], 1), torch.stack([sin * w / h, cos, zero], 1)], 1).to(
        x.device
    )
    grid = F.affine_grid(matrix, list(x.shape), align_corners=False)
    ones = torch.ones_like(x[:, :1])
    rotated = F.grid_sample(torch.cat([x, ones], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    image, mask = rotated[:, :-1], rotated[:, -1:]
    return image * mask + (1.0 - mask) * fill  # torchvision's blend of the fill at the border


@ATTACKS.register
@dataclass(frozen=True)
class RandomRotation(Attack):
    """A uniform random rotation in [-max_degrees, max_degrees] per image (004 Sec. 4.5 uses 30)."""

    max_degrees: float = finite(30.0, low=0, high=180)
    fill: float | None = finite(None, optional=True, note="None: the lower input bound")

    name: ClassVar[str] = "rotation"
    description: ClassVar[str] = "uniform random rotation within +-max_degrees (004 Sec. 4.5)"
    budget_param: ClassVar[str | None] = "max_degrees"

    def run(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        angles = (torch.rand(x.shape[0], generator=generator, device=generator.device) * 2 - 1) * self.max_degrees
        fill = target.bounds.low if self.fill is None else self.fill
        return target.bounds.clip(rotate(x, angles, fill))
