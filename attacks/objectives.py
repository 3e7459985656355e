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
- ``dlr``: the difference-of-logits-ratio loss of Croce & Hein (ICML 2020,
  "Reliable evaluation of adversarial robustness with an ensemble of diverse
  parameter-free attacks"), negated because robench minimises: eq. (6)
  untargeted, (Z_y - max_{i != y} Z_i) / (Z_pi1 - Z_pi3 + 1e-12), eq. (7)
  targeted, (Z_y - Z_t) / (Z_pi1 - (Z_pi3 + Z_pi4) / 2 + 1e-12), with
  Z_pi1 >= Z_pi2 >= ... the sorted logits. It is the C&W margin divided by a
  spread of the logits, so it does not change when the logits are scaled or
  shifted (GM's -||z - mu_k||^2 / 2 logits are shifted and large). It is not
  clamped (``kappa`` does not apply): APGD, which uses it, stops each sample
  at its first adversarial iterate instead. It needs K >= 3 classes (K >= 4
  targeted).
- ``adaptive-dlr``: the defense's adaptive margin form L(z, y~) - L(z, y) resp.
  L(z, t) - L(z, y) (as ``adaptive-margin``, unclamped) divided by the same DLR
  normaliser of the test-time logits. Where the defense's attack loss is
  cross-entropy on its logits (softmax, GM, ...) that margin is Z_y - Z_y~
  resp. Z_y - Z_t, the numerator of eq. (6) resp. (7), so ``adaptive-dlr``
  equals ``dlr`` there (up to float rounding).

The normaliser is not detached: the gradient flows through it, as in eqs. (6)
and (7) and the reference implementations.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.defenses.base import best_other_label, stable_negative_cross_entropy

OBJECTIVES = ("ce", "margin", "adaptive", "adaptive-margin", "dlr", "adaptive-dlr")
DLR_OBJECTIVES = ("dlr", "adaptive-dlr")
_DLR_FLOOR = 1e-12  # Croce & Hein's constant in the denominators of eqs. (6) and (7)


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


def dlr_normaliser(logits: Tensor, targeted: bool) -> Tensor:
    """The denominator of Croce & Hein's DLR loss: Z_pi1 - Z_pi3 (eq. 6), or Z_pi1 - (Z_pi3 + Z_pi4) / 2 (eq. 7),
    + 1e-12."""
    needed = 4 if targeted else 3
    if logits.shape[1] < needed:
        raise ConfigError(
            f"the {'targeted ' if targeted else ''}DLR loss needs at least {needed} classes, got {logits.shape[1]}"
        )
    top = logits.topk(needed, dim=1).values  # sorted, largest first
    low = (top[:, 2] + top[:, 3]) / 2 if targeted else top[:, 2]
    return top[:, 0] - low + _DLR_FLOOR


def dlr_loss(logits: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
    """Croce & Hein's DLR loss, negated to be minimised (eqs. 6 and 7; see the module docstring)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    if targets is None:
        other = logits.gather(1, best_other_label(logits, y)[:, None]).squeeze(1)
        return (true - other) / dlr_normaliser(logits, targeted=False)
    wanted = logits.gather(1, targets[:, None]).squeeze(1)
    return (true - wanted) / dlr_normaliser(logits, targeted=True)


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
    if name in DLR_OBJECTIVES:
        if likelihood_weight:
            raise ConfigError(f"objective '{name}' takes no likelihood term (use 'adaptive' or 'adaptive-margin')")
        if name == "dlr":
            return dlr_loss(forward.logits, y, targets)
        # the defense's margin form L(z, wanted) - L(z, y) (minimised; for cross-entropy Z_y - Z_wanted, the
        # numerator of eqs. 6 / 7) over the DLR normaliser of the test-time logits
        margin = target.defense.adaptive_objective(target.model.head, forward.z, y, target=targets, form="margin")
        return margin / dlr_normaliser(forward.logits, targeted=targets is not None)
    raise ConfigError(f"unknown objective '{name}' (use one of {', '.join(OBJECTIVES)})")
