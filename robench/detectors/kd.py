"""Kernel-density (KD) detection in the feature layer (Feinman et al. 2017, "Detecting Adversarial
Samples from Artifacts"; used by paper 001 Sec. 4.4 and, with a KD term, by C&W-wb).

One Gaussian-kernel density estimator per class over that class's training
features z; an input is scored under its *predicted* class:

    log KD_k(z) = log( (1/n_k) sum_j (2 pi h^2)^(-d/2) exp(-||z - z_j||^2 / (2 h^2)) )

which is exactly scikit-learn's ``KernelDensity(kernel="gaussian", bandwidth=h)``
``score_samples`` (a test checks this to 1e-4). Written in torch, batched over
inputs and training points, and differentiable with respect to the input,
because the white-box attack descends on -log KD_t.

Default bandwidths (Feinman et al.): MNIST 1.20, CIFAR-10 0.26, SVHN 1.00;
CIFAR-100 has none there and uses CIFAR-10's. ``per_class`` keeps a fixed
random subset of training features per class (the C&W-wb reference code uses
100); 0 keeps them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from robench.core.config import finite, integer
from robench.core.data import Split
from robench.core.errors import ConfigError
from robench.core.models import Classifier, Forward
from robench.defenses import Defense
from robench.detectors.base import DETECTORS, Detector


def features_of(model: Classifier, x: Tensor, device: torch.device, batch_size: int = 500) -> Tensor:
    """Features z of ``x`` in eval mode, batched, without gradients (on ``device``)."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model.features(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)])


def gaussian_kde_log_density(z: Tensor, points: Tensor, bandwidth: float) -> Tensor:
    """log of the Gaussian KDE over ``points`` (n x d) at each row of ``z`` (N x d); differentiable in z.

    Always in fp32 (or z's wider dtype), autocast off: the squared distances are expanded as
    ||z||^2 - 2 z.p + ||p||^2, whose cancellation a bf16 product would ruin (measured: C&W-wb
    under ``--precision bf16`` met f_2 = 0 in bf16 only, and none of its successes held in fp32).
    """
    d = z.shape[1]
    dtype = torch.promote_types(z.dtype, torch.float32)
    with torch.autocast(device_type=z.device.type, enabled=False):
        z, points = z.to(dtype), points.to(dtype)
        sq = (z * z).sum(1, keepdim=True) - 2.0 * z @ points.t() + (points * points).sum(1)
        log_kernel = -sq.clamp_min(0.0) / (2.0 * bandwidth**2)
        return (
            torch.logsumexp(log_kernel, dim=1)
            - math.log(points.shape[0])
            - 0.5 * d * math.log(2 * math.pi * bandwidth**2)
        )


