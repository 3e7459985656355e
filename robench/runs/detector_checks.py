"""The sanity check ``detector-not-attacked``: a detector-aware figure for a detector no attack of its threat aimed at.

A detector's AUC, flagged rate and "still correct or flagged" (``survival_detected``, also on the
worst-case rows) measure it against the attacks the threat ran. When none of them descended on that
detector, the attacker was oblivious of it, and an attacker who knows it does better: Carlini &
Wagner 2017 ("Adversarial examples are not easily detected") bypassed ten detection methods, mostly
by adding the detector to the attack's loss, and Tramer et al. 2020 ("On adaptive attacks to
adversarial example defenses") broke thirteen published defenses by aiming at each one. A figure
measured against an oblivious attacker is therefore an upper bound on the detector's robustness.

The records say which scored detectors each attack descended on (``attack_detectors``,
:meth:`robench.attacks.base.Attack.attacked_detectors`). Per model x threat x crafting model, over
its attack records (corruptions and derived worst-case rows are no attacks), each scored detector
that no attack named is flagged. A threat of corruptions only (noise, rotation) has no attacker and
is not judged. Records written before the column existed are taken as detector-blind.

Each result's threat is :func:`detector_key` (``THREAT/detector:NAME``): the summary
(:func:`robench.runs.output.with_sanity_flags`) attaches it to every row of that threat whose
detector is NAME, the per-attack and the worst-case rows alike, and to no row of another detector.

A worst case at a budget is a figure of the attacks run at that budget. A detector that some attack
of the threat targets, but none at a budget (a bounded attack in the budget's norm at its eps, or
an unbounded one of its norm: :func:`robench.scoring.worst_case.budget_attacked`), is flagged there
alone: the result's threat is ``THREAT/worst-case BUDGET/detector:NAME``, which the summary attaches
to that worst-case row of that detector.
"""

from __future__ import annotations

import pandas as pd

from robench.runs.sanity import DETECTOR_NOT_ATTACKED, SanityResult
from robench.scoring import records as R
from robench.scoring.budgets import budgets_of
from robench.scoring.worst_case import budget_attacked, worst_case_label, worst_case_mask

DETECTOR_KEY = "detector:"  # between a threat's name and a detector's in the key of a per-detector flag


def detector_key(threat: str, detector: str) -> str:
    """The threat of a per-detector sanity result: ``THREAT/detector:NAME`` (the summary rows of that threat and
    detector carry its flag)."""
    return f"{threat}/{DETECTOR_KEY}{detector}"


def targeted_detectors(records: pd.DataFrame) -> set[str]:
    """The detectors some record's attack descended on (``attack_detectors``; none without the column)."""
    if R.ATTACK_DETECTORS not in records.columns:
        return set()
    names = records[R.ATTACK_DETECTORS].dropna().astype(str).unique()
    return {d.strip() for value in names for d in value.split(",") if d.strip()}


def detector_flags(records: pd.DataFrame) -> list[SanityResult]:
    """One result per model x threat x scored detector of the threat's attack records (a corruption-only threat has
    none); flagged when, for some crafting model, no attack crafted on it descended on the detector.

    value = the share of the threat's crafting models whose attacks left the detector alone (0 or 1 with one
    crafting model), threshold 0; the result's threat is :func:`detector_key`.
    """
    records = R.with_crafted_on(records)
    records = records[~worst_case_mask(records) & ~R.corruption_mask(records)]
    blind = R.ATTACK_DETECTORS not in records.columns
    # (model, threat) -> detector -> crafting model -> the attacks that descended on the detector
    seen: dict[tuple[str, str], dict[str, dict[str, list[str]]]] = {}
    for (model, threat, crafted_on), group in records.groupby([R.MODEL, R.THREAT, R.CRAFTED_ON], sort=False):
        per_detector = seen.setdefault((str(model), str(threat)), {})
        aimed = {str(attack): targeted_detectors(rows) for attack, rows in group.groupby(R.ATTACK, sort=False)}
        for detector in R.detectors_in(R.scored_columns(group)):
            attacks = [attack for attack, detectors in aimed.items() if detector in detectors]
            per_detector.setdefault(detector, {})[str(crafted_on)] = attacks
    out = []
    for (model, threat), per_detector in seen.items():
        for detector, by_crafting in per_detector.items():
            missed = [c for c, attacks in by_crafting.items() if not attacks]
            attackers = list(dict.fromkeys(a for attacks in by_crafting.values() for a in attacks))
            share = len(missed) / len(by_crafting)
            if not missed:
                detail = f"{detector}: attacked by {', '.join(attackers)}"
            else:
                where = "" if missed == [model] else f" crafted on {', '.join(missed)}"
                detail = (
                    f"{detector}: no attack{where} descended on it; its detector-aware figures are upper bounds"
                    + (" (the records predate attack_detectors: read as detector-blind)" if blind else "")
                )
            out.append(
                SanityResult(
                    DETECTOR_NOT_ATTACKED, model, detector_key(threat, detector), bool(missed), share, 0.0, detail
                )
            )
    return out + _budget_flags(records, seen)


def _budget_flags(
    records: pd.DataFrame, seen: dict[tuple[str, str], dict[str, dict[str, list[str]]]]
) -> list[SanityResult]:
    """Per model x threat x budget x detector that the threat's attacks target (every crafting model's), flagged
    where none of those attacks ran at the budget (module docstring); only the flagged ones are returned."""
    out = []
    for (model, threat), group in records.groupby([R.MODEL, R.THREAT], sort=False):
        for detector, by_crafting in seen.get((str(model), str(threat)), {}).items():
            attackers = {a for attacks in by_crafting.values() for a in attacks}
            if not attackers or not all(by_crafting.values()):  # the threat-wide flag covers every row already
                continue
            aimed = group[group[R.ATTACK].astype(str).isin(attackers)]
            for budget in budgets_of(group):
                if budget_attacked(aimed, budget) is not False:  # attacked there, or records without norm and eps
                    continue
                label = worst_case_label(budget)
                detail = (
                    f"{detector}: no attack on it ran at {budget.label} (attacked by {', '.join(sorted(attackers))} "
                    f"elsewhere); its {label} figures are upper bounds"
                )
                key = detector_key(f"{threat}/{label}", detector)
                out.append(SanityResult(DETECTOR_NOT_ATTACKED, str(model), key, True, 1.0, 0.0, detail))
    return out
