"""Sanity flags: cheap signs that an evaluation overstates robustness (gradient masking, broken attacks).

After Carlini et al. 2019, "On Evaluating Adversarial Robustness" (Sec. 5
checklist), and the checks AutoAttack (Croce & Hein 2020) runs before it
reports a number. Two kinds of check:

- model probes (:func:`probe_model`), run once per model on a small batch:
  ``gradient-zero-or-nan``, ``nondeterministic-output``, ``unbounded-budget-not-reached``;
- record checks (:func:`record_flags`), pure functions of the runner's
  per-sample records: ``black-box-beats-white-box``, ``iterative-weaker-than-single-step``.

A flag says "look here", not "the defense is broken": each result carries the
measured value and the threshold it was compared with. Record checks that do
not apply (a model with no black-box records, a threat with no FGSM) produce no
result at all, so a missing row means "not checked", never "passed".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from robench.attacks.base import AttackTarget
from robench.attacks.linf import PGD
from robench.attacks.objectives import OBJECTIVES, objective_value
from robench.detectors import Forward
from robench.errors import ConfigError
from robench.metrics import SUMMARY_KEYS, success_rate, with_crafted_on
from robench.registry import Registry

# Probe thresholds. A few exactly-zero gradients can be honest (a saturated
# ReLU network on a blank input), so zero gradients are tolerated up to 5%.
ZERO_GRADIENT_FRACTION = 0.05
# Relative to max(1, max |logit|): well above cuDNN's run-to-run float noise, far below any random layer.
NONDETERMINISM_RTOL = 1e-4
UNBOUNDED_MIN_SUCCESS = 0.95
UNBOUNDED_STEPS = 100
UNBOUNDED_STEP_FRACTION = 1 / 20  # PGD step as a fraction of the input range: 20 steps cross it

# Record checks identify attacks by threat name and attack label (case-insensitive prefix).
WHITE_BOX_THREATS = ("white-box", "semi-white-box")
BLACK_BOX_THREATS = ("black-box", "spsa")
SINGLE_STEP_PREFIXES = ("FGSM",)
ITERATIVE_PREFIXES = ("BIM", "PGD", "MIM")  # ILCM is left out: its least-likely targets are harder than FGSM's random ones
_BUDGET_RTOL = 1e-4  # float32 round-off in the recorded linf of a step of exactly eps


@dataclass(frozen=True)
class SanityCheck:
    """A check's description, for the README and ``robench`` listings."""

    name: str
    kind: str  # "model" (needs the model: probe_model) or "records" (record_flags)
    description: str
    citation: str


@dataclass(frozen=True)
class SanityResult:
    """One check on one (model, threat): ``flagged`` when ``value`` crosses ``threshold`` (see the check)."""

    check: str
    model: str
    threat: str
    flagged: bool
    value: float
    threshold: float
    detail: str


SANITY_CHECKS: Registry[SanityCheck] = Registry("sanity check")
for _check in (
    SanityCheck(
        "gradient-zero-or-nan",
        "model",
        f"input gradient of the attack objective is exactly zero for more than {ZERO_GRADIENT_FRACTION:.0%} of samples, or non-finite for any",
        "Carlini et al. 2019 Sec. 5 (gradient masking); Athalye et al. 2018 (shattered gradients)",
    ),
    SanityCheck(
        "nondeterministic-output",
        "model",
        "two identical eval-mode forward passes give different logits (randomised model: attacks need EOT)",
        "Carlini et al. 2019 Sec. 5 (randomness); Athalye et al. 2018 (stochastic gradients)",
    ),
    SanityCheck(
        "unbounded-budget-not-reached",
        "model",
        f"PGD whose L-inf budget is the whole input range succeeds on fewer than {UNBOUNDED_MIN_SUCCESS:.0%} of clean-correct samples",
        "Carlini et al. 2019 Sec. 5: unbounded attacks must reach 100% success",
    ),
    SanityCheck(
        "black-box-beats-white-box",
        "records",
        "a black-box or gradient-free attack succeeds more often than every white-box attack on the same model",
        "Carlini et al. 2019 Sec. 5: gradient-free and transfer attacks should not outperform white-box ones",
    ),
    SanityCheck(
        "iterative-weaker-than-single-step",
        "records",
        "an iterative L-inf attack (BIM, PGD, MIM) succeeds less often than FGSM with at most its budget",
        "Carlini et al. 2019 Sec. 5: iterative attacks should be stronger than single-step attacks",
    ),
):
    SANITY_CHECKS.register(_check.name, _check)

