"""What an adaptive attacker knows of a run's scored detectors: thresholds, scales and levels on held-out clean data.

An attack that targets detectors (:attr:`robench.attacks.base.AttackNeeds.detectors`: the joint attacks of
:mod:`robench.attacks.joint`, C&W-wb against any detector) gets one
:class:`~robench.attacks.detector_terms.KnownDetector` per scored detector. The attacker knows the fitted
detector (white-box: the one that scores the run) but not the evaluation samples, so it sets its own flag
thresholds on clean data of its own:

- *held-out clean data*: :data:`HELD_OUT` training-split inputs, a permutation seeded by the run seed. The
  evaluated samples come from the test split, so they are never among them. KD scores a training input
  leaving that input's own kernel out (:meth:`KernelDensityDetector.log_density_leaving_out`): with it, every
  training input would look far denser than any new one.
- per detector: the *threshold* below which it flags an input at the run's false-positive rate
  (:data:`robench.scoring.metrics.FLAG_FPR`, 5%; :func:`robench.detectors.base.threshold_at_fpr`), the *scale*
  (the clean scores' interquartile range / 1.349, a robust standard deviation, so terms of several detectors add
  up in comparable units) and the *level* (their median).
- KD+BU: the scored regression is fitted after the attacks on a split of the attacked samples
  (:mod:`robench.scoring.combiner`), so the attacker fits its own as Feinman et al. do: on the first half of the
  held-out inputs, clean and noisy ones (Gaussian noise of the adversarial L2 norm) against detector-blind
  adversarial ones (PGD on the defense's adaptive objective at the family's L-inf budget, :data:`COMBINER_PGD`);
  its thresholds then come from the second half only.

Training inputs look a little cleaner to most detectors than test inputs, so these thresholds err high: the
attacker aims at a stricter level than the scorer's (set on the evaluated samples' clean scores), which can
only cost the attack strength, never make an output count as undetected that is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from robench.attacks.base import AttackTarget, Bounds
from robench.attacks.detector_terms import KnownDetector
from robench.attacks.linf import PGD
from robench.checkpoints.bundle import ModelBundle
from robench.core.data import Split
from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.detectors import Detector, threshold_at_fpr
from robench.detectors.combined import KDBUDetector, fit_logistic
from robench.detectors.kd import KernelDensityDetector
from robench.runs.detection import clean_scores
from robench.scoring import combiner as C
from robench.scoring.metrics import FLAG_FPR

HELD_OUT = 1000  # training inputs the attacker calibrates on (all of a smaller training split)
COMBINER_PGD = {"steps": 20, "random_start": True, "objective": "adaptive"}  # the family's eps and step (PGD's)
_BATCH = 250
_IQR_TO_STD = 1.349  # the interquartile range of a normal distribution, in standard deviations


def held_out_indices(n_train: int, seed: int) -> Tensor:
    """The training inputs the attacker calibrates on: the first :data:`HELD_OUT` of a permutation seeded by
    ``seed``."""
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return order[: min(HELD_OUT, n_train)]


def clean_training_scores(bundle: ModelBundle, detector: Detector, x: Tensor, device: torch.device) -> Tensor:
    """A detector's scores (CPU) of training inputs ``x``, KD leaving each input's own kernel out."""
    held_out = Split(x, torch.zeros(len(x), dtype=torch.long))
    return clean_scores(bundle, detector, held_out, device, _BATCH, lambda f: _training_score(bundle, detector, f))


def _training_score(bundle: ModelBundle, detector: Detector, forward: Forward) -> Tensor:
    if isinstance(detector, KernelDensityDetector):
        return detector.log_density_leaving_out(forward.z, forward.predicted)
    return detector.score(bundle.model, bundle.defense, forward)


def _pair_features(bundle: ModelBundle, detector: KDBUDetector, forward: Forward, training: bool) -> Tensor:
    """KD+BU's raw [KD, BU] pair (N x 2, float64), KD leaving a training input's own kernel out."""
    if not training:
        return detector.raw_features(bundle.model, bundle.defense, forward).double()
    kd = detector.kd.log_density_leaving_out(forward.z, forward.predicted)
    bu = detector.bu.score(bundle.model, bundle.defense, forward)
    return torch.stack([kd.double(), bu.double()], dim=1)


def fit_attacker_combiner(
    bundle: ModelBundle,
    detector: KDBUDetector,
    x: Tensor,
    y: Tensor,
    family: str,
    device: torch.device,
    seed: int,
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """The attacker's own KD+BU regression, fitted on training inputs ``x``: clean and noisy (negatives) against
    detector-blind PGD outputs that fool the model (positives); the regression and the counts it saw."""
    bounds = Bounds(*bundle.meta.value_range)
    target = AttackTarget(bundle.model, bundle.defense, bounds)
    attack = PGD.for_dataset(family, COMBINER_PGD)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)
    clean, noisy, adversarial = [], [], []
    for i in range(0, len(x), _BATCH):
        xb, yb = x[i : i + _BATCH].to(device), y[i : i + _BATCH].to(device)
        result = attack(target, xb, yb, None, generator=generator)
        with torch.no_grad():
            forward = Forward.of(bundle.model, xb)
            correct = (forward.predicted == yb).cpu()
            noisy_x = C.noisy_like(xb, result.x_adv, bounds.low, bounds.high, noise)
            clean.append(_pair_features(bundle, detector, forward, training=True).cpu()[correct])
            noisy.append(_pair_features(bundle, detector, Forward.of(bundle.model, noisy_x), False).cpu()[correct])
            adversarial.append(_pair_features(bundle, detector, result.forward, False).cpu()[result.success.cpu()])
    negatives = torch.cat(clean + noisy)
    positives = torch.cat(adversarial)
    combiner = fit_logistic(negatives.numpy(), positives.numpy(), seed)
    return combiner, {"clean": int(sum(len(c) for c in clean)), "noisy": int(sum(len(n) for n in noisy)),
                      "adversarial": len(positives)}  # fmt: skip


def _robust_scale(scores: Tensor) -> float:
    finite = scores[torch.isfinite(scores)]
    if finite.numel() < 2:
        return 1.0
    q = torch.quantile(finite, torch.tensor([0.25, 0.75], dtype=finite.dtype))
    spread = float(q[1] - q[0]) / _IQR_TO_STD
    if not spread > 0:
        spread = float(finite.std())
    return spread if spread > 0 else 1.0


def attacker_knowledge(
    bundle: ModelBundle,
    detectors: Mapping[str, Detector],
    train: Split,
    family: str,
    device: torch.device,
    seed: int,
    fpr: float = FLAG_FPR,
) -> dict[str, dict[str, Any]]:
    """Per scored detector: the attacker's ``threshold``, ``scale``, ``level``, the inputs they were set on and, for
    KD+BU, its own regression (``combiner``, tensors on the CPU)."""
    index = held_out_indices(len(train), seed)
    if len(index) < 4:
        raise ConfigError(
            f"the attacker needs at least 4 training inputs to set its detector thresholds, got {len(index)}"
        )
    x, y = train.x[index], train.y[index]
    half = len(index) // 2
    bundle.model.eval()
    out: dict[str, dict[str, Any]] = {}
    for name, detector in detectors.items():
        entry: dict[str, Any] = {"held_out": len(index), "source": "training split (seeded subset)"}
        if isinstance(detector, KDBUDetector):
            combiner, counts = fit_attacker_combiner(bundle, detector, x[:half], y[:half], family, device, seed)
            features = []
            with torch.no_grad():
                for i in range(half, len(index), _BATCH):
                    forward = Forward.of(bundle.model, x[i : i + _BATCH].to(device))
                    features.append(_pair_features(bundle, detector, forward, training=True).cpu())
            scores = C.combiner_scores(combiner, torch.cat(features))
            entry.update(combiner={k: v.detach().cpu() for k, v in combiner.items()}, combiner_fit=counts)
            entry["calibrated_on"] = len(index) - half
        else:
            scores = clean_training_scores(bundle, detector, x, device)
            entry["calibrated_on"] = len(index)
        entry.update(
            threshold=threshold_at_fpr(scores, fpr),
            scale=_robust_scale(scores),
            level=float(scores[torch.isfinite(scores)].median()) if torch.isfinite(scores).any() else float("nan"),
            fpr=fpr,
        )
        out[name] = entry
    return out


def known_detectors(
    detectors: Mapping[str, Detector], knowledge: Mapping[str, Mapping[str, Any]], device: torch.device
) -> tuple[KnownDetector, ...]:
    """The run's detectors as the attacker knows them (:func:`attacker_knowledge`'s output), in the run's order."""
    known = []
    for name, detector in detectors.items():
        entry = knowledge[name]
        combiner = entry.get("combiner")
        known.append(
            KnownDetector(
                name,
                detector,
                float(entry["threshold"]),
                float(entry["scale"]),
                float(entry["level"]),
                {k: v.to(device) for k, v in combiner.items()} if combiner else None,
            )
        )
    return tuple(known)


def knowledge_info(knowledge: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """run.json's ``attacker_detectors``: per detector what the attacker's thresholds were set on and their values."""
    return {
        name: {k: v for k, v in entry.items() if k != "combiner"}
        | ({"combiner": {k: v.tolist() for k, v in entry["combiner"].items()}} if entry.get("combiner") else {})
        for name, entry in knowledge.items()
    }


__all__ = [
    "HELD_OUT",
    "attacker_knowledge",
    "clean_training_scores",
    "fit_attacker_combiner",
    "held_out_indices",
    "known_detectors",
    "knowledge_info",
]
