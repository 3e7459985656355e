"""The worst case per sample over a threat's attacks at each budget (AutoAttack's per-sample ensemble), from records.

Robust accuracy is stated at a norm and a budget (:mod:`robench.scoring.budgets`). For each model x
threat x crafting model with at least two attacks (corruptions excluded) and each budget its records
carry (``budgets``), one synthetic record per test sample, under the attack label
``worst-case <budget>`` (:func:`worst_case_label`, e.g. ``worst-case Linf 0.3``):

- the sample is *broken* at the budget when some attack output misclassifies it and lies in the
  ball (:meth:`Budget.within`, with its float tolerance), whatever the attack's own norm or budget:
  an unbounded C&W output counts where it is small enough and not elsewhere. It *survives* when
  its clean input is classified correctly and it is not broken (misclassification is the
  criterion, as AutoAttack's, also for targeted attacks that missed their target); ``success`` is
  clean-correct and not survived, and ``adv_pred`` and the distortions are those of the first
  attack, in the threat's cascade order (:mod:`robench.scoring.cascade`, cheapest first), whose
  output broke it in the ball: ``broken_by`` names it;
- per detector, ``score_clean:D`` is the sample's clean score and ``score_adv:D`` the highest
  (most clean-looking) score among the outputs that misclassified it in the ball, so
  "misclassified in the ball and not flagged at the 5% false-positive threshold" holds for the
  synthetic record exactly when it holds for one of the outputs: the detector-aware worst case
  at the budget (``survival_detected``, :mod:`robench.scoring.metrics`).

Records written before budgets existed carry none and get no worst case: a worst case with no
budget says nothing once an unbounded attack is in the threat.

The thresholds are the synthetic group's own (every sample's clean score), which equal each
attack's when every attack ran on every sample (no cascade, or a cascade's first attack). For a
combined detector (KD+BU) fitted per attack, each attack has its own score function, and the
worst case takes the scores as they are: an approximation.

Everything is a pure function of the records: ``summary.csv``'s worst-case rows, their bootstrap
intervals and the paper layouts' worst-case columns all come from :func:`with_worst_case`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robench.scoring import records as R
from robench.scoring.budgets import Budget, budgets_of, parse_budget

WORST_CASE = "worst-case"  # the prefix of the derived rows' attack labels; no threat may use it for an attack
_GROUP = (R.MODEL, R.THREAT, R.CRAFTED_ON)


def worst_case_label(budget: Budget) -> str:
    """The attack label of the worst case at ``budget``: ``worst-case Linf 0.3``."""
    return f"{WORST_CASE} {budget.label}"


def is_worst_case(label: object) -> bool:
    """Whether an attack label names a derived worst case (any budget)."""
    return isinstance(label, str) and (label == WORST_CASE or label.startswith(WORST_CASE + " "))


def worst_case_mask(records: pd.DataFrame) -> np.ndarray:
    """Per record: a derived worst-case row."""
    return records[R.ATTACK].map(is_worst_case).to_numpy(dtype=bool)


def budget_of(label: str) -> Budget | None:
    """The budget a worst-case label names (None for any other label)."""
    if not is_worst_case(label) or label == WORST_CASE:
        return None
    norm, _, eps = label[len(WORST_CASE) + 1 :].partition(" ")
    return parse_budget(f"{norm}:{eps}")


def budget_attacked(group: pd.DataFrame, budget: Budget) -> bool | None:
    """Whether some attack of one model x threat x crafting model's records attacked ``budget`` itself: a bounded
    attack in its norm at its eps, or a minimum-norm attack in its norm (which seeks the smallest distance, so every
    ball of its norm); None for records written before the attacks' norm and eps were recorded.

    A worst case at a budget no attack aimed at holds only the outputs that happened to fall inside the ball (a
    bounded attack at a smaller eps, an unbounded one's lucky outputs): an upper bound on the robust accuracy.
    """
    if R.ATTACK_NORM not in group or R.ATTACK_EPS not in group:
        return None
    attacks = group[~R.corruption_mask(group)].drop_duplicates(R.ATTACK)
    norm = attacks[R.ATTACK_NORM].to_numpy(dtype=object) == budget.norm
    eps = attacks[R.ATTACK_EPS].to_numpy(dtype=float)
    return bool((norm & (np.isnan(eps) | budget.is_at(eps))).any())


def cascade_rank(group: pd.DataFrame) -> np.ndarray:
    """Per row, the attack's cascade position (records before cascades: the threat's own order)."""
    if R.ORDER in group:
        return group[R.ORDER].to_numpy(dtype=np.int64)
    first = {a: i for i, a in enumerate(dict.fromkeys(group[R.ATTACK]))}
    return group[R.ATTACK].map(first).to_numpy(dtype=np.int64)


def worst_case_group(group: pd.DataFrame, budget: Budget) -> pd.DataFrame | None:
    """The worst-case records at ``budget`` of one model x threat x crafting model's attack rows (None with fewer
    than two attacks)."""
    attacks = group[~R.corruption_mask(group)]
    if attacks[R.ATTACK].nunique() < 2:
        return None
    order = cascade_rank(attacks)
    frame = attacks.assign(_order=order, _row=np.arange(len(attacks)))
    frame = frame.sort_values([R.SAMPLE, "_order", "_row"], kind="stable")
    misclassified = (frame[R.ADV_PRED].to_numpy() != frame[R.LABEL].to_numpy()) & budget.within(frame)
    first_rows = frame.drop_duplicates(R.SAMPLE, keep="first").set_index(R.SAMPLE)
    breaking = frame[misclassified].drop_duplicates(R.SAMPLE, keep="first").set_index(R.SAMPLE)
    samples = first_rows.index.to_numpy()
    correct = first_rows[R.CLEAN_PRED].to_numpy() == first_rows[R.LABEL].to_numpy()
    broken = pd.Index(samples).isin(breaking.index)
    survived = correct & ~broken
    label = first_rows[R.LABEL].to_numpy()
    adv_pred = np.where(survived, label, first_rows[R.CLEAN_PRED].to_numpy())
    by = np.full(len(samples), "", dtype=object)
    nan = np.full(len(samples), np.nan)
    l2, linf, distortion = nan.copy(), nan.copy(), nan.copy()
    hit = correct & broken
    rows = breaking.reindex(samples[hit])
    adv_pred[hit] = rows[R.ADV_PRED].to_numpy()
    by[broken] = breaking.reindex(samples[broken])[R.ATTACK].to_numpy(dtype=object)
    l2[hit], linf[hit], distortion[hit] = (rows[c].to_numpy(dtype=float) for c in (R.L2, R.LINF, R.DISTORTION))
    first = attacks.iloc[0]
    out: dict[str, object] = {
        R.MODEL: first[R.MODEL],
        R.THREAT: first[R.THREAT],
        R.ATTACK: worst_case_label(budget),
        R.CORRUPTION: False,
        R.CRAFTED_ON: first[R.CRAFTED_ON] if R.CRAFTED_ON in attacks else first[R.MODEL],
        R.SAMPLE: samples,
        R.LABEL: label,
        R.TARGET: np.full(len(samples), -1),
        R.CLEAN_PRED: first_rows[R.CLEAN_PRED].to_numpy(),
        R.ADV_PRED: adv_pred,
        R.SUCCESS: correct & ~survived,
        R.BEST_ATTEMPT: np.zeros(len(samples), dtype=bool),
        R.CRAFTED_SUCCESS: correct & ~survived,
        R.L2: l2,
        R.LINF: linf,
        R.DISTORTION: distortion,
        R.ORDER: np.full(len(samples), int(order.max()) + 1),
        R.CASCADE: first[R.CASCADE] if R.CASCADE in attacks else R.NO_CASCADE,
        R.BROKEN_BY: by,
    }
    if R.INPUT_RANGE in attacks:
        out[R.INPUT_RANGE] = first_rows[R.INPUT_RANGE].to_numpy(dtype=float)
    out[R.BUDGETS] = budget.spec
    out[R.IMAGE_PASSES] = np.nan
    for detector in R.detectors_in(attacks):
        clean = frame.groupby(R.SAMPLE, sort=True)[R.score_clean(detector)].first()  # first non-NaN per sample
        adv = frame[R.score_adv(detector)].where(misclassified)
        best = adv.groupby(frame[R.SAMPLE].to_numpy(), sort=True).max()  # NaN where no output misclassified it
        out[R.score_clean(detector)] = clean.reindex(samples).to_numpy(dtype=float)
        out[R.score_adv(detector)] = best.reindex(samples).to_numpy(dtype=float)
    return pd.DataFrame(out)


def worst_case_records(records: pd.DataFrame) -> pd.DataFrame:
    """The derived worst-case records of every model x threat x crafting model with two or more attacks, at each
    budget its records carry."""
    records = R.with_crafted_on(records)
    records = records[~worst_case_mask(records)]
    parts = [
        w
        for _, group in records.groupby(list(_GROUP), sort=False)
        for budget in budgets_of(group)
        if (w := worst_case_group(group, budget)) is not None
    ]
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else records.iloc[:0].assign(**{R.BROKEN_BY: pd.Series(dtype=object)})
    )


def with_worst_case(records: pd.DataFrame) -> pd.DataFrame:
    """``records`` (without any earlier worst-case rows) followed by their worst-case records."""
    records = R.with_crafted_on(records)
    plain = records[~worst_case_mask(records)]
    derived = worst_case_records(plain)
    if derived.empty:
        return plain
    return pd.concat([plain, derived], ignore_index=True)


def broken_by(records: pd.DataFrame) -> pd.DataFrame:
    """Per model x threat x crafting model, budget (the worst-case label) and sample: the first attack (cascade order)
    that misclassified it in the ball ('' if none)."""
    derived = worst_case_records(records)
    return derived[[*_GROUP, R.ATTACK, R.SAMPLE, R.BROKEN_BY]]
