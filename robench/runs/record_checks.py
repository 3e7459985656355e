"""Every sanity check that reads a run's records, in one call: a single run and a suite (over all its pairs at
once) run the same checks in the same order."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from robench.runs.budget_checks import budget_flags
from robench.runs.detector_checks import detector_flags
from robench.runs.sanity import SanityResult, record_flags


def record_check_results(records: pd.DataFrame, attack_names: Mapping[tuple[str, str], str]) -> list[SanityResult]:
    """``budget-not-attacked``, ``detector-not-attacked`` and the checks of :func:`robench.runs.sanity.record_flags`
    (``attack_names``: (threat, label) -> registered attack name) over ``records``."""
    return budget_flags(records) + detector_flags(records) + record_flags(records, attack_names=attack_names)


__all__ = ["record_check_results"]
