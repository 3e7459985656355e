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
  held-out inputs, the clean-correct ones clean and noisy (Gaussian noise of the adversarial L2 norm) against
  the detector-blind adversarial ones that fool the model (PGD on the defense's adaptive objective at the
  family's L-inf budget, :data:`COMBINER_PGD`), as the scored regression picks its rows; its thresholds then come
  from the second half only. Every [KD, BU] row derived from a training input, noisy and adversarial ones too,
  leaves that input's kernel out. With fewer than two such adversarial (or clean) inputs there is nothing to fit
  a regression on, and the run stops with a :class:`~robench.core.errors.ConfigError` saying so: an attacker
  without a regression cannot aim at KD+BU, and a stand-in regression would be a different detector.

Randomness: the held-out permutation is seeded by the run seed itself; the PGD random starts, the noise and the
regression each by a seed derived from it for that purpose (:func:`~robench.runs.part_work.derive_seed`; the
regression's seed is reduced to scikit-learn's range by :func:`~robench.detectors.combined.fit_logistic`), so every
run seed the command line allows works.

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
from robench.runs.part_work import derive_seed
from robench.scoring import combiner as C
from robench.scoring.metrics import FLAG_FPR

HELD_OUT = 1000  # training inputs the attacker calibrates on (all of a smaller training split)
COMBINER_PGD = {"steps": 20, "random_start": True, "objective": "adaptive"}  # the family's eps and step (PGD's)
_BATCH = 250
_IQR_TO_STD = 1.349  # the interquartile range of a normal distribution, in standard deviations
MIN_FIT_ROWS = C.MIN_ROWS  # fewest clean-correct and fooling inputs the attacker's regression is fitted on


def knowledge_seed(seed: int, purpose: str) -> int:
    """The seed (0 .. 2**63 - 1, any torch generator takes it) of one random draw of the attacker's knowledge,
    derived from the run seed (any integer) and the draw's ``purpose``: draws for different purposes are
    independent, and none depends on another's count of draws."""
    return derive_seed(seed, "attacker-knowledge", purpose)


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


def _pair_features(bundle: ModelBundle, detector: KDBUDetector, forward: Forward, own: Tensor | None) -> Tensor:
    """KD+BU's raw [KD, BU] pair (N x 2, float64) of ``forward``'s inputs, derived row for row from the training
    inputs whose features are ``own`` (KD leaves their kernels out), or from no training input (None)."""
    if own is None:
        return detector.raw_features(bundle.model, bundle.defense, forward).double()
    kd = detector.kd.log_density_leaving_out(forward.z, forward.predicted, own)
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
    name: str = "kd+bu",
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """The attacker's own KD+BU regression, fitted on training inputs ``x``: the clean-correct ones clean and noisy
    (negatives) against their detector-blind PGD outputs that fool the model (positives), as the scored regression
    picks its rows (:func:`robench.scoring.combiner.fit_group`); the regression and the counts it saw.

    ``seed`` is the run seed (any integer); ``name`` the detector's, for the error raised when there are fewer than
    :data:`MIN_FIT_ROWS` rows on either side to fit on."""
    bounds = Bounds(*bundle.meta.value_range)
    target = AttackTarget(bundle.model, bundle.defense, bounds)
    attack = PGD.for_dataset(family, COMBINER_PGD)
    generator = torch.Generator().manual_seed(knowledge_seed(seed, "kdbu-pgd"))
    noise = torch.Generator().manual_seed(knowledge_seed(seed, "kdbu-noise"))
    clean, noisy, adversarial = [], [], []
    n_correct = 0
    for i in range(0, len(x), _BATCH):
        xb, yb = x[i : i + _BATCH].to(device), y[i : i + _BATCH].to(device)
        result = attack(target, xb, yb, None, generator=generator)
        with torch.no_grad():
            forward = Forward.of(bundle.model, xb)
            own = forward.z  # every row below comes from one of these training inputs: its kernel is left out
            correct = (forward.predicted == yb).cpu()
            # an input the model already gets wrong is no adversarial example, nor a clean one the regression learns
            fooled = correct & result.success.cpu()
            noisy_x = C.noisy_like(xb, result.x_adv, bounds.low, bounds.high, noise)
            rows = (
                (clean, forward, correct),
                (noisy, Forward.of(bundle.model, noisy_x), correct),
                (adversarial, result.forward, fooled),
            )
            for kept, kind, keep in rows:
                features = _pair_features(bundle, detector, kind, own).cpu()
                kept.append(features[keep & torch.isfinite(features).all(dim=1)])  # as the scored fit: finite rows
            n_correct += int(correct.sum())
    negatives, positives = torch.cat(clean + noisy), torch.cat(adversarial)
    n_clean = sum(len(c) for c in clean)
    if n_clean < MIN_FIT_ROWS or len(positives) < MIN_FIT_ROWS:
        raise ConfigError(
            f"detector '{name}': the attacker cannot fit its own KD+BU regression: of the {len(x)} held-out "
            f"training inputs it fits on, {n_correct} are classified correctly and detector-blind "
            f"PGD-{COMBINER_PGD['steps']} at L-inf {attack.eps:g} fooled the model on {len(positives)} of them; "
            f"it needs at least {MIN_FIT_ROWS} of each"
        )
    combiner = fit_logistic(negatives.numpy(), positives.numpy(), knowledge_seed(seed, "kdbu-fit"))
    return combiner, {"clean": n_clean, "noisy": sum(len(n) for n in noisy), "adversarial": len(positives)}


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
    KD+BU, its own regression (``combiner``, tensors on the CPU).

    ``seed`` is the run seed, any integer: it picks the held-out inputs (:func:`held_out_indices`) and, through
    :func:`knowledge_seed`, KD+BU's random draws."""
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
            # fitted on the first half, thresholds from the second: the regression's own fit rows would score
            # as cleaner than the inputs it never saw
            combiner, counts = fit_attacker_combiner(bundle, detector, x[:half], y[:half], family, device, seed, name)
            features = []
            with torch.no_grad():
                for i in range(half, len(index), _BATCH):
                    forward = Forward.of(bundle.model, x[i : i + _BATCH].to(device))
                    features.append(_pair_features(bundle, detector, forward, forward.z).cpu())
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
    "MIN_FIT_ROWS",
    "attacker_knowledge",
    "clean_training_scores",
    "fit_attacker_combiner",
    "held_out_indices",
    "known_detectors",
    "knowledge_info",
    "knowledge_seed",
]
