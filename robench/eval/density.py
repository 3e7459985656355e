"""The attacker-side kernel density an attack such as C&W-wb descends on, and its eta (paper 001 Sec. 4.4.2).

An attack declares that it needs one through :meth:`robench.attacks.base.Attack.needs`; the
runner builds it once per crafting model and subset size and hands it to the attack in its
:class:`~robench.attacks.base.AttackTarget`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robench.core.bundle import ModelBundle
from robench.core.data import Dataset
from robench.detectors import fit_or_load
from robench.detectors.kd import KernelDensityDetector, features_of


@dataclass
class AttackerDensity:
    """A fitted KD estimator and the -log KD level eta an attack must reach (the leave-one-out training median)."""

    detector: KernelDensityDetector
    eta: float
    reused: bool  # the fit came from the detector cache


def attacker_density(crafting: ModelBundle, data: Dataset, per_class: int, device: torch.device) -> AttackerDensity:
    """KD over ``per_class`` seeded training points per class (0 = all) of the crafting model's features."""
    kd = KernelDensityDetector.for_dataset(data.spec.family, {"per_class": per_class})
    reused = fit_or_load(kd, crafting, data.train, device, train_name=f"{data.name}:{data.split_seed}")
    eta = kd.median_training_nll(features_of(crafting.model, data.train.x, device), data.train.y.to(device))
    return AttackerDensity(kd, eta, reused)
