"""Synthetic per-sample records shaped like the runner's, for tests of the code that reads records."""

from __future__ import annotations

import numpy as np
import pandas as pd

# One L-inf ball that holds every synthetic output (linf is uniform in [0, 1)): its worst case is "misclassified".
SYNTHETIC_BUDGETS = "linf:1.0"
SYNTHETIC_WORST_CASE = "worst-case Linf 1"


def synthetic_records(
    model: str,
    threat: str,
    attack: str,
    *,
    n: int,
    seed: int = 0,
    wrong: int,
    success_p: float,
    adv_offset: int,
    shift: float,
    corruption: bool = False,
    detectors: tuple[str, ...] = ("kd",),
) -> pd.DataFrame:
    """``n`` samples, the last ``wrong`` misclassified when clean, attacks succeeding with probability ``success_p``;
    each detector's clean scores ~ N(shift, 1) and adversarial scores ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 10
    clean_pred = np.where(np.arange(n) < n - wrong, label, (label + 1) % 10)
    success = rng.random(n) < success_p
    frame = {
        "model": model, "threat": threat, "attack": attack, "corruption": corruption, "sample": np.arange(n),
        "label": label, "target": -1, "clean_pred": clean_pred,
        "adv_pred": np.where(success, (label + adv_offset) % 10, clean_pred), "success": success,
        "l2": rng.random(n), "linf": rng.random(n), "distortion": rng.random(n) / 10, "input_range": 1.0,
        "worst_case_budgets": SYNTHETIC_BUDGETS,
    }  # fmt: skip
    for detector in detectors:
        frame[f"score_clean:{detector}"] = rng.normal(shift, 1.0, n)
        frame[f"score_adv:{detector}"] = rng.normal(0.0, 1.0, n)
    return pd.DataFrame(frame)
