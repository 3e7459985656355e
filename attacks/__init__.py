"""Attacks (installed as ``robench.attacks``): a final ``__call__`` that checks and scores, subclasses write ``run``."""

# Imported for their registrations (the library modules register the foolbox:NAME and torchattacks:NAME resolvers,
# which import the libraries lazily).
from robench.attacks import (  # noqa: F401 - registration side effects
    apgd,  # noqa: F401  (registers apgd, apgd-l2)
    corruptions,
    cw,
    cw_wb,
    ddn,  # noqa: F401  (registers ddn)
    fmn,  # noqa: F401  (registers fmn-l2, fmn-linf)
    foolbox_adapter,
    joint,  # noqa: F401  (registers orthogonal-pgd, orthogonal-pgd-l2, selective-pgd, selective-pgd-l2)
    linf,
    spsa,  # noqa: F401  (registers spsa)
    torchattacks_adapter,
)
from robench.attacks.base import ATTACKS, Attack, AttackResult, AttackTarget, Bounds

__all__ = ["ATTACKS", "Attack", "AttackResult", "AttackTarget", "Bounds"]
