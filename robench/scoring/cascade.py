"""The cascade (``--cascade``): a threat's attacks in a documented order, each on the samples still robust.

AutoAttack's per-sample ensemble (Croce & Hein 2020) runs its attacks one after the other and
attacks only the points the earlier ones did not break: the worst case per sample is the same
as running every attack on every point when "broken" can only get more true, at a fraction of
the cost when the cheap attacks break most points.

Order: :func:`cascade_order`, increasing :meth:`robench.attacks.base.Attack.cost` (estimated model
passes per image: FGSM 1, PGD-10 10, ..., C&W 5 x 1,000, C&W-wb twice that), the threat's own
order breaking ties. Every record carries its attack's position (``order``), so the worst case
(:mod:`robench.scoring.worst_case`) names the first attack that broke each sample in the same
order whether the run cascaded or not.

The first attack runs on every selected sample (so every sample has a record and the clean
accuracy and the thresholds are those of the whole run); each later attack runs on the samples
still in, re-packed into batches of the run's size. A sample leaves (:data:`CASCADE_MODES`):

- ``misclassified``: once its clean input is misclassified, or, at every budget of the threat
  (:mod:`robench.scoring.budgets`), some output misclassified it inside that budget's ball: a
  sample that only an unbounded attack broke far away stays in for the later attacks. The
  worst-case robust accuracy at each budget (``survival`` of the worst-case rows) is then what
  the full run would estimate, up to the randomness of the attacks (random starts are drawn per
  batch, and the batches differ); the detector-aware worst case (``survival_detected``) is only
  an upper bound, since a sample broken but flagged never meets a later attack. Records without
  budgets (none declared) fall back to any misclassification;
- ``undetected``: once, at every budget and for every detector the run scores during the
  attacks, some output misclassified it inside the ball without being flagged at the 5%
  false-positive threshold of the clean scores (from the first attack's records, every
  sample's). Both worst cases are then the full run's, at a smaller saving. Combined detectors
  (KD+BU) are fitted after the run and cannot be consulted: their worst-case rows of a cascaded
  run are upper bounds.

The robustness curves (:mod:`robench.scoring.curves`) of a cascaded run are upper bounds between
the budgets: a sample leaves once broken at every budget, so a later attack that would have
found a smaller distance never meets it.

Each attack's own rows in a cascaded run describe the samples it was left, not the attack
alone: records and summary rows carry ``cascade`` (the mode), and the tables say so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from robench.attacks.base import Attack
from robench.core.errors import ConfigError
from robench.core.registry import did_you_mean
from robench.detectors.base import threshold_at_fpr
from robench.scoring import records as R
from robench.scoring.budgets import Budget
from robench.scoring.metrics import FLAG_FPR

CASCADE_MODES: dict[str, str] = {
    R.NO_CASCADE: "every attack on every sample",
    "misclassified": "a sample leaves once an attack misclassifies it (exact for the worst-case robust accuracy)",
    "undetected": "a sample leaves once misclassified unflagged by every detector scored during the run "
    "(exact for both worst cases)",
}


def check_cascade(mode: object) -> str:
    """``mode`` if it is one of :data:`CASCADE_MODES`; a one-line error otherwise."""
    if not isinstance(mode, str) or mode not in CASCADE_MODES:
        raise ConfigError(
            f"cascade must be one of {', '.join(CASCADE_MODES)}, "
            f"got {mode!r}{did_you_mean(str(mode), list(CASCADE_MODES))}"
        )
    return mode


def cascade_order(attacks: Sequence[Attack]) -> list[int]:
    """Positions of ``attacks`` from cheapest to dearest (:meth:`Attack.cost`), stable on ties."""
    costs = [attack.cost() for attack in attacks]
    return sorted(range(len(attacks)), key=lambda i: (costs[i], i))


def flag_thresholds(records: pd.DataFrame, detectors: Sequence[str], fpr: float = FLAG_FPR) -> dict[str, float]:
    """Per detector, the score below which an input is flagged (:func:`robench.detectors.base.threshold_at_fpr`).

    Over the finite clean scores of one record per sample (they do not depend on the attack), the
    rule of the ``flagged_rate`` metric too; +inf (nothing flagged) for a detector with no clean score.
    """
    per_sample = records.drop_duplicates(R.SAMPLE)
    out = {}
    for detector in detectors:
        clean = torch.as_tensor(per_sample[R.score_clean(detector)].to_numpy(dtype=float, copy=True))
        clean = clean[torch.isfinite(clean)]
        out[detector] = threshold_at_fpr(clean, fpr) if clean.numel() else float("inf")
    return out


def still_in(
    records: pd.DataFrame,
    samples: np.ndarray,
    mode: str,
    detectors: Sequence[str],
    thresholds: dict[str, float],
    budgets: Sequence[Budget] = (),
) -> np.ndarray:
    """Per sample of ``samples``: whether it stays in the cascade after the attacks whose ``records`` are given.

    ``records`` are the threat's records so far (one row per attack and sample attacked);
    ``detectors`` the ones the ``undetected`` mode consults, with their ``thresholds``; ``budgets``
    the threat's (none: any misclassification counts, wherever the output lies).
    """
    check_cascade(mode)
    if mode == R.NO_CASCADE:
        return np.ones(len(samples), dtype=bool)
    sample = records[R.SAMPLE].to_numpy()
    misclassified = records[R.ADV_PRED].to_numpy() != records[R.LABEL].to_numpy()
    wrong_clean = pd.Series(records[R.CLEAN_PRED].to_numpy() != records[R.LABEL].to_numpy()).groupby(sample).any()
    balls = [b.within(records) for b in budgets] or [np.ones(len(records), dtype=bool)]
    done = None
    for inside in balls:
        hit = misclassified & inside
        broken = pd.Series(hit).groupby(sample).any()
        if mode == "undetected":
            for detector in detectors:
                with np.errstate(invalid="ignore"):
                    unflagged = hit & (records[R.score_adv(detector)].to_numpy(dtype=float) >= thresholds[detector])
                broken &= pd.Series(unflagged).groupby(sample).any()
        done = broken if done is None else done & broken
    assert done is not None
    out = wrong_clean | done
    gone = out.reindex(samples, fill_value=False).to_numpy(dtype=bool)
    return ~gone
