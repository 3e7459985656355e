"""C&W-wb: the white-box Carlini & Wagner attack on a classifier *and* its kernel-density detector.

Carlini & Wagner 2017, "Adversarial Examples Are Not Easily Detected" (Sec. on density
estimation), as paper 001 Sec. 4.4.2 uses it (Tables 9-11). Targeted, the target drawn at random
among the wrong classes; per sample it minimises

    ||x' - x||_2^2 + c * ( f_cw(x') + f_2(x') ),    f_2(x') = max(-log KD_t(F(x')) - eta, 0)

where f_cw is the C&W margin (``objective``, as ``cw-l2``), KD_t the Gaussian kernel density of
the *target* class over training features in the model's feature layer F
(:class:`robench.detectors.kd.KernelDensityDetector`, differentiable), and eta a density level:

- ``eta_mode="train-median"`` (paper 001's definition, the default): the median of -log KD over the
  training set, each training point under its own class, leaving itself out
  (:meth:`KernelDensityDetector.median_training_nll`); the runner computes it once per model and
  passes it as ``AttackTarget.detector_eta``;
- ``eta_mode="clean"`` (Carlini's reference code): -log KD of the clean input under its predicted
  class, so the adversarial input must look at least as dense as the image it came from.

Success, for the binary search, for keeping a candidate and in the records, is as in 001: classified
as the target *and* f_2 = 0 (and the margin at -kappa). Everything else (Adam in tanh space, the
per-sample binary search over c, per-sample early abort, batching) is ``cw-l2``'s, through its
``_context`` / ``_penalty`` hooks, so a test can check batched against one-at-a-time runs.

The density the attacker descends on is its own estimator, fitted by the runner with ``kd_per_class``
training points per class (Carlini's reference keeps the first 100 per class; here a seeded random
100, 0 for all of them): a smaller sum is cheaper per step, and the detector that *scores* the
result keeps all training points, so an attacker that overfits its subset is not rewarded.

Differences from the reference, and why:

- it runs batched (the reference attacks one image at a time);
- no separate first phase: the reference first runs a plain C&W (3 search steps, lr 0.1) and starts
  the density phase from its output; here the search starts from the clean input with the
  reference's initial constant c = 1 for the density phase, and the binary search over c does the rest;
- the kernel is the normalised Gaussian of the KD detector (bandwidth per dataset, Feinman et al.)
  rather than the reference's exp(-d/20), so the attacked density is exactly the detected one.

Why written here: neither torchattacks nor foolbox has a detector term (or a correct margin on the
all-negative logits of GM and MMC models, see :mod:`robench.attacks.cw`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from robench.attacks.base import ATTACKS, AttackNeeds, AttackTarget
from robench.attacks.cw import CarliniWagnerL2
from robench.core.config import choice, integer
from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.detectors.kd import KernelDensityDetector

ETA_MODES = ("train-median", "clean")


@ATTACKS.register
@dataclass(frozen=True)
class CarliniWagnerWhiteBox(CarliniWagnerL2):
    """C&W-wb (paper 001 Sec. 4.4.2): ``cw-l2`` plus the kernel-density term f_2; targeted only.

    Fields beyond ``cw-l2``'s:

    - ``eta_mode`` = "train-median": how eta is set (module docstring).
    - ``kd_per_class`` = 100: training points per class in the attacker's density estimator (0 = all).
    - ``initial_const`` = 1.0: the reference's constant for the density phase.
    """

    initial_const: float = 1.0
    eta_mode: str = choice("train-median", *ETA_MODES)
    kd_per_class: int = integer(100, low=0, note="0 = all")

    name: ClassVar[str] = "cw-wb"
    description: ClassVar[str] = "white-box C&W against the classifier and the KD detector, f_2 = max(-log KD_t - eta, 0) (001 Sec. 4.4.2)"
    # The runner gives this attack a fitted KD estimator (AttackTarget.detector) and eta.
    def needs(self) -> AttackNeeds:
        """The attacker's own KD over ``kd_per_class`` training points per class, and its eta."""
        return AttackNeeds(kd_per_class=self.kd_per_class)

    def run(self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator) -> Tensor:
        if targets is None:
            raise ConfigError(f"attack '{self.name}' is targeted: give it a target mode such as 'random'")
        if not isinstance(target.detector, KernelDensityDetector):
            raise ConfigError(f"attack '{self.name}' needs a fitted 'kd' detector in its AttackTarget")
        if self.eta_mode == "train-median" and target.detector_eta is None:
            raise ConfigError(f"attack '{self.name}' with eta_mode=train-median needs AttackTarget.detector_eta")
        return super().run(target, x, y, targets, generator)

    def _context(self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
        """eta per sample."""
        if self.eta_mode == "train-median":
            return torch.full((x.shape[0],), float(target.detector_eta), dtype=x.dtype, device=x.device)  # type: ignore[arg-type]
        with torch.no_grad():
            forward = target.forward(x)
            return -target.detector.log_density(forward.z, forward.predicted).to(x.dtype)  # type: ignore[union-attr]

    def _penalty(self, target: AttackTarget, forward: Forward, targets: Tensor | None, context: Tensor | None) -> Tensor:
        """f_2 = max(-log KD_t(z) - eta, 0), differentiable in z (paper 001 Sec. 4.4.2)."""
        assert targets is not None and context is not None
        return density_penalty(target.detector.log_density(forward.z, targets), context)  # type: ignore[union-attr]


def density_penalty(log_density: Tensor, eta: Tensor) -> Tensor:
    """f_2 of C&W-wb: max(-log KD - eta, 0); zero exactly when -log KD <= eta."""
    return (-log_density - eta).clamp_min(0.0)
