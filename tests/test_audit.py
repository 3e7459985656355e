"""The attack audit (robench.scoring.audit) on hand-made records with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robench.scoring import records as R
from robench.scoring.audit import (
    AUDIT_COLUMNS,
    BEST,
    IMAGE_PASSES,
    MAX_DISTANCE,
    MEDIAN_DISTANCE,
    ONLY,
    OPTIMALITY,
    SAMPLES,
    SUCCESS_RATE,
    attack_audit,
    curve_area,
    optimality,
)
from robench.scoring.budgets import Budget
from test_curves import attack

LINF = (Budget("linf", 0.3),)


def audit_of(*frames: pd.DataFrame) -> pd.DataFrame:
    return attack_audit(pd.concat(frames, ignore_index=True)).set_index([R.ATTACK, "norm"])


def test_a_dominating_attack_is_optimal_and_one_that_breaks_nothing_scores_zero():
    # four clean-correct samples; "strong" breaks each closer than "weak" would, "none" breaks nothing
    strong = attack("strong", 0, [1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], [1, 1, 1, 1], budgets=LINF)
    none = attack("none", 1, [0, 0, 0, 0], [0.5] * 4, [1, 1, 1, 1], budgets=LINF).assign(**{R.IMAGE_PASSES: 100.0})
    assert tuple(attack_audit(pd.concat([strong, none])).columns) == AUDIT_COLUMNS
    audit = audit_of(strong, none)
    assert set(audit.index.get_level_values("norm")) == {"linf"}  # the norms of the budgets only
    assert audit.loc[("strong", "linf"), OPTIMALITY] == 1.0 and audit.loc[("none", "linf"), OPTIMALITY] == 0.0
    assert audit.loc[("strong", "linf"), MAX_DISTANCE] == 0.4
    assert audit.loc[("strong", "linf"), BEST] == 4 and audit.loc[("none", "linf"), BEST] == 0
    assert audit.loc[("strong", "linf"), ONLY] == 3  # 0.4 lies outside the largest budget, 0.3
    assert audit.loc[("none", "linf"), ONLY] == 0
    assert audit.loc[("strong", "linf"), SUCCESS_RATE] == 1.0 and audit.loc[("none", "linf"), SUCCESS_RATE] == 0.0
    assert audit.loc[("strong", "linf"), MEDIAN_DISTANCE] == 0.2  # the lower median of 0.1 .. 0.4
    assert np.isnan(audit.loc[("none", "linf"), MEDIAN_DISTANCE])
    assert audit.loc[("strong", "linf"), IMAGE_PASSES] == 10.0 and audit.loc[("none", "linf"), IMAGE_PASSES] == 100.0
    assert audit.loc[("strong", "linf"), SAMPLES] == 4


def test_optimality_in_between_by_the_areas():
    # best: a = [0.1, 0.2], b = [0.4, 0.4] on two clean-correct samples; D = 0.2
    a = attack("a", 0, [1, 1], [0.1, 0.2], [1, 1], label=(0, 0), clean_pred=(0, 0), budgets=LINF)
    b = attack("b", 1, [1, 1], [0.4, 0.4], [1, 1], label=(0, 0), clean_pred=(0, 0), budgets=LINF)
    audit = audit_of(a, b)
    # A_none = 1 x 0.2; A_best = mean(0.1, 0.2) = 0.15; A_b = mean(min(0.4, 0.2)) = 0.2 -> 0
    assert audit.loc[("a", "linf"), OPTIMALITY] == pytest.approx(1.0)
    assert audit.loc[("b", "linf"), OPTIMALITY] == pytest.approx(0.0)
    c = attack("c", 2, [1, 0], [0.15, 0.0], [1, 1], label=(0, 0), clean_pred=(0, 0), budgets=LINF)
    # best [0.1, 0.2], D 0.2; A_c = mean(0.15, 0.2) = 0.175 -> (0.2 - 0.175) / (0.2 - 0.15) = 0.5
    assert audit_of(a, b, c).loc[("c", "linf"), OPTIMALITY] == pytest.approx(0.5)


def test_clean_errors_count_zero_for_everyone_and_undefined_optimality_is_nan():
    # sample 1 is misclassified when clean: distance 0 for every attack, never a "best" or "only" sample
    kw = dict(label=(0, 0, 0), clean_pred=(0, 1, 0), budgets=LINF)
    a = attack("a", 0, [1, 1, 1], [0.2, 0.3, 0.3], [1, 1, 1], **kw)
    b = attack("b", 1, [0, 1, 1], [0.2, 0.3, 0.3], [1, 1, 1], **kw)
    audit = audit_of(a, b)
    assert audit.loc[("a", "linf"), BEST] == 2 and audit.loc[("b", "linf"), BEST] == 1  # a tie counts for both
    assert audit.loc[("a", "linf"), ONLY] == 1 and audit.loc[("b", "linf"), ONLY] == 0
    assert audit.loc[("a", "linf"), OPTIMALITY] == 1.0 and audit.loc[("b", "linf"), OPTIMALITY] == pytest.approx(0.0)
    # one broken sample: its best distance is D itself, the best curve encloses what breaking nothing does
    alone = attack("a", 0, [1, 0], [0.2, 0.3], [1, 1], label=(0, 0), clean_pred=(0, 0), budgets=LINF)
    assert np.isnan(audit_of(alone).loc[("a", "linf"), OPTIMALITY])
    nothing = attack("x", 0, [0, 0], [0.2, 0.3], [1, 1], label=(0, 0), clean_pred=(0, 0), budgets=LINF)
    assert np.isnan(audit_of(nothing).loc[("x", "linf"), OPTIMALITY])
    assert np.isnan(optimality(np.array([np.inf]), np.array([np.inf]), 1.0)[0])


def test_without_budgets_every_norm_and_any_distance_counts_for_only():
    a = attack("a", 0, [1, 0, 0, 0], [0.9, 0, 0, 0], [5.0, 0, 0, 0], budgets=())
    b = attack("b", 1, [1, 1, 0, 0], [0.5, 0.8, 0, 0], [9.0, 3.0, 0, 0], budgets=())
    audit = audit_of(a, b)
    assert set(audit.index.get_level_values("norm")) == {"linf", "l2"}
    assert audit.loc[("b", "linf"), ONLY] == 1 and audit.loc[("a", "linf"), ONLY] == 0
    assert audit.loc[("a", "l2"), BEST] == 1 and audit.loc[("b", "linf"), BEST] == 2


def test_curve_area_is_the_mean_clipped_distance():
    assert curve_area(np.array([0.0, 0.1, np.inf]), 0.2) == pytest.approx(0.1)
    assert curve_area(np.array([]), 1.0) == 0.0
