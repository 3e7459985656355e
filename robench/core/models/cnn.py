"""A small CNN for small grayscale images (28 x 28 MNIST, 8 x 8 digits), fast on a CPU.

Two conv-conv-pool stages, dropout (kept for MC-dropout Bayesian uncertainty,
Feinman et al. 2017), a hidden ReLU layer and a *linear* feature layer z. z is
linear rather than ReLU so that heads with centres anywhere in feature space
(GM means, Max-Mahalanobis centres, which have negative coordinates) can be
reached.
"""

from __future__ import annotations

from torch import Tensor, nn

from robench.core.models.base import ARCHITECTURES, MAX_CHANNELS, MAX_UNITS, ArchSpec, layer_size


class SmallCNN(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        width: int = 32,
        hidden: int = 128,
        feature_dim: int = 64,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        channels, height, width_px = input_shape
        if height < 4 or width_px < 4:
            raise ValueError("the cnn needs images of at least 4 x 4 pixels")
        layer_size("width", width, MAX_CHANNELS)
        layer_size("hidden", hidden, MAX_UNITS)
        layer_size("feature_dim", feature_dim, MAX_UNITS)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.feature_dim = int(feature_dim)
        self.conv = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        flat = 2 * width * (height // 4) * (width_px // 4)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(flat, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, feature_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.conv(x))


ARCHITECTURES.register(
    ArchSpec(name="cnn", description="small 4-conv CNN for 28x28 (or smaller) grayscale, fast on CPU", build=SmallCNN),
)
