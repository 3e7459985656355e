"""The sanity check ``budget-not-attacked``: a worst case stated at a budget that no attack of its threat aimed at.

Robust accuracy at a budget is only as low as the attacks run at that budget make it. The derived
worst case at each budget (:mod:`robench.scoring.worst_case`) counts every output inside the ball,
but when no bounded attack ran at that eps in that norm and no minimum-norm attack of that norm ran
(:func:`robench.scoring.worst_case.budget_attacked`), the figure is an upper bound: the outputs in
the ball got there by chance. The check flags each such (model, threat, budget); a threat avoids it
by declaring its budgets (``ThreatModel.budgets``) or by running its bounded attacks at each budget
(``ThreatModel.per_budget``).
"""

from __future__ import annotations

import math

import pandas as pd

from robench.runs.sanity import BUDGET_NOT_ATTACKED, SanityResult
from robench.scoring import records as R
from robench.scoring.budgets import budgets_of
from robench.scoring.worst_case import budget_attacked, worst_case_label, worst_case_mask


def budget_flags(records: pd.DataFrame) -> list[SanityResult]:
    """One result per model x threat x crafting model x budget with two or more attacks (the worst case's groups);
    the result's threat is ``THREAT/worst-case <budget>``, the key of a per-row flag in the summary."""
    records = R.with_crafted_on(records)
    records = records[~worst_case_mask(records) & ~R.corruption_mask(records)]
    out = []
    for (model, threat, _), group in records.groupby([R.MODEL, R.THREAT, R.CRAFTED_ON], sort=False):
        if group[R.ATTACK].nunique() < 2:
            continue
        for budget in budgets_of(group):
            attacked = budget_attacked(group, budget)
            if attacked is None:
                continue
            label = worst_case_label(budget)
            out.append(
                SanityResult(
                    BUDGET_NOT_ATTACKED,
                    str(model),
                    f"{threat}/{label}",
                    not attacked,
                    0.0 if attacked else 1.0,
                    math.nan,
                    f"{budget.label}: "
                    + ("attacked at its eps or by a minimum-norm attack" if attacked else "no attack aimed at it"),
                )
            )
    return out
