"""Pluggable attack objectives: per-sample losses the attacker *minimises*.

- ``ce``: cross-entropy on the test-time logits (the non-adaptive default of
  FGSM/BIM/PGD/MIM): CE(Z, t) targeted; untargeted, the numerically stable
  equivalent of -CE(Z, y), Z_y - logsumexp_{k != y} Z_k. -CE(Z, y) equals
  -softplus of minus that, so both share the gradient's direction, but -CE's
  gradient underflows to exactly zero once the softmax saturates (logit gaps of
  ~100, usual for MMC heads with C_MM = 10), which would freeze sign-gradient
  attacks and report false robustness.
- ``margin``: the C&W logit margin (Carlini & Wagner 2017, f_6), clamped at
  -kappa: max(Z_y - max_{i != y} Z_i, -kappa) untargeted,
  max(max_{i != t} Z_i - Z_t, -kappa) targeted. The "other" maximum masks the
  excluded class with -inf, so it is right when every logit is negative (GM and
  MMC logits always are; torchattacks' CW multiplies by a one-hot mask instead
  and then does nothing on such models).
- ``adaptive`` / ``adaptive-margin``: the defense's own objective (paper 004,
  App. B.4), gradient resp. margin form, see
  :meth:`robench.defenses.Defense.adaptive_objective`; the margin form is
  clamped at -kappa like ``margin``, and the likelihood term (weight
  ``likelihood_weight``) is added after the clamp, so the clamp acts on the
  margin alone (as in C&W-wb's max(margin, -kappa) + c * f_2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.defenses.base import best_other_label, stable_negative_cross_entropy

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
            return stable_negative_cross_entropy(forward.logits, y)
        return F.cross_entropy(forward.logits, targets, reduction="none")
    if name == "margin":
        return logit_margin(forward.logits, y, targets, kappa)
    if name == "adaptive":
        return target.defense.adaptive_objective(
            target.model.head, forward.z, y, target=targets, form="gradient", likelihood_weight=likelihood_weight
        )
    if name == "adaptive-margin":
        head, defense = target.model.head, target.defense
        margin = defense.adaptive_objective(head, forward.z, y, target=targets, form="margin").clamp_min(-kappa)
        if not likelihood_weight:
            return margin
        wanted = best_other_label(forward.logits, y) if targets is None else targets
        term = defense.likelihood_term(head, forward.z, wanted)
        if term is None:
            raise ConfigError(f"defense '{defense.name}' has no likelihood term to add")
        return margin + likelihood_weight * term
    raise ConfigError(f"unknown objective '{name}' (use one of {', '.join(OBJECTIVES)})")
