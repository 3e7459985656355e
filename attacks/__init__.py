"""Attacks (installed as ``robench.attacks``): a final ``__call__`` that checks and scores, subclasses write ``run``."""

from robench.attacks import corruptions, cw, cw_wb, linf  # noqa: F401  (registration side effects)
from robench.attacks import spsa  # noqa: F401  (registers spsa)
from robench.attacks import apgd  # noqa: F401  (registers apgd, apgd-l2)
from robench.attacks import foolbox_adapter, torchattacks_adapter  # noqa: F401  (resolvers for foolbox:NAME, torchattacks:NAME; import the libraries lazily)
from robench.attacks.base import ATTACKS, Attack, AttackResult, AttackTarget, Bounds

__all__ = ["ATTACKS", "Attack", "AttackResult", "AttackTarget", "Bounds"]
