"""CIFAR-style ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2).

A 3x3 conv with ``width`` (16) filters, then three stages of n basic blocks
with ``width``/``2*width``/``4*width`` filters on feature maps of size H, H/2
and H/4 (stride 2 at the first block of stages 2 and 3), BatchNorm + ReLU,
and global average pooling: depth = 6n + 2 counting the classifier layer,
which here is the model's head. Registered as ``resnet20``/``32``/``56``/``110``
(n = 3, 5, 9, 18).

Shortcuts: option A of the paper by default (identity; when the shape
changes, stride-2 subsampling and zero-padding of the new channels,
parameter-free), or option B (a 1x1 conv + BN projection where the shape
changes, identity elsewhere).

The feature z is the pooled 4*width-dim post-ReLU vector, as in the paper;
``feature_dim=k`` appends a linear layer to k dims (no activation) so heads
with centres having negative coordinates (Max-Mahalanobis centres) can be
reached. ``dropout`` acts on the pooled vector before that layer (for
MC-dropout uncertainty, Feinman et al. 2017).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from robench.core.models.base import ARCHITECTURES, MAX_CHANNELS, MAX_UNITS, ArchSpec, layer_size

SHORTCUTS = ("A", "B")
DEPTHS = {20: 3, 32: 5, 56: 9, 110: 18}  # depth = 6n + 2


class PadShortcut(nn.Module):
    """Option A shortcut: stride-``stride`` subsampling, then zero channels appended up to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut; ReLU after the addition (He et al. 2016, Fig. 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) backbone of He et al. 2016, Sec. 4.2: normalized x -> z (``feature_dim`` dims)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        n: int,
        width: int = 16,
        feature_dim: int | None = None,
        shortcut: str = "A",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels, height, width_px = (int(v) for v in input_shape)
        if channels < 1:
            raise ValueError(f"input needs at least one channel, got {channels}")
        if height < 8 or width_px < 8:
            raise ValueError(f"resnets need images of at least 8 x 8 pixels, got {height} x {width_px}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"blocks per stage must be a positive integer, got {n!r}")
        layer_size("width", width, MAX_CHANNELS)
        if feature_dim is not None:
            layer_size("feature_dim", feature_dim, MAX_UNITS)
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be 'A' (zero-padding identity) or 'B' (1x1 projection), got {shortcut!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")

        self.depth = 6 * n + 2
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_channels = width
        for index, multiplier in enumerate((1, 2, 4)):
            out_channels = width * multiplier
            blocks = []
            for b in range(n):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride, shortcut))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(float(dropout))
        pooled = 4 * width
        self.fc: nn.Module = nn.Identity() if feature_dim is None else nn.Linear(pooled, feature_dim)
        self.feature_dim = pooled if feature_dim is None else int(feature_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """Kaiming (He et al. 2015) normal init for convs; BN starts as the identity."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        z = self.pool(self.stages(self.stem(x)))
        return self.fc(self.dropout(z))


def _builder(n: int) -> Callable[..., CifarResNet]:
    """The build callable of ResNet-(6n+2); its keyword arguments are the architecture's (stored) kwargs."""

    def build(
        input_shape: tuple[int, int, int],
        width: int = 16,
        feature_dim: int | None = None,
        shortcut: str = "A",
        dropout: float = 0.0,
    ) -> CifarResNet:
        return CifarResNet(input_shape, n, width=width, feature_dim=feature_dim, shortcut=shortcut, dropout=dropout)

    build.__name__ = build.__qualname__ = f"resnet{6 * n + 2}"
    build.__doc__ = f"ResNet-{6 * n + 2} (n={n}) of He et al. 2016, Sec. 4.2."
    return build


for _depth, _n in DEPTHS.items():
    ARCHITECTURES.register(
        ArchSpec(
            name=f"resnet{_depth}",
            description=f"CIFAR ResNet-{_depth} (He et al. 2016, 3 stages x {_n} basic blocks, 16/32/64 filters)",
            build=_builder(_n),
        ),
    )
del _depth, _n
