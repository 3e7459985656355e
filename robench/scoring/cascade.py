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
still in *for that attack*, re-packed into batches of the run's size.

What a later attack is run for (:func:`cascade_aims`) is a set of *cells* of the worst case: a
budget's ball, alone ("misclassified inside the L-inf 0.3 ball") or with a detector ("misclassified
inside it and not flagged by KD" at the 5% false-positive threshold of the clean scores, from the
first attack's records, every sample's). A cell is *done* for a sample once some output of the
threat so far lies in it; an attack meets the samples for which one of its cells is not done and
whose clean input is classified right. Its budgets (:func:`aimed_budgets`) are those whose ball
holds its own (PGD at L-inf 0.1 counts for L-inf 0.1, 0.2 and 0.3), every budget of its norm for an
unbounded attack (C&W: the L2 budgets), and every budget when its norm has none. Its detectors
depend on the mode (:data:`CASCADE_MODES`):

- ``misclassified``: none. The worst-case robust accuracy at each budget (``survival`` of the
  worst-case rows) is the full run's, up to the randomness of the attacks (random starts are drawn
  per batch, and the batches differ) and to the outputs an attack lays inside a ball it is not run
  for; the detector-aware worst case (``survival_detected``) is only an upper bound, since a sample
  broken but flagged never meets a later attack. Records without budgets (none declared) use one
  cell, anywhere;
- ``undetected``: per budget, the live detectors (scored during the attacks) that the attack
  targets, and those that no attack of the threat run at that budget (at its eps; an unbounded
  attack at every budget of its norm) targets: an attack that knows KD
  (selective PGD on KD, C&W-wb) is run for KD's cells, and a detector-blind one stands in only for
  the detectors the threat leaves unattacked (in the white-box threat, none: every scored detector
  has its joint attacks at every budget). Combined detectors (KD+BU) are fitted after the run and
  cannot be judged: an attack that targets one meets every sample classified right, and their
  worst-case rows of a cascaded run are upper bounds. In a transfer threat the attacks know only
  the substitute's detectors, so every attack there is run for every live detector's cells.

