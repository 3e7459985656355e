"""The worst case per sample over a threat's attacks (AutoAttack's per-sample ensemble), derived from the records.

For each model x threat x crafting model with at least two attacks (corruptions excluded), one
synthetic record per test sample, under the attack label :data:`WORST_CASE`:

- the sample *survives* when its clean input is classified correctly and every attack's output
  is still classified correctly (misclassification is the criterion, as AutoAttack's, also for
  targeted attacks that missed their target); ``success`` is clean-correct and not survived, and
  ``adv_pred`` and the distortions are those of the first attack, in the threat's cascade order
  (:mod:`robench.scoring.cascade`, cheapest first), that misclassified it: ``broken_by`` names it;
- per detector, ``score_clean:D`` is the sample's clean score and ``score_adv:D`` the highest
  (most clean-looking) score among the attack outputs that misclassified it, so "misclassified
  and not flagged at the 5% false-positive threshold" holds for the synthetic record exactly
  when it holds for one of the attacks: the detector-aware worst case
  (``survival_detected``, :mod:`robench.scoring.metrics`).

The thresholds are the synthetic group's own (every sample's clean score), which equal each
attack's when every attack ran on every sample (no cascade, or a cascade's first attack). For a
combined detector (KD+BU) fitted per attack, each attack has its own score function, and the
worst case takes the scores as they are: an approximation, said in its docstring.

Everything is a pure function of the records: ``summary.csv``'s worst-case rows, their bootstrap
intervals and the paper layouts' worst-case columns all come from :func:`with_worst_case`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robench.scoring import records as R

WORST_CASE = "worst-case"  # the attack label of the derived rows; no threat may use it for an attack
_GROUP = (R.MODEL, R.THREAT, R.CRAFTED_ON)


def _order(group: pd.DataFrame) -> np.ndarray:
    """Per row, the attack's cascade position (records before cascades: the threat's own order)."""
    if R.ORDER in group:
        return group[R.ORDER].to_numpy(dtype=np.int64)
    first = {a: i for i, a in enumerate(dict.fromkeys(group[R.ATTACK]))}
    return group[R.ATTACK].map(first).to_numpy(dtype=np.int64)


def worst_case_group(group: pd.DataFrame) -> pd.DataFrame | None:
    """The worst-case records of one model x threat x crafting model's attack rows (None with fewer than two
    attacks)."""
    attacks = group[~R.corruption_mask(group)]
    if attacks[R.ATTACK].nunique() < 2:
        return None
    order = _order(attacks)
    frame = attacks.assign(_order=order, _row=np.arange(len(attacks)))
    frame = frame.sort_values([R.SAMPLE, "_order", "_row"], kind="stable")
    misclassified = frame[R.ADV_PRED].to_numpy() != frame[R.LABEL].to_numpy()
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
        R.ATTACK: WORST_CASE,
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
    for detector in R.detectors_in(attacks):
        clean = frame.groupby(R.SAMPLE, sort=True)[R.score_clean(detector)].first()  # first non-NaN per sample
        adv = frame[R.score_adv(detector)].where(misclassified)
        best = adv.groupby(frame[R.SAMPLE].to_numpy(), sort=True).max()  # NaN where no output misclassified it
        out[R.score_clean(detector)] = clean.reindex(samples).to_numpy(dtype=float)
        out[R.score_adv(detector)] = best.reindex(samples).to_numpy(dtype=float)
    return pd.DataFrame(out)


def worst_case_records(records: pd.DataFrame) -> pd.DataFrame:
    """The derived worst-case records of every model x threat x crafting model with two or more attacks."""
    records = R.with_crafted_on(records)
    records = records[records[R.ATTACK] != WORST_CASE]
    parts = [w for _, group in records.groupby(list(_GROUP), sort=False) if (w := worst_case_group(group)) is not None]
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else records.iloc[:0].assign(**{R.BROKEN_BY: pd.Series(dtype=object)})
    )


def with_worst_case(records: pd.DataFrame) -> pd.DataFrame:
    """``records`` (without any earlier worst-case rows) followed by their worst-case records."""
    records = R.with_crafted_on(records)
    plain = records[records[R.ATTACK] != WORST_CASE]
    derived = worst_case_records(plain)
    if derived.empty:
        return plain
    return pd.concat([plain, derived], ignore_index=True)


def broken_by(records: pd.DataFrame) -> pd.DataFrame:
    """Per model x threat x crafting model and sample: the first attack (cascade order) that misclassified it ('' if
    none)."""
    derived = worst_case_records(records)
    return derived[[*_GROUP, R.SAMPLE, R.BROKEN_BY]]