@DETECTORS.register
@dataclass
class KernelDensityDetector(Detector):
    bandwidth: float = finite(1.20, low=0, low_open=True)
    per_class: int = integer(0, low=0, note="0 = all training points")
    seed: int = integer(0)

    name: ClassVar[str] = "kd"
    label: ClassVar[str] = "KD"
    table_rank: ClassVar[int] = 0
    description: ClassVar[str] = "kernel density of the features under the predicted class (Feinman et al. 2017)"
    needs_fit: ClassVar[bool] = True
    family_defaults: ClassVar = {
        "mnist": {"bandwidth": 1.20},
        "cifar10": {"bandwidth": 0.26},
        "cifar100": {"bandwidth": 0.26},
        "svhn": {"bandwidth": 1.00},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        self._points: list[Tensor] = []

    def fit(self, model: Classifier, defense: Defense, train: Split, device: torch.device) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        z = features_of(model, train.x, device)
        labels = train.y.to(device)
        num_classes = model.num_classes
        points = []
        for k in range(num_classes):
            zk = z[labels == k]
            if len(zk) == 0:
                raise ConfigError(f"kd: no training samples of class {k}")
            if self.per_class and len(zk) > self.per_class:
                zk = zk[torch.randperm(len(zk), generator=generator)[: self.per_class].to(device)]
            points.append(zk)
        self._points = points

    def fitted_state(self) -> dict[str, Tensor]:
        return {f"class_{k}": p.detach().cpu() for k, p in enumerate(self._points)}

    def load_fitted_state(self, state: dict[str, Tensor], device: torch.device) -> None:
        keys = sorted(state, key=lambda key: int(key.split("_")[1]))
        self._points = [state[k].to(device) for k in keys]

    def class_log_density(self, z: Tensor) -> Tensor:
        """log KD_k(z) for every class k (N x K)."""
        if not self._points:
            raise ConfigError("kd detector is not fitted")
        return torch.stack([gaussian_kde_log_density(z, p, self.bandwidth) for p in self._points], dim=1)

    def log_density(self, z: Tensor, classes: Tensor) -> Tensor:
        """log KD_c(z) for one class per row (e.g. the attack's target); evaluates only that class's estimator."""
        if not self._points:
            raise ConfigError("kd detector is not fitted")
        out = z.new_zeros(z.shape[0])
        for k in classes.unique().tolist():  # a loop over classes, not samples
            rows = (classes == k).nonzero().squeeze(1)
            # .to: under autocast the kernel sums may come back in another precision than the features
            out = out.index_put(
                (rows,), gaussian_kde_log_density(z[rows], self._points[k], self.bandwidth).to(out.dtype)
            )
        return out

    def median_training_nll(self, z: Tensor, labels: Tensor, chunk: int = 1024) -> float:
        """eta of C&W-wb (paper 001 Sec. 4.4.2): the median over training features of -log KD_y(z)
        (:meth:`training_nll`)."""
        return float(self.training_nll(z, labels, chunk)[0].median())

    def training_medians(self, z: Tensor, labels: Tensor, chunk: int = 1024) -> tuple[float, Tensor]:
        """C&W-wb's eta levels: the median of :meth:`training_nll` over all points, and per class (K,).

        The per-class one is the RCE reference's ``median_for_attack`` (eta of the target class);
        a class without training features gets the overall median.
        """
        values, classes = self.training_nll(z, labels, chunk)
        overall = values.median()
        per_class = [
            values[classes == k].median() if bool((classes == k).any()) else overall for k in range(len(self._points))
        ]
        return float(overall), torch.stack(per_class)

    def training_nll(self, z: Tensor, labels: Tensor, chunk: int = 1024) -> tuple[Tensor, Tensor]:
        """-log KD_y(z) of every training feature under its own class, leaving itself out, and the class of each value.

        Each point is scored under its own class and leaves itself out: a point's own kernel
        (exp(0) = 1) outweighs every other term in a high-dimensional feature space, so with
        itself included every training density would look far higher than a new input's.
        A point is matched to its stored copy by (numerically) zero distance.
        """
        if not self._points:
            raise ConfigError("kd detector is not fitted")
        values, classes = [], []
        d = z.shape[1]
        const = 0.5 * d * math.log(2 * math.pi * self.bandwidth**2)
        for k, points in enumerate(self._points):
            zk = z[labels == k].to(points.device, points.dtype)
            for i in range(0, len(zk), chunk):
                part = zk[i : i + chunk]
                sq = (
                    (part * part).sum(1, keepdim=True) - 2.0 * part @ points.t() + (points * points).sum(1)
                ).clamp_min(0.0)
                # float rounding differs between batchings of the same inputs, so "itself" is matched within a
                # tolerance far below any distance between two distinct images' features
                distance = torch.cdist(part, points, compute_mode="donot_use_mm_for_euclid_dist")
                exact = distance <= 1e-5 * (1.0 + part.norm(dim=1, keepdim=True))
                log_kernel = (-sq / (2.0 * self.bandwidth**2)).masked_fill(exact, float("-inf"))
                count = (~exact).sum(1).clamp_min(1)
                values.append(-(torch.logsumexp(log_kernel, dim=1) - count.log() - const))
                classes.append(torch.full((len(part),), k, dtype=torch.long, device=points.device))
        if not values:
            raise ConfigError("kd: no training features to compute eta from")
        return torch.cat(values), torch.cat(classes)

    def score(self, model: Classifier, defense: Defense, forward: Forward) -> Tensor:
        return self.log_density(forward.z, forward.predicted)