In both modes, a sample the cascaded run counts as surviving a cell met every attack run for that
cell (and no output of the run fell in it): each worst-case cell lies between the full run's
(every attack's outputs) and that of the attacks run for it alone, and with deterministic attacks
it equals the full run's where the other attacks lay no output in the cell (tested). run.json's
``execution.cascade_aims`` lists each later attack's cells.

The robustness curves (:mod:`robench.scoring.curves`) of a cascaded run are upper bounds between
the budgets: an attack meets a sample only while one of its cells is open, so a later attack that
would have found a smaller distance may never meet it.

Each attack's own rows in a cascaded run describe the samples it was left, not the attack
alone: records and summary rows carry ``cascade`` (the mode), and the tables say so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from robench.attacks.base import Attack, attack_eps
from robench.core.errors import ConfigError
from robench.core.registry import did_you_mean
from robench.detectors.base import threshold_at_fpr
from robench.scoring import records as R
from robench.scoring.budgets import ATOL, RTOL, Budget
from robench.scoring.metrics import FLAG_FPR

CASCADE_MODES: dict[str, str] = {
    R.NO_CASCADE: "every attack on every sample",
    "misclassified": "an attack meets the samples not yet misclassified inside the balls it is run for "
    "(the worst-case robust accuracy)",
    "undetected": "an attack meets the samples not yet misclassified unflagged, inside the balls it is run for, "
    "by the detectors it is run for: those it targets, and those no attack of the threat targets there "
    "(both worst cases, within the bounds of the module docstring)",
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


Cell = tuple[Budget | None, str | None]  # (budget, detector): None budget = anywhere, None detector = misclassified


@dataclass(frozen=True)
class Aim:
    """What a later attack of a cascade is run for: the worst-case cells it may still change (module docstring).

    ``cells`` are (budget, detector) pairs: ``(Linf 0.3, None)`` is "misclassified inside the L-inf 0.3 ball",
    ``(Linf 0.3, "kd")`` "misclassified inside it and not flagged by KD"; a budget of None is "anywhere" (a threat
    without budgets). ``untracked`` names the detectors it targets that the cascade cannot judge (combined ones,
    fitted after the run): for those it runs on every sample whose clean input is classified right.
    """

    cells: tuple[Cell, ...]
    untracked: tuple[str, ...] = ()


def aimed_budgets(attack: Attack, budgets: Sequence[Budget]) -> tuple[Budget, ...]:
    """The budgets an attack's outputs are meant for: those of its norm whose ball holds its own (eps at least its
    eps), every budget of its norm for an unbounded attack (C&W, FMN, DDN); when no budget of its norm holds its
    ball, every budget of its norm, and when its norm has none, every budget (its outputs then count only where
    they happen to fall)."""
    norm = getattr(attack, "norm", "none")
    same = tuple(b for b in budgets if b.norm == norm)
    eps = attack_eps(attack)
    if math.isfinite(eps):
        holding = tuple(b for b in same if b.eps >= eps * (1 - RTOL) - ATOL)
        return holding or same or tuple(budgets)
    return same or tuple(budgets)


def attacked_budgets(attack: Attack, budgets: Sequence[Budget]) -> tuple[Budget, ...]:
    """The budgets an attack is run *at*: for a bounded attack, those of its norm with its own eps; for an unbounded
    one, every budget of its norm; none otherwise (an attack of another norm, or one larger than the budget)."""
    norm = getattr(attack, "norm", "none")
    eps = attack_eps(attack)
    if math.isfinite(eps):
        return tuple(b for b in budgets if b.norm == norm and b.is_at(eps))
    return tuple(b for b in budgets if b.norm == norm) if norm != "none" else ()


def cascade_aims(
    attacks: Sequence[Attack], mode: str, budgets: Sequence[Budget], live: Sequence[str], scored: Sequence[str]
) -> list[Aim]:
    """Per attack of a threat, the cells a cascade in ``mode`` runs it for (module docstring).

    ``live`` are the detectors scored during the attacks (whose flags the cascade can judge), ``scored`` every
    detector the run scores (combined ones too; none for a transfer threat, whose attacks know only the
    substitute's detectors). ``misclassified``: the plain cells of the attack's budgets. ``undetected``: also, per
    budget, the cells of the live detectors the attack targets, and the cells of the live detectors that no attack
    of the threat targets when run at that budget (:func:`attacked_budgets`; a detector-blind attack then stands
    for the attacks the threat lacks).
    """
    check_cascade(mode)
    aimed = [aimed_budgets(attack, budgets) or (None,) for attack in attacks]
    targets = [attack.attacked_detectors(scored) for attack in attacks]
    # a detector counts as attacked at a budget only by an attack run at that budget (attacked_budgets)
    covered = {(b, d) for attack, ds in zip(attacks, targets) for b in attacked_budgets(attack, budgets) for d in ds}
    aims = []
    for bs, ds in zip(aimed, targets):
        cells: list[Cell] = [(b, None) for b in bs]
        if mode == "undetected":
            cells += [(b, d) for b in bs for d in live if d in ds or (b, d) not in covered]
        aims.append(Aim(tuple(cells), tuple(d for d in ds if d not in live) if mode == "undetected" else ()))
    return aims


def cell_label(cell: Cell) -> str:
    """How run.json names a cell: ``Linf 0.3`` (misclassified inside the ball), ``Linf 0.3/kd`` (and not flagged by
    KD), ``anywhere`` for no budget."""
    budget, detector = cell
    where = budget.label if budget is not None else "anywhere"
    return where if detector is None else f"{where}/{detector}"


def still_in(records: pd.DataFrame, samples: np.ndarray, aim: Aim, thresholds: dict[str, float]) -> np.ndarray:
    """Per sample of ``samples``: whether an attack with ``aim`` runs on it after the attacks of ``records``.

    ``records`` are the threat's records so far (one row per attack and sample attacked); ``thresholds`` the flag
    thresholds of the detectors ``aim`` names (:func:`flag_thresholds`). A sample stays unless its clean input is
    misclassified or every cell of ``aim`` is done for it: some output misclassified it inside the cell's ball
    (anywhere for no budget) and, for a detector's cell, was not flagged by that detector.
    """
    # every record knows the clean prediction, a corruption's too (it may be the only one so far: a noise threat
    # listed first in a threat file) ...
    wrong_clean = (
        pd.Series(records[R.CLEAN_PRED].to_numpy() != records[R.LABEL].to_numpy())
        .groupby(records[R.SAMPLE].to_numpy())
        .any()
    )
    # ... but a corruption's outputs break no sample in the worst case (robench.scoring.worst_case): no cell closes
    records = records[~R.corruption_mask(records)]
    sample = records[R.SAMPLE].to_numpy()
    misclassified = records[R.ADV_PRED].to_numpy() != records[R.LABEL].to_numpy()
    if aim.untracked:
        done = pd.Series(False, index=wrong_clean.index)
    else:
        done = pd.Series(True, index=wrong_clean.index)
        balls: dict[Budget | None, np.ndarray] = {}
        for budget, detector in aim.cells:
            if budget not in balls:
                balls[budget] = misclassified & (
                    budget.within(records) if budget is not None else np.ones(len(records), dtype=bool)
                )
            hit = balls[budget]
            if detector is not None:
                with np.errstate(invalid="ignore"):
                    hit = hit & (records[R.score_adv(detector)].to_numpy(dtype=float) >= thresholds[detector])
            done &= pd.Series(hit).groupby(sample).any().reindex(done.index, fill_value=False)
    gone = (wrong_clean | done).reindex(samples, fill_value=False).to_numpy(dtype=bool)
    return ~gone
