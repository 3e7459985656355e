"""Kernel-density (KD) detection in the feature layer (Feinman et al. 2017, "Detecting Adversarial
Samples from Artifacts"; used by paper 001 Sec. 4.4 and, with a KD term, by C&W-wb).

One Gaussian-kernel density estimator per class over that class's training
features z; an input is scored under its *predicted* class:

    log KD_k(z) = log( (1/n_k) sum_j (2 pi h^2)^(-d/2) exp(-||z - z_j||^2 / (2 h^2)) )

which is exactly scikit-learn's ``KernelDensity(kernel="gaussian", bandwidth=h)``
``score_samples`` (a test checks this to 1e-4). Written in torch, batched over
inputs and training points, and differentiable with respect to the input,
because the white-box attack descends on -log KD_t.

The bandwidth h (``bandwidth``) is chosen per model by default (``"select"``): Feinman et al.'s
procedure, a grid of widths (:data:`BANDWIDTH_GRID`), each class's estimator fitted on part of
that class's training features, and the width that maximises the mean log-likelihood of the
held-out training features under their own class's estimator (:func:`select_bandwidth`; the split
is seeded by ``seed``, so the choice is deterministic). One width for every model of a dataset
does not fit: the feature spaces of the bundled MNIST models are ~26x apart in scale (nearest
neighbour within a class: 7.0 for softmax, 0.27 for GM, 0.66 for RCE). The chosen width is part
of the fitted state (the detector cache's ``kd-*.pt``) and of run.json (``detectors.kd.fitted``).

A number fixes the width. :data:`DATASET_BANDWIDTHS` holds the per-dataset values robench used
before as one width for every model (MNIST 1.20, CIFAR-10 0.26, SVHN 1.00; CIFAR-100 CIFAR-10's),
described as Feinman et al.'s (not verified: neither their paper nor their code was read); the RCE
reference chooses per model too: sigma^2 = 0.1/0.26 for the RCE model and 1.0/0.26 for the CE one
(P2333/Reverse-Cross-Entropy, ``test_adv.py`` lines 78 and 81). Give them explicitly, e.g. ``bandwidth=1.2``.

``per_class`` keeps a subset of training features per class, 0 keeps them all: a seeded random
one (``subset = "random"``), or the first ones in training-split order (``subset = "first"``,
Carlini & Wagner's nn_breaking_detection keeps the first 100 per class: ``density_estimation.py``
line 421).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from robench.core.config import Constraint, choice, constrained, integer
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


SELECT = "select"
# Formerly every model's width per dataset family (described as Feinman et al.'s; not verified, see the module
# docstring): now an explicit option (``bandwidth=1.2``), the default being SELECT.
DATASET_BANDWIDTHS = {"mnist": 1.20, "cifar10": 0.26, "cifar100": 0.26, "svhn": 1.00}
# The widths SELECT tries: 10^(k/8) for k = -24..24, i.e. 1e-3 .. 1e3 in steps of x1.334. A decade is exactly
# 8 steps, so features scaled by 10 select exactly the width 8 steps up (the choice is scale-equivariant).
BANDWIDTH_GRID = tuple(10.0 ** (k / 8) for k in range(-24, 25))
HELD_OUT_FRACTION = 0.2  # of each class's training features, for SELECT's held-out log-likelihood


def bandwidth_value(value: object) -> float | str | None:
    """``value`` as a bandwidth: SELECT, or a finite number > 0 (a number given as text is converted); None if it is
    neither."""
    if isinstance(value, str):
        if value.strip().lower() == SELECT:
            return SELECT
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


BANDWIDTH = constrained(
    SELECT,
    Constraint(
        "'select' (held-out log-likelihood, Feinman et al.) or a finite number > 0",
        lambda v: bandwidth_value(v) is not None,
    ),
)


def held_out_log_likelihood(
    fit: list[Tensor], held_out: list[Tensor], grid: tuple[float, ...] = BANDWIDTH_GRID
) -> Tensor:
    """The mean log-likelihood (per held-out point, over all classes) of ``held_out[k]`` under the Gaussian KDE of
    ``fit[k]``, for each width of ``grid`` (len(grid),). Classes with no fit or no held-out point are skipped."""
    widths = torch.tensor(grid, dtype=torch.float64)
    total = torch.zeros(len(grid), dtype=torch.float64)
    count = 0
    for points, queries in zip(fit, held_out):
        if len(points) == 0 or len(queries) == 0:
            continue
        p, q = points.double(), queries.double()
        d = p.shape[1]
        sq = torch.cdist(q, p).pow(2)  # (m, n)
        for i, h in enumerate(widths.tolist()):
            log_density = (
                torch.logsumexp(-sq / (2.0 * h * h), dim=1) - math.log(len(p)) - 0.5 * d * math.log(2 * math.pi * h * h)
            )
            total[i] += log_density.sum().cpu()
        count += len(q)
    if count == 0:
        raise ConfigError("kd: too few training features per class to select a bandwidth (need 2 in some class)")
    return total / count


def select_bandwidth(
    features: list[Tensor], seed: int, per_class: int = 0, grid: tuple[float, ...] = BANDWIDTH_GRID
) -> tuple[float, Tensor]:
    """The width of ``grid`` maximising the held-out log-likelihood (:func:`held_out_log_likelihood`), and the curve.

    ``features[k]``: class k's training features. Each class is split by a permutation seeded with ``seed``:
    :data:`HELD_OUT_FRACTION` of it (at least one point) held out, the rest (at most ``per_class`` points when
    ``per_class`` > 0, so the width suits an estimator of that size) fitted.
    """
    generator = torch.Generator().manual_seed(seed)
    fit, held_out = [], []
    for z in features:
        order = torch.randperm(len(z), generator=generator).to(z.device)
        m = max(1, round(HELD_OUT_FRACTION * len(z))) if len(z) >= 2 else 0
        rest = order[m:]
        if per_class:
            rest = rest[:per_class]
        held_out.append(z[order[:m]])
        fit.append(z[rest])
    curve = held_out_log_likelihood(fit, held_out, grid)
    return float(grid[int(torch.argmax(curve))]), curve


@DETECTORS.register
@dataclass
class KernelDensityDetector(Detector):
    bandwidth: float | str = BANDWIDTH
    per_class: int = integer(0, low=0, note="0 = all training points")
    subset: str = choice("random", "random", "first", note="which per_class points: seeded random, or the first ones")
    seed: int = integer(0)

    name: ClassVar[str] = "kd"
    label: ClassVar[str] = "KD"
    table_rank: ClassVar[int] = 0
    description: ClassVar[str] = "kernel density of the features under the predicted class (Feinman et al. 2017)"
    needs_fit: ClassVar[bool] = True
    family_defaults: ClassVar = {}  # the width is selected per model; DATASET_BANDWIDTHS are explicit options

    def __post_init__(self) -> None:
        value = bandwidth_value(self.bandwidth)
        if value is not None:  # "1.2" from the command line is the number 1.2
            self.bandwidth = value
        super().__post_init__()
        self._points: list[Tensor] = []
        self._width: float | None = None if self.bandwidth == SELECT else float(self.bandwidth)
        self._curve: Tensor | None = None  # SELECT's held-out log-likelihood per width of BANDWIDTH_GRID

    @property
    def selects(self) -> bool:
        """Whether the width is selected at fit time (``bandwidth = "select"``)."""
        return self.bandwidth == SELECT

    @property
    def width(self) -> float:
        """The kernel width in use: the fixed ``bandwidth``, or the one selected by :meth:`fit`."""
        if self._width is None:
            raise ConfigError("kd detector is not fitted (its bandwidth is selected at fit time)")
        return self._width

    def fit(self, model: Classifier, defense: Defense, train: Split, device: torch.device) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        z = features_of(model, train.x, device)
        labels = train.y.to(device)
        num_classes = model.num_classes
        features, points = [], []
        for k in range(num_classes):
            zk = z[labels == k]
            if len(zk) == 0:
                raise ConfigError(f"kd: no training samples of class {k}")
            features.append(zk)
            if self.per_class and len(zk) > self.per_class:
                keep = (
                    torch.arange(self.per_class)
                    if self.subset == "first"
                    else torch.randperm(len(zk), generator=generator)[: self.per_class]
                )
                zk = zk[keep.to(device)]
            points.append(zk)
        self._points = points
        if self.selects:
            self._width, self._curve = select_bandwidth(features, self.seed, self.per_class)

    def fitted_info(self) -> dict[str, object]:
        """run.json's ``fitted`` for this detector: the width in use and whether it was selected."""
        if self._width is None:
            return {}
        info: dict[str, object] = {"bandwidth": self._width, "bandwidth_selected": self.selects}
        if self.selects and self._curve is not None:
            best = int(torch.argmax(self._curve))
            info["bandwidth_at_grid_edge"] = best in (0, len(BANDWIDTH_GRID) - 1)
            info["held_out_log_likelihood"] = round(float(self._curve[best]), 4)
        return info

    def fitted_state(self) -> dict[str, Tensor]:
        state = {f"class_{k}": p.detach().cpu() for k, p in enumerate(self._points)}
        if self._width is not None:
            state["bandwidth"] = torch.tensor(self._width, dtype=torch.float64)
        if self._curve is not None:
            state["bandwidth_curve"] = self._curve.detach().cpu()
        return state

    def load_fitted_state(self, state: dict[str, Tensor], device: torch.device) -> None:
        keys = sorted((k for k in state if k.startswith("class_")), key=lambda key: int(key.split("_")[1]))
        self._points = [state[k].to(device) for k in keys]
        if "bandwidth" in state:
            self._width = float(state["bandwidth"])
        elif self.selects:
            raise ConfigError("kd: the fitted state lacks the selected bandwidth (a fit from before selection)")
        self._curve = state["bandwidth_curve"].double() if "bandwidth_curve" in state else None

    def class_log_density(self, z: Tensor) -> Tensor:
        """log KD_k(z) for every class k (N x K)."""
        if not self._points:
            raise ConfigError("kd detector is not fitted")
        return torch.stack([gaussian_kde_log_density(z, p, self.width) for p in self._points], dim=1)

    def log_density(self, z: Tensor, classes: Tensor) -> Tensor:
        """log KD_c(z) for one class per row (e.g. the attack's target); evaluates only that class's estimator."""
        if not self._points:
            raise ConfigError("kd detector is not fitted")
        out = z.new_zeros(z.shape[0])
        for k in classes.unique().tolist():  # a loop over classes, not samples
            rows = (classes == k).nonzero().squeeze(1)
            # .to: under autocast the kernel sums may come back in another precision than the features
            out = out.index_put((rows,), gaussian_kde_log_density(z[rows], self._points[k], self.width).to(out.dtype))
        return out

    def log_density_leaving_out(self, z: Tensor, classes: Tensor, own: Tensor | None = None) -> Tensor:
        """log KD_c(z) as :meth:`log_density`, but the training point that ``own`` (default ``z``) is (numerically)
        equal to, row for row, is left out.

        For scoring training inputs (an attacker's held-out clean data drawn from the training split): a point's own
        kernel would otherwise dominate its density (see :meth:`training_nll`, whose matching rule this uses). An
        input derived from training input i (a noisy copy of it) passes i's features as ``own``: it sits close to
        i's kernel too, which a new input would not have.
        """
        if not self._points:
            raise ConfigError("kd detector is not fitted")
        width = self.width
        out = z.new_zeros(z.shape[0], dtype=torch.promote_types(z.dtype, torch.float32))
        for k in classes.unique().tolist():  # a loop over classes, not samples
            rows = (classes == k).nonzero().squeeze(1)
            points = self._points[k].to(out.dtype)
            part = z[rows].to(points.device, out.dtype)
            distance = torch.cdist(part, points, compute_mode="donot_use_mm_for_euclid_dist")
            sq = distance.pow(2)
            source = part if own is None else own[rows].to(points.device, out.dtype)
            if own is not None:
                distance = torch.cdist(source, points, compute_mode="donot_use_mm_for_euclid_dist")
            exact = distance <= 1e-5 * (1.0 + source.norm(dim=1, keepdim=True))
            log_kernel = (-sq / (2.0 * width**2)).masked_fill(exact, float("-inf"))
            count = (~exact).sum(1).clamp_min(1)
            const = 0.5 * z.shape[1] * math.log(2 * math.pi * width**2)
            values = torch.logsumexp(log_kernel, dim=1) - count.log() - const
            out = out.index_put((rows.to(out.device),), values.to(out))
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
        width = self.width
        const = 0.5 * d * math.log(2 * math.pi * width**2)
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
                log_kernel = (-sq / (2.0 * width**2)).masked_fill(exact, float("-inf"))
                count = (~exact).sum(1).clamp_min(1)
                values.append(-(torch.logsumexp(log_kernel, dim=1) - count.log() - const))
                classes.append(torch.full((len(part),), k, dtype=torch.long, device=points.device))
        if not values:
            raise ConfigError("kd: no training features to compute eta from")
        return torch.cat(values), torch.cat(classes)

    def score(self, model: Classifier, defense: Defense, forward: Forward) -> Tensor:
        return self.log_density(forward.z, forward.predicted)
