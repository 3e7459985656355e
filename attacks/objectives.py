"""Pluggable attack objectives: per-sample losses the attacker *minimises*.

- ``ce``: cross-entropy on the test-time logits (the non-adaptive default of
  FGSM/BIM/PGD/MIM): -CE(Z, y) untargeted, CE(Z, t) targeted.
- ``margin``: the C&W logit margin (Carlini & Wagner 2017, f_6), clamped at
  -kappa: max(Z_y - max_{i != y} Z_i, -kappa) untargeted,
  max(max_{i != t} Z_i - Z_t, -kappa) targeted. The "other" maximum masks the
  excluded class with -inf, so it is right when every logit is negative (GM and
  MMC logits always are; torchattacks' CW multiplies by a one-hot mask instead
  and then does nothing on such models).
- ``adaptive`` / ``adaptive-margin``: the defense's own objective (paper 004,
  App. B.4), gradient resp. margin form, see
  :meth:`robench.defenses.Defense.adaptive_objective`; the margin form is
  clamped at -kappa like ``margin``.
"""

from __future__ import annotations

from torch import Tensor
import torch.nn.functional as F

from robench.defenses.base import best_other_label
from robench.detectors import Forward
from robench.errors import ConfigError

OBJECTIVES = ("ce", "margin", "adaptive", "adaptive-margin")


def logit_margin(logits: Tensor, y: Tensor, targets: Tensor | None, kappa: float = 0.0) -> Tensor:
    """C&W's f_6 on logits, clamped at -kappa (see module docstring)."""
    if targets is None:
        other = logits.gather(1, best_other_label(logits, y)[:, None]).squeeze(1)
        raw = logits.gather(1, y[:, None]).squeeze(1) - other
    else:
        masked = logits.clone()
        masked = masked.scatter(1, targets[:, None], float("-inf"))
        raw = masked.max(1).values - logits.gather(1, targets[:, None]).squeeze(1)
    return raw.clamp_min(-kappa)


def objective_value(
    name: str,
    target,  # AttackTarget; untyped to avoid an import cycle with attacks.base
    forward: Forward,
    y: Tensor,
    targets: Tensor | None,
    kappa: float = 0.0,
    likelihood_weight: float = 0.0,
) -> Tensor:
    """The per-sample objective ``name`` (one of OBJECTIVES) at ``forward``."""
    if name == "ce":
        if targets is None:
            return -F.cross_entropy(forward.logits, y, reduction="none")
        return F.cross_entropy(forward.logits, targets, reduction="none")
    if name == "margin":
        return logit_margin(forward.logits, y, targets, kappa)
    if name in ("adaptive", "adaptive-margin"):
        form = "gradient" if name == "adaptive" else "margin"
        value = target.defense.adaptive_objective(
            target.model.head, forward.z, y, target=targets, form=form, likelihood_weight=likelihood_weight
        )
        return value.clamp_min(-kappa) if form == "margin" else value
    raise ConfigError(f"unknown objective '{name}' (use one of {', '.join(OBJECTIVES)})")
