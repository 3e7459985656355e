"""Fit (or load) a model's detectors and calibrate them on held-out clean data.

The clean test split is cut in two halves: the first sets each detector's
threshold at the requested false-positive rate, the second measures the
false-positive rate that threshold really gives, so the number is out-of-sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from robench.checkpoints.bundle import ModelBundle
from robench.core.data import Split
from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.detectors import DETECTORS, Detector, fit_or_load, flagged, threshold_at_fpr


def build_detectors(
    names: Sequence[str], family: str, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Detector]:
    overrides = overrides or {}
    unknown = set(overrides) - set(names)
    if unknown:
        raise ConfigError(f"parameters given for detector(s) not selected: {', '.join(sorted(unknown))}")
    return {name: DETECTORS.get(name).for_dataset(family, overrides.get(name)) for name in names}


def applicable_detectors(bundle: ModelBundle, requested: Sequence[str] | None) -> list[str]:
    """The requested detectors (errors if one does not apply; an empty list: none), or, for None,
    every one that applies without adversarial data."""
    if requested is not None:
        return list(requested)
    names = []
    for name in DETECTORS.names():
        detector = DETECTORS.get(name)()
        if name == "kd+bu":  # needs adversarial examples to fit its combiner
            continue
        try:
            detector.check_applicable(bundle.model, bundle.defense)
        except ConfigError:
            continue
        names.append(name)
    return names


def clean_scores(
    bundle: ModelBundle,
    detector: Detector,
    split: Split,
    device: torch.device,
    batch_size: int = 250,
    score: Callable[[Forward], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The detector's scores of ``split``'s inputs (CPU, float32), batched, without gradients; ``score`` replaces
    ``detector.score`` (e.g. KD leaving a training input's own kernel out)."""
    score = score or (lambda forward: detector.score(bundle.model, bundle.defense, forward))
    scores = []
    with torch.no_grad():
        for i in range(0, len(split), batch_size):
            forward = Forward.of(bundle.model, split.x[i : i + batch_size].to(device))
            scores.append(score(forward).float().cpu())
    return torch.cat(scores) if scores else torch.zeros(0)


def calibrate(
    bundle: ModelBundle,
    detectors: Mapping[str, Detector],
    train: Split,
    test: Split,
    device: torch.device,
    fpr: float,
    use_cache: bool = True,
    train_name: str | None = None,
) -> pd.DataFrame:
    """One row per detector: whether its fit was reused, its threshold at ``fpr``, and the held-out FPR it gives."""
    # A seeded permutation, because the splits are ordered by class and scores depend on the class.
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    calibration, heldout = order[: len(test) // 2], order[len(test) // 2 :]
    rows = []
    for name, detector in detectors.items():
        reused = fit_or_load(detector, bundle, train, device, use_cache=use_cache, train_name=train_name)
        scores = clean_scores(bundle, detector, test, device)
        threshold = threshold_at_fpr(scores[calibration], fpr)
        rows.append(
            {
                "detector": name,
                "fit": "cached" if reused else ("fitted" if detector.needs_fit else "none needed"),
                "threshold": threshold,
                "target_fpr": fpr,
                "heldout_fpr": float(flagged(scores[heldout], threshold).float().mean()),
                "clean_score_median": float(scores.median()),
            }
        )
    return pd.DataFrame(rows)
