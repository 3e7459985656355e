"""The attacker-side kernel density an attack such as C&W-wb descends on, and its eta levels (paper 001 Sec. 4.4.2).

An attack declares that it needs one through :meth:`robench.attacks.base.Attack.needs`; the
runner builds it once per crafting model and estimator settings and hands it to the attack in
its :class:`~robench.attacks.base.AttackTarget`.

The attacker's estimator follows the run's scored ``kd`` detector (bandwidth, training points
per class and which ones, seed) unless the attack sets its own (C&W-wb's ``kd_bandwidth``,
``kd_per_class``, ``kd_subset``; the reference-copy attacker ``C&W-wb/carlini`` of 001 Table 10
sets all three to Carlini & Wagner's): 001 Sec. 4.4.2 attacks the very detector it is
scored by. Where the settings agree and the attacker crafts on the evaluated model, the scored
detector itself is used, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from robench.attacks.base import AttackNeeds
from robench.detectors import Detector
from robench.detectors.kd import KernelDensityDetector

SCORED_KD = "kd"  # the detector whose settings the attacker's estimator follows


@dataclass(frozen=True)
class DensitySettings:
    """What determines an attacker's KD estimator."""

    bandwidth: float | str  # a width, or "select" (chosen per model on held-out training features)
    per_class: int  # 0 = all training points
    seed: int
    subset: str = "random"  # which per_class points: "random" (seeded) or "first" (training-split order)


def scored_settings(detectors: Mapping[str, Detector]) -> DensitySettings | None:
    """The settings of the run's scored KD detector, None when the run scores no KD."""
    kd = detectors.get(SCORED_KD)
    if not isinstance(kd, KernelDensityDetector):
        return None
    bandwidth = kd.bandwidth if kd.selects else float(kd.bandwidth)
    return DensitySettings(bandwidth, int(kd.per_class), int(kd.seed), str(kd.subset))


def resolve_settings(needs: AttackNeeds, scored: DensitySettings | None, family: str) -> DensitySettings:
    """The attacker's settings: what the attack sets, else the scored detector's, else the KD defaults of ``family``."""
    kd = KernelDensityDetector.for_dataset(family)
    default = scored or DensitySettings(kd.bandwidth if kd.selects else float(kd.bandwidth), 0, 0)
    subset = getattr(needs, "kd_subset", None)
    return DensitySettings(
        bandwidth=float(needs.kd_bandwidth) if needs.kd_bandwidth is not None else default.bandwidth,
        per_class=int(needs.kd_per_class) if needs.kd_per_class is not None else default.per_class,
        seed=default.seed,
        subset=str(subset) if subset is not None else default.subset,
    )


def estimator(family: str, settings: DensitySettings) -> KernelDensityDetector:
    """An unfitted KD estimator of ``settings`` (the attacker's own, when it is not the scored detector)."""
    return KernelDensityDetector.for_dataset(
        family,
        {
            "bandwidth": settings.bandwidth,
            "per_class": settings.per_class,
            "seed": settings.seed,
            "subset": settings.subset,
        },
    )


@dataclass
class AttackerDensity:
    """A fitted KD estimator and the -log KD levels an attack must reach (leave-one-out training medians)."""

    detector: KernelDensityDetector
    eta: float  # over the whole training set
    eta_per_class: Tensor  # per class (K,)
    settings: DensitySettings
    reused: bool  # the fit came from the detector cache, or is the scored detector itself
    is_scored: bool  # the scored detector's own fitted estimator
