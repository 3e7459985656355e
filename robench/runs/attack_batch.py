"""One attack on one batch: craft on the crafting model, judge and score on the evaluated one, return the per-sample
columns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from robench.attacks.base import Attack, AttackTarget, Bounds, attack_eps
from robench.attacks.detector_terms import KnownDetector
from robench.attacks.targets import choose_targets
from robench.checkpoints.bundle import ModelBundle
from robench.core.execution import PassCounter
from robench.core.models import Forward
from robench.detectors import Detector
from robench.runs.density import AttackerDensity
from robench.scoring import combiner as C
from robench.scoring import records as R
from robench.specs.threats import AttackSpec


def detector_scores(detectors: Mapping[str, Detector], bundle: ModelBundle, forward: Forward) -> dict[str, np.ndarray]:
    """Every detector's score (higher = looks clean) of the inputs of one forward pass.

    Combined detectors (KD+BU) are scored after the run, from raw features (:mod:`robench.scoring.combiner`).
    """
    combined = C.combined_detectors(detectors)
    with torch.no_grad():
        return {
            name: d.score(bundle.model, bundle.defense, forward).float().cpu().numpy()
            for name, d in detectors.items()
            if name not in combined
        }


@dataclass(frozen=True)
class CleanBatch:
    """A batch's clean forward pass on the evaluated model and its detector scores (shared by every attack of the
    batch)."""

    forward: Forward
    scores: dict[str, np.ndarray]

    @classmethod
    def of(cls, bundle: ModelBundle, x: torch.Tensor, detectors: Mapping[str, Detector]) -> CleanBatch:
        with torch.no_grad():
            forward = Forward.of(bundle.model, x)
        return cls(forward, detector_scores(detectors, bundle, forward))


@dataclass(frozen=True)
class BatchResult:
    """The record columns of one attacked batch (:data:`robench.scoring.records.BATCH_COLUMNS`) and the detector
    scores."""

    columns: dict[str, np.ndarray]
    scores_clean: dict[str, np.ndarray]
    scores_adv: dict[str, np.ndarray]
    raw: dict[
        str, np.ndarray
    ]  # combined detectors' raw features (clean, noisy, adversarial), see robench.scoring.combiner
    images: int = 0  # images forwarded through the crafting model by the attack (its image-steps)

    @staticmethod
    def joined(results: list[BatchResult]) -> BatchResult:
        """Consecutive sub-batches' results as one (a batch split after running out of memory)."""

        def cat(dicts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
            return {k: np.concatenate([d[k] for d in dicts]) for k in dicts[0]}

        return BatchResult(
            cat([r.columns for r in results]),
            cat([r.scores_clean for r in results]),
            cat([r.scores_adv for r in results]),
            cat([r.raw for r in results]) if results[0].raw else {},
            sum(r.images for r in results),
        )


def aimed_detectors(attack: Attack, scored: list[str], density: AttackerDensity | None, *, transfer: bool) -> str:
    """The ``attack_detectors`` of an attack's records: the evaluated model's detectors it descended on.

    Crafted on a substitute, it descended on the substitute's own detectors: they are kept as ``substitute:NAME``,
    which names no scored detector, so the evaluated model's detector counts as not attacked. A KD term on an
    estimator other than the scored one (other settings: ``kd_per_class``, ``kd_bandwidth``, the reference copy's
    kernel) is not an attack on the scored KD either.
    """
    aimed = attack.attacked_detectors(scored)
    if transfer:
        return ",".join(f"{R.SUBSTITUTE_DETECTOR}{d}" for d in aimed)
    if density is not None and not density.is_scored:
        aimed = tuple(d for d in aimed if d != "kd")
    return ",".join(aimed)


def attack_batch(
    bundle: ModelBundle,
    crafting: ModelBundle,
    attack: Attack,
    spec: AttackSpec,
    bounds: Bounds,
    density: AttackerDensity | None,
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    clean: CleanBatch,
    detectors: Mapping[str, Detector],
    noise_generator: torch.Generator | None = None,
    precision: str = "fp32",
    known: tuple[KnownDetector, ...] = (),
) -> BatchResult:
    """One attack on one batch, crafted on ``crafting`` and judged and scored on ``bundle``.

    Transfer (``crafting`` is not ``bundle``): success is misclassification by the target model,
    whatever target the attack aimed at on the substitute (001 Sec. 4.4.3; 004 Sec. 4.4).
    Combined detectors get raw features of the clean, a noisy (Feinman et al.'s, from
    ``noise_generator``, kept apart from the attack's randomness) and the adversarial input.
    ``precision`` is the attack loop's (:mod:`robench.core.precision`); everything returned is judged in fp32.
    ``known``: the scored detectors as the attacker knows them (for an attack that targets detectors).
    """
    target = AttackTarget(
        crafting.model,
        crafting.defense,
        bounds,
        detector=density.detector if density else None,
        detector_eta=density.eta if density else None,
        detector_eta_per_class=density.eta_per_class.to(x.device) if density else None,
        known_detectors=known,
        precision=precision,
    )
    if crafting is bundle:
        crafting_logits = clean.forward.logits
    else:
        with torch.no_grad():
            crafting_logits = Forward.of(crafting.model, x).logits
    targets = choose_targets(spec.target_mode, crafting_logits, y, generator)
    with PassCounter(crafting.model) as passes:
        result = attack(target, x, y, targets, generator=generator)
    if crafting is bundle:
        adv_forward, adv_pred, success = result.forward, result.predicted, result.success
    else:
        with torch.no_grad():
            adv_forward = Forward.of(bundle.model, result.x_adv)
        adv_pred = adv_forward.predicted
        success = adv_pred != y  # the crafting attack's own criterion concerns the substitute, not the target
    delta = (result.x_adv - x).flatten(1).double()
    l2 = delta.norm(dim=1).cpu().numpy()
    columns = {
        R.LABEL: y.cpu().numpy(),
        R.TARGET: targets.cpu().numpy() if targets is not None else np.full(len(y), -1),
        R.CLEAN_PRED: clean.forward.predicted.cpu().numpy(),
        R.ADV_PRED: adv_pred.cpu().numpy(),
        R.SUCCESS: success.cpu().numpy(),
        R.BEST_ATTEMPT: result.best_attempt.cpu().numpy(),
        R.CRAFTED_SUCCESS: result.success.cpu().numpy(),
        R.L2: l2,
        R.LINF: delta.abs().max(dim=1).values.cpu().numpy(),
        R.DISTORTION: l2 / np.sqrt(float(np.prod(bundle.meta.input_shape))),
        R.INPUT_RANGE: np.full(len(y), bounds.width),
        R.ATTACK_NORM: np.full(len(y), str(getattr(attack, "norm", "none")), dtype=object),
        R.ATTACK_EPS: np.full(len(y), attack_eps(attack), dtype=float),
        # the batch's passes shared evenly: an attack's records sum to its passes, whatever the batches
        R.IMAGE_PASSES: np.full(len(y), passes.images / max(len(y), 1), dtype=float),
        R.ATTACK_DETECTORS: np.full(
            len(y), aimed_detectors(attack, list(detectors), density, transfer=crafting is not bundle), dtype=object
        ),
    }
    raw: dict[str, np.ndarray] = {}
    combined = C.combined_detectors(detectors)
    if combined:
        if noise_generator is None:
            raise ValueError("a combined detector needs a noise generator for its noisy inputs")
        with torch.no_grad():
            noisy = C.noisy_like(x, result.x_adv, bounds.low, bounds.high, noise_generator)
            forwards = {"clean": clean.forward, "noisy": Forward.of(bundle.model, noisy), "adv": adv_forward}
            for name, detector in combined.items():
                raw.update(C.raw_columns(name, detector, bundle.model, bundle.defense, forwards))
    return BatchResult(columns, clean.scores, detector_scores(detectors, bundle, adv_forward), raw, passes.images)
