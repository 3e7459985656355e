"""How models, detectors and metrics are named and ordered in tables, asked of the registered objects.

A defense's row label and place come from its class (``DEFENSES.get(name).label`` /
``.table_rank``: baselines first, GM last, as in 001 Tables 7-11), a detector's likewise, a
metric's header and direction from its :class:`~robench.scoring.metrics.Metric`. A name that is
not registered is shown upper-cased and ranked after every registered one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from robench.core.registry import Registry
from robench.defenses import DEFENSES
from robench.detectors import DETECTORS
from robench.scoring.metrics import METRICS

UP, DOWN = "\u2191", "\u2193"


def _label(registry: Registry[Any], name: str) -> str:
    return registry.get(name).label if name in registry else name.upper()


def _rank(registry: Registry[Any], name: str) -> int:
    """The registered object's ``table_rank``; names not registered come after all of them."""
    if name in registry:
        return int(registry.get(name).table_rank)
    return 1 + max((int(registry.get(n).table_rank) for n in registry.names()), default=-1)


def defense_label(name: str) -> str:
    return _label(DEFENSES, name)


def defense_rank(name: str) -> int:
    return _rank(DEFENSES, name)


def detector_label(name: str) -> str:
    return _label(DETECTORS, name)


def detector_rank(name: str) -> int:
    return _rank(DETECTORS, name)


def metric_header(metric: str) -> str:
    """``AUC (%) ↑``: the metric's label with its direction for the defense; other columns (``n``) by name."""
    if metric not in METRICS:
        return metric
    spec = METRICS.get(metric)
    return f"{spec.label} {UP if spec.higher_is_better else DOWN}"


@dataclass(frozen=True)
class ModelInfo:
    """How a model appears in tables: its label (``GM``, or ``GM (gm-a)`` when models share a defense) and dataset."""

    name: str
    label: str
    dataset: str
    rank: int  # row order: the defense's table_rank (unknown defenses last)


def model_infos(models: Sequence[str], model_meta: Mapping[str, Mapping[str, Any]]) -> dict[str, ModelInfo]:
    """Labels for ``models`` from their run.json ``model`` entries (a model without one is labelled by its name)."""
    defense = {m: str(model_meta.get(m, {}).get("defense") or "") for m in models}
    dataset = {m: str(model_meta.get(m, {}).get("dataset") or "") for m in models}
    shared = pd.Series([(defense[m], dataset[m]) for m in models]).value_counts()
    infos = {}
    for m in models:
        base = defense_label(defense[m]) if defense[m] else m
        label = f"{base} ({m})" if defense[m] and shared[(defense[m], dataset[m])] > 1 else base
        infos[m] = ModelInfo(m, label, dataset[m], defense_rank(defense[m]))
    return infos