TABLE_COLUMNS = ["model", "threat", "check", "flagged", "value", "threshold", "detail"]


# ---------------------------------------------------------------- model probes


def probe_model(
    target: AttackTarget,
    x: Tensor,
    y: Tensor,
    *,
    generator: torch.Generator,
    objective: str = "adaptive",
    model_name: str = "",
    threat: str = "",
    unbounded_steps: int = UNBOUNDED_STEPS,
) -> list[SanityResult]:
    """Run the three model probes on one batch (x inside ``target.bounds``, labels y).

    The model is put in eval mode and its mode is restored afterwards. The
    only randomness is PGD's random start, drawn from ``generator``; a model
    that draws from the global RNG itself (dropout left on) does so under
    ``fork_rng``, so the caller's global RNG state is unchanged.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown sanity objective '{objective}' (use one of {', '.join(OBJECTIVES)})")
    if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError(f"sanity probes need a non-empty batch x (N x C x H x W) and labels y (N), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not target.bounds.contains(x):
        raise ConfigError(f"sanity probe inputs fall outside the model's bounds ({target.bounds.low}, {target.bounds.high})")
    device = target.device
    x, y = x.detach().to(device), y.to(device)
    model = target.model
    was_training = model.training
    rng_devices = [device] if device.type == "cuda" else []
    try:
        model.eval()
        with torch.random.fork_rng(devices=rng_devices):
            values = [
                _gradient_probe(target, x, y, objective),
                _determinism_probe(target, x),
                _unbounded_probe(target, x, y, objective, generator, unbounded_steps),
            ]
    finally:
        model.train(was_training)
    return [SanityResult(check=c, model=model_name, threat=threat, flagged=f, value=v, threshold=t, detail=d) for c, f, v, t, d in values]


_Probe = tuple[str, bool, float, float, str]


def _gradient_probe(target: AttackTarget, x: Tensor, y: Tensor, objective: str) -> _Probe:
    """Fraction of samples whose input gradient of the per-sample objective is all zero or non-finite."""
    x_in = x.clone().requires_grad_(True)
    loss = objective_value(objective, target, Forward.of(target.model, x_in), y, None)
    grad = None
    if loss.requires_grad:
        # The objective is per-sample and the model is in eval mode, so d(sum)/dx_i is sample i's own gradient.
        (grad,) = torch.autograd.grad(loss.sum(), x_in, allow_unused=True)
    if grad is None:  # the output does not depend on x at all: every gradient is zero
        grad = torch.zeros_like(x)
    flat = grad.flatten(1)
    nonfinite = ~torch.isfinite(flat).all(1)
    zero = (flat == 0).all(1)
    fraction = float((nonfinite | zero).float().mean())
    n_nonfinite, n_zero, n = int(nonfinite.sum()), int(zero.sum()), x.shape[0]
    flagged = n_nonfinite > 0 or fraction > ZERO_GRADIENT_FRACTION
    detail = f"objective '{objective}': {n_zero}/{n} all-zero, {n_nonfinite}/{n} non-finite input gradients"
    return "gradient-zero-or-nan", flagged, fraction, ZERO_GRADIENT_FRACTION, detail


def _determinism_probe(target: AttackTarget, x: Tensor) -> _Probe:
    """Max |logit difference| between two identical eval-mode passes, against a tolerance scaled to the logits."""
    with torch.no_grad():
        first = Forward.of(target.model, x).logits
        second = Forward.of(target.model, x).logits
    # NaN in the same place in both passes is not nondeterminism (the gradient probe reports it).
    same = (first == second) | (torch.isnan(first) & torch.isnan(second))
    diff = torch.where(same, torch.zeros_like(first), (first - second).abs().nan_to_num(nan=math.inf))
    finite = first[torch.isfinite(first)]
    scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    tolerance = NONDETERMINISM_RTOL * scale
    value = float(diff.max())
    detail = f"max |logit difference| {value:.3g} between two eval-mode passes (tolerance {tolerance:.3g})"
    return "nondeterministic-output", value > tolerance, value, tolerance, detail


def _unbounded_probe(
    target: AttackTarget, x: Tensor, y: Tensor, objective: str, generator: torch.Generator, steps: int
) -> _Probe:
    """Success rate of untargeted PGD with eps = the whole input range, on the clean-correct samples."""
    width = target.bounds.width
    correct = target.predict(x) == y
    n = int(correct.sum())
    if n == 0:
        return ("unbounded-budget-not-reached", False, math.nan, UNBOUNDED_MIN_SUCCESS, "not evaluated: no clean-correct sample in the batch")
    attack = PGD(eps=width, step=width * UNBOUNDED_STEP_FRACTION, steps=steps, random_start=True, objective=objective)
    result = attack(target, x[correct], y[correct], generator=generator)
    rate = float(result.success.float().mean())
    detail = f"PGD-{steps} ({objective}), eps = input range {width:g}: {int(result.success.sum())}/{n} clean-correct samples fooled"
    return "unbounded-budget-not-reached", rate < UNBOUNDED_MIN_SUCCESS, rate, UNBOUNDED_MIN_SUCCESS, detail


# -------------------------------------------------------------- record checks


def record_flags(records: pd.DataFrame, margin: float = 0.02, budgets: Mapping[str, float] | None = None) -> list[SanityResult]:
    """The record checks on a runner records frame (any number of models and threats).

    Success rates are ``metrics.success_rate`` (clean-correct samples only);
    corruption rows are ignored. An attack counts as targeted when its success
    means "classified as the target": some record has ``target >= 0`` and
    ``success == (adv_pred == target)`` on all of those. Transfer attacks
    crafted with targets but judged by misclassification on the evaluated
    model (the runner's black-box threat) therefore count as untargeted. Only
    attacks of the same kind (untargeted with untargeted, targeted with
    targeted) are compared.

    - ``black-box-beats-white-box``: one result per model and white-box threat
      (``WHITE_BOX_THREATS``) when the model also has black-box records
      (``BLACK_BOX_THREATS``, all such threats pooled). value = best black-box
      success rate - best success rate in the white-box threat, over the kinds
      present on both sides (the larger gap); flagged when value > ``margin``.
    - ``iterative-weaker-than-single-step``: one result per model and threat
      holding an FGSM attack and an iterative one (label prefixes
      ``SINGLE_STEP_PREFIXES`` / ``ITERATIVE_PREFIXES``) of the same kind whose
      budget is at least FGSM's. value = the largest FGSM - iterative success
      gap; flagged when value > ``margin``. ``budgets`` maps attack labels to
      their eps; a label not in it gets the largest per-sample ``linf`` in its
      records (the budget it used, a lower bound of the one it had).

    Checks with nothing to compare produce no result.
    """
    if not math.isfinite(margin) or margin < 0:
        raise ConfigError(f"sanity margin must be a finite number >= 0, got {margin}")
    needed = {"model", "threat", "attack", "label", "clean_pred", "adv_pred", "success", "target", "linf"}
    missing = needed - set(records.columns)
    if missing:
        raise ConfigError(f"records lack the column(s) {', '.join(sorted(missing))} that sanity checks need")
    stats = _attack_stats(records, budgets or {})
    return _black_box_flags(stats, margin) + _iterative_flags(stats, margin)


def _attack_stats(records: pd.DataFrame, budgets: Mapping[str, float]) -> pd.DataFrame:
    """One row per (model, threat, attack): success rate, targeted, budget (attacks with a defined rate only)."""
    if "corruption" in records.columns:
        records = records[~records["corruption"].astype(bool)]
    rows = []
    for (model, threat, attack, _crafted_on), group in with_crafted_on(records).groupby(SUMMARY_KEYS, sort=False):
        budget = budgets.get(str(attack), float(group["linf"].max()))
        rows.append(
            {
                "model": model,
                "threat": threat,
                "attack": str(attack),
                "rate": success_rate(group),
                "targeted": _judged_targeted(group),
                "budget": float(budget),
            }
        )
    stats = pd.DataFrame(rows, columns=["model", "threat", "attack", "rate", "targeted", "budget"])
    return stats[stats["rate"].notna()]


def _judged_targeted(group: pd.DataFrame) -> bool:
    """True when the attack's success is "classified as the target" (see record_flags)."""
    aimed = group[group["target"] >= 0]
    return bool(len(aimed)) and bool((aimed["success"].astype(bool) == (aimed["adv_pred"] == aimed["target"])).all())


def _kind(targeted: bool) -> str:
    return "targeted" if targeted else "untargeted"


def _best(stats: pd.DataFrame) -> pd.Series:
    return stats.loc[stats["rate"].idxmax()]


def _black_box_flags(stats: pd.DataFrame, margin: float) -> list[SanityResult]:
    results = []
    for model, mine in stats.groupby("model", sort=False):
        black = mine[mine["threat"].isin(BLACK_BOX_THREATS)]
        for threat, white in mine[mine["threat"].isin(WHITE_BOX_THREATS)].groupby("threat", sort=False):
            worst: tuple[float, str] | None = None
            for targeted in (False, True):
                bb, wb = black[black["targeted"] == targeted], white[white["targeted"] == targeted]
                if bb.empty or wb.empty:
                    continue
                b, w = _best(bb), _best(wb)
                gap = float(b["rate"] - w["rate"])
                detail = (
                    f"{_kind(targeted)}: best black-box {b['attack']} ({b['threat']}) {b['rate']:.3f} "
                    f"vs best {threat} {w['attack']} {w['rate']:.3f}"
                )
                if worst is None or gap > worst[0]:
                    worst = (gap, detail)
            if worst is not None:
                results.append(SanityResult("black-box-beats-white-box", str(model), str(threat), worst[0] > margin, worst[0], margin, worst[1]))
    return results


def _has_prefix(labels: pd.Series, prefixes: Sequence[str]) -> pd.Series:
    return labels.str.upper().str.startswith(tuple(p.upper() for p in prefixes))


def _iterative_flags(stats: pd.DataFrame, margin: float) -> list[SanityResult]:
    single = stats[_has_prefix(stats["attack"], SINGLE_STEP_PREFIXES)]
    iterative = stats[_has_prefix(stats["attack"], ITERATIVE_PREFIXES)]
    # Every (FGSM, iterative) pair of the same model, threat and kind; then keep those whose budget covers FGSM's.
    pairs = single.merge(iterative, on=["model", "threat", "targeted"], suffixes=("_fgsm", "_iter"))
    pairs = pairs[pairs["budget_iter"] >= pairs["budget_fgsm"] * (1 - _BUDGET_RTOL)]
    results = []
    for (model, threat), group in pairs.groupby(["model", "threat"], sort=False):
        gaps = group["rate_fgsm"] - group["rate_iter"]
        row = group.loc[gaps.idxmax()]
        gap = float(gaps.max())
        detail = (
            f"{_kind(bool(row['targeted']))}: {row['attack_iter']} (eps {row['budget_iter']:.4g}) {row['rate_iter']:.3f} "
            f"vs {row['attack_fgsm']} (eps {row['budget_fgsm']:.4g}) {row['rate_fgsm']:.3f}"
        )
        results.append(SanityResult("iterative-weaker-than-single-step", str(model), str(threat), gap > margin, gap, margin, detail))
    return results


# ---------------------------------------------------------------------- tables


def sanity_table(results: Sequence[SanityResult]) -> pd.DataFrame:
    """Results as a frame with ``TABLE_COLUMNS``, one row per result, in the order given."""
    rows = [{column: getattr(r, column) for column in TABLE_COLUMNS} for r in results]
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return table.astype({"flagged": bool, "value": float, "threshold": float})


def flags_by_model_threat(table: pd.DataFrame) -> dict[tuple[str, str], str]:
    """``(model, threat) -> "check-a,check-b"``: the flagged checks, sorted by name; "" for a pair with none flagged.

    Pairs absent from the table were not checked; look them up with ``.get(key, "")``.
    """
    flags: dict[tuple[str, str], str] = {}
    for (model, threat), group in table.groupby(["model", "threat"], sort=False):
        flags[(str(model), str(threat))] = ",".join(sorted(set(group.loc[group["flagged"].astype(bool), "check"])))
    return flags
