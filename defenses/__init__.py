"""Defenses (installed as ``robench.defenses``): a head plus a training loss, registered by name."""

from robench.defenses import center, gccs, gm, lgm, mmc, mmlda, rce, softmax  # noqa: F401  (registration side effects)
from robench.defenses.base import DEFENSES, Defense, LossTerms, ObjectiveForm

__all__ = ["DEFENSES", "Defense", "LossTerms", "ObjectiveForm"]
