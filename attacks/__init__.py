"""Attacks (installed as ``robench.attacks``): a final ``__call__`` that checks and scores, subclasses write ``run``."""

from robench.attacks import corruptions, cw, linf  # noqa: F401  (registration side effects)
from robench.attacks.base import ATTACKS, Attack, AttackResult, AttackTarget, Bounds

__all__ = ["ATTACKS", "Attack", "AttackResult", "AttackTarget", "Bounds"]
