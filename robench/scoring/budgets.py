"""Budgets: a norm and a radius eps, the ball a robust accuracy is stated in ("L-inf, eps = 0.3").

A :class:`Budget` is data: the threats declare their nominal budgets per dataset family
(:mod:`robench.specs.budgets`), a user sets others (``--budget linf:0.1``, a suite's ``budgets``),
and every record carries its run's budgets for its threat (the ``budgets`` run column, written by
:func:`format_budgets`), so the worst case at each budget (:mod:`robench.scoring.worst_case`) is a
pure function of the records.

Distances are those the records hold (``l2``, ``linf``: ||x_adv - x|| in the model's input units,
the units of the attacks' ``eps``), so a budget is in the model's input units too: for the bundled
models, pixels in [0, 1].

An attack output lies in the ball when its distance is at most eps up to float round-off:
``d <= eps * (1 + RTOL) + ATOL``. A projected attack's step of exactly eps is recorded in float32
and may exceed eps by a few ulps (the relative 1e-4 is the sanity checks' budget tolerance); the
absolute term keeps eps = 0 meaningful.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robench.core.errors import ConfigError
from robench.core.registry import did_you_mean
from robench.scoring import records as R

RTOL = 1e-4
ATOL = 1e-7
# An attack is run *at* a budget when its eps is the budget's, up to the round trip of a config's float
# (a TOML value, ``--set``, a records column): one tolerance for the worst case's flags, the threats' per-budget
# copies and the cascade's cells, so the three never disagree on which attack a budget had.
EPS_RTOL = 1e-9
EPS_ATOL = 1e-12
# The norms a budget may be stated in, and the record column that holds each one's distance.
NORM_COLUMNS: dict[str, str] = {"linf": R.LINF, "l2": R.L2}
NORM_LABELS: dict[str, str] = {"linf": "Linf", "l2": "L2"}
MAX_BUDGETS = 64  # per threat: far above any sensible list, and it bounds the derived rows


@dataclass(frozen=True)
class Budget:
    """A norm (``linf`` or ``l2``) and a radius ``eps`` >= 0 in the model's input units."""

    norm: str
    eps: float

    def __post_init__(self) -> None:
        if self.norm not in NORM_COLUMNS:
            raise ConfigError(
                f"budget norm must be one of {', '.join(NORM_COLUMNS)}, got {self.norm!r}"
                f"{did_you_mean(str(self.norm), list(NORM_COLUMNS))}"
            )
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not math.isfinite(self.eps):
            raise ConfigError(f"budget eps must be a finite number, got {self.eps!r}")
        if self.eps < 0:
            raise ConfigError(f"budget eps must be >= 0, got {self.eps!r}")
        object.__setattr__(self, "eps", float(self.eps))

    @property
    def label(self) -> str:
        """How tables name it: ``Linf 0.3``, ``L2 2``."""
        return f"{NORM_LABELS[self.norm]} {self.eps:g}"

    @property
    def spec(self) -> str:
        """The text :func:`parse_budget` reads back exactly: ``linf:0.3``."""
        return f"{self.norm}:{self.eps!r}"

    def sort_key(self) -> tuple[int, float]:
        """L-inf first, then L2; smaller eps first."""
        return (list(NORM_COLUMNS).index(self.norm), self.eps)

    def contains(self, distances: np.ndarray) -> np.ndarray:
        """Per distance: inside the ball (NaN is outside)."""
        with np.errstate(invalid="ignore"):
            return np.asarray(distances, dtype=float) <= self.eps * (1 + RTOL) + ATOL

    def is_at(self, eps: np.ndarray | float) -> np.ndarray:
        """Per eps (an attack's radius in this budget's norm): the attack was run at this budget (NaN is not)."""
        with np.errstate(invalid="ignore"):
            return np.isclose(np.asarray(eps, dtype=float), self.eps, rtol=EPS_RTOL, atol=EPS_ATOL)

    def within(self, records: pd.DataFrame) -> np.ndarray:
        """Per record: its attack output lies in the ball."""
        return self.contains(records[NORM_COLUMNS[self.norm]].to_numpy(dtype=float))


def parse_budget(text: object) -> Budget:
    """``linf:0.3``, ``l2:2``, ``linf:8/255`` -> a :class:`Budget`; one-line ConfigError otherwise."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"a budget is NORM:EPS (e.g. linf:0.3, l2:2.0, linf:8/255), got {text!r}")
    norm, _, value = text.strip().partition(":")
    norm = norm.strip().lower().replace("-", "")
    value = value.strip()
    try:
        if "/" in value:
            num, _, den = value.partition("/")
            eps = float(num) / float(den)
        else:
            eps = float(value)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"budget {text!r}: eps must be a number or a fraction such as 8/255") from None
    return Budget(norm, eps)


def parse_budgets(texts: Iterable[object]) -> tuple[Budget, ...]:
    """Several budgets, sorted (L-inf first, then L2; eps ascending) and without repeats."""
    budgets = sorted({parse_budget(t) if not isinstance(t, Budget) else t for t in texts}, key=Budget.sort_key)
    if len(budgets) > MAX_BUDGETS:
        raise ConfigError(f"{len(budgets)} budgets; robench takes at most {MAX_BUDGETS} per threat")
    return tuple(budgets)


def format_budgets(budgets: Sequence[Budget]) -> str:
    """The ``budgets`` record column's text: ``linf:0.1;linf:0.3;l2:2.0`` ('' for none)."""
    return ";".join(b.spec for b in sorted(budgets, key=Budget.sort_key))


def budgets_of(records: pd.DataFrame) -> tuple[Budget, ...]:
    """The budgets the records carry (the union over their rows; none for records written before budgets)."""
    if R.BUDGETS not in records or records.empty:
        return ()
    texts = {t for cell in pd.unique(records[R.BUDGETS].astype(str)) for t in cell.split(";") if t}
    return parse_budgets(texts)


def norms_of(budgets: Iterable[Budget]) -> list[str]:
    """The norms of ``budgets``, in :data:`NORM_COLUMNS` order."""
    present = {b.norm for b in budgets}
    return [n for n in NORM_COLUMNS if n in present]


def distance(records: pd.DataFrame, norm: str) -> np.ndarray:
    """Per record: the distance of its attack output in ``norm``."""
    return records[NORM_COLUMNS[norm]].to_numpy(dtype=float)
