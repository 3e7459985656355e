"""Sanity flags: cheap signs that an evaluation overstates robustness (gradient masking, broken attacks).

After Carlini et al. 2019, "On Evaluating Adversarial Robustness" (Sec. 5
checklist), and the checks AutoAttack (Croce & Hein 2020) runs before it
reports a number. Two kinds of check:

- model probes (:func:`probe_model`), run once per model on a small batch:
  ``gradient-zero-or-nan``, ``nondeterministic-output``, ``unbounded-budget-not-reached``,
  and, on the points a bounded PGD reached, ``gradient-vanishes-under-attack`` and
  ``hidden-activity-collapses``;
- record checks (:func:`record_flags`), pure functions of the runner's
  per-sample records: ``black-box-beats-white-box``, ``iterative-weaker-than-single-step``,
  ``library-attack-beats-threat``, ``outputs-pile-into-one-class``.

The last three model probes and the pile-up check catch gradient masking by
*collapse*: a model whose hidden ReLU units all switch off under a small
perturbation maps every attacked input to the same feature vector (the
biases'), so its logits go flat, its input gradient vanishes and its outputs
fall into one sink class. Untargeted attacks then "succeed" (the sink is the
wrong class for most inputs) while targeted ones cannot reach their target,
and a detector scores the collapse, not the attack.

A flag says "look here", not "the defense is broken": each result carries the
measured value and the threshold it was compared with. Record checks that do
not apply (a model with no black-box records, a threat with no FGSM) produce no
result at all, so a missing row means "not checked", never "passed".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from robench.attacks.base import ATTACKS, Attack, AttackTarget
from robench.attacks.linf import PGD
from robench.attacks.objectives import OBJECTIVES, objective_value
from robench.attacks.targets import choose_targets
from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.core.registry import Registry
from robench.scoring import records as R
from robench.scoring.metrics import metric_value
from robench.scoring.worst_case import worst_case_mask
from robench.specs.threats import THREATS

# Probe thresholds. A few exactly-zero gradients can be honest (a saturated
# ReLU network on a blank input), so zero gradients are tolerated up to 5%.
ZERO_GRADIENT_FRACTION = 0.05
# Relative to max(1, max |logit|): well above cuDNN's run-to-run float noise, far below any random layer.
NONDETERMINISM_RTOL = 1e-4
UNBOUNDED_MIN_SUCCESS = 0.95
# The targeted unbounded run (random targets) is held to less: 100 steps do not carry every sample of an honest model
# to an arbitrary class (the bundled GM model: 57/64), while a collapsing one stops far below (first RCE bundle: 31/63).
UNBOUNDED_MIN_TARGETED_SUCCESS = 0.8
UNBOUNDED_STEPS = 100
UNBOUNDED_STEP_FRACTION = 1 / 20  # PGD step as a fraction of the input range: 20 steps cross it
# Collapse probes: each point an untargeted and a targeted PGD (random targets, COLLAPSE_STEPS steps of eps / 8,
# eps = COLLAPSE_EPS_FRACTION of the input range; 0.25 of [0, 1] is near MNIST's usual 0.3) reached is compared with
# the clean input it started from. A point has *collapsed* when its input gradient of the logit margin is below
# GRADIENT_COLLAPSE_FACTOR x the clean input's, or its fraction of active units of the last ReLU layer (without a
# ReLU module: its feature norm |z|) below ACTIVITY_COLLAPSE_FACTOR x the clean input's. The value is the share of
# collapsed points, flagged above COLLAPSED_SHARE. A collapse is all or nothing per point (the units are off or
# they are not), so the share separates well: on the first RCE bundles 40% (gradient) and 32% (activity) of the
# points had collapsed, on the bundled softmax, GM and MMC models none.
COLLAPSE_EPS_FRACTION = 0.25
COLLAPSE_STEPS = 20
GRADIENT_COLLAPSE_FACTOR = 0.1
ACTIVITY_COLLAPSE_FACTOR = 0.25
COLLAPSED_SHARE = 0.1
# outputs-pile-into-one-class: among a *targeted* attack's misclassified outputs that missed their target, the share
# of the most frequent predicted class. Targets are drawn at random, so an honest attack's misses spread over the
# classes (with K = 10 about 1/9 each; the bundled softmax, GM and MMC models: 0.36, 0.45, 0.29 on PGD-10-tar);
# the first RCE bundle put 0.81 of them in its sink class 9. Untargeted attacks are not checked: they head for the
# nearest other class, which can be one class for most inputs honestly (GM's untargeted PGD: 0.53 in class 2; the
# collapsed RCE's was lower, 0.48). Needs at least PILE_UP_MIN_OUTPUTS such outputs (fewer are noise) and
# PILE_UP_MIN_CLASSES classes (with 2 or 3 classes one class holds half of the misses by chance).
PILE_UP_SHARE = 0.6
PILE_UP_MIN_OUTPUTS = 20
PILE_UP_MIN_CLASSES = 5

_BUDGET_RTOL = 1e-4  # float32 round-off in the recorded L-inf distance of a step of exactly eps

# The kinds of check: a probe of the model itself, a pure function of the records, or of the run's configuration.
MODEL_PROBE, RECORD_CHECK, CONFIG_CHECK = "model", "records", "config"


@dataclass(frozen=True)
class SanityCheck:
    """A check's description, for the README and ``robench`` listings."""

    name: str
    kind: str  # MODEL_PROBE (needs the model: probe_model) or RECORD_CHECK (record_flags)
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


BUDGET_NOT_ATTACKED = "budget-not-attacked"  # robench.runs.budget_checks
DETECTOR_NOT_ATTACKED = "detector-not-attacked"  # robench.runs.detector_checks
SANITY_CHECKS: Registry[SanityCheck] = Registry("sanity check", base=SanityCheck)
for _check in (
    SanityCheck(
        BUDGET_NOT_ATTACKED,
        RECORD_CHECK,
        "a worst case is stated at a budget that no attack of its threat aimed at (no bounded attack at that eps "
        "in that norm, no minimum-norm attack of that norm): an upper bound on the robust accuracy",
        "Carlini et al. 2019 Sec. 4 (state the threat model; report robustness at each budget an attack targets)",
    ),
    SanityCheck(
        DETECTOR_NOT_ATTACKED,
        RECORD_CHECK,
        "a detector's detector-aware figures (AUC, flagged rate, still correct or flagged, also at the worst case) "
        "come from a threat none of whose attacks descended on that detector: an upper bound on its robustness",
        'Carlini & Wagner 2017 ("Adversarial examples are not easily detected"); Tramer et al. 2020 ("On adaptive '
        'attacks to adversarial example defenses")',
    ),
    SanityCheck(
        "gradient-zero-or-nan",
        MODEL_PROBE,
        f"input gradient of the attack objective is exactly zero for more than {ZERO_GRADIENT_FRACTION:.0%} "
        "of samples, or non-finite for any",
        "Carlini et al. 2019 Sec. 5 (gradient masking); Athalye et al. 2018 (shattered gradients)",
    ),
    SanityCheck(
        "nondeterministic-output",
        MODEL_PROBE,
        "two identical eval-mode forward passes give different logits (randomised model: attacks need EOT)",
        "Carlini et al. 2019 Sec. 5 (randomness); Athalye et al. 2018 (stochastic gradients)",
    ),
    SanityCheck(
        "unbounded-budget-not-reached",
        MODEL_PROBE,
        f"PGD whose L-inf budget is the whole input range succeeds on fewer than {UNBOUNDED_MIN_SUCCESS:.0%} "
        f"of clean-correct samples untargeted, or fewer than {UNBOUNDED_MIN_TARGETED_SUCCESS:.0%} targeted at "
        "random classes (with the whole range any class is reachable)",
        "Carlini et al. 2019 Sec. 5: unbounded attacks must reach 100% success",
    ),
    SanityCheck(
        "gradient-vanishes-under-attack",
        MODEL_PROBE,
        f"at more than {COLLAPSED_SHARE:.0%} of the points PGD with eps = {COLLAPSE_EPS_FRACTION:g} x the input "
        "range reached (untargeted and targeted), the input gradient of the logit margin (largest minus "
        f"second-largest logit) is below {GRADIENT_COLLAPSE_FACTOR:g} x its norm at the clean input",
        "Carlini et al. 2019 Sec. 5 (gradient masking: vanishing gradients); Athalye et al. 2018",
    ),
    SanityCheck(
        "hidden-activity-collapses",
        MODEL_PROBE,
        f"at more than {COLLAPSED_SHARE:.0%} of the points PGD with eps = {COLLAPSE_EPS_FRACTION:g} x the input "
        "range reached, the fraction of active units of the last ReLU layer (without one: the feature norm |z|) "
        f"is below {ACTIVITY_COLLAPSE_FACTOR:g} x the clean input's: the features collapse to the biases",
        "Carlini et al. 2019 Sec. 5 (gradient masking); Athalye et al. 2018",
    ),
    SanityCheck(
        "outputs-pile-into-one-class",
        RECORD_CHECK,
        f"more than {PILE_UP_SHARE:.0%} of a targeted attack's misclassified outputs that missed their target fall "
        f"into one class (at least {PILE_UP_MIN_OUTPUTS} such outputs and {PILE_UP_MIN_CLASSES} classes)",
        "Carlini et al. 2019 Sec. 5 (gradient masking: inputs collapse to a sink class)",
    ),
    SanityCheck(
        "black-box-beats-white-box",
        RECORD_CHECK,
        "a black-box or gradient-free attack succeeds more often than every white-box attack on the same model",
        "Carlini et al. 2019 Sec. 5: gradient-free and transfer attacks should not outperform white-box ones",
    ),
    SanityCheck(
        "attacker-estimator-differs",
        CONFIG_CHECK,
        "a white-box attack descends on a kernel density other than the scored KD detector's "
        "(bandwidth, points per class and which ones, seed), or the run scores no KD",
        "001 Sec. 4.4.2: the white-box attacker knows the detector it is scored by; Carlini & Wagner 2017b",
    ),
    SanityCheck(
        "library-attack-beats-threat",
        RECORD_CHECK,
        "the peer libraries' attacks (torchattacks:NAME, foolbox:NAME) together leave fewer samples robust "
        "than the threat's own "
        "attacks together, by more than the bootstrap half-width of the libraries' robust accuracy",
        "Croce & Hein 2020 (AutoAttack: a threat model's own attacks should not be weaker than the standard ensemble); "
        "Carlini et al. 2019 Sec. 5",
    ),
    SanityCheck(
        "iterative-weaker-than-single-step",
        RECORD_CHECK,
        "an iterative L-inf attack (BIM, PGD, MIM) succeeds less often than FGSM with at most its budget",
        "Carlini et al. 2019 Sec. 5: iterative attacks should be stronger than single-step attacks",
    ),
):
    SANITY_CHECKS.register(_check)

TABLE_COLUMNS = [R.MODEL, R.THREAT, "check", "flagged", "value", "threshold", "detail"]


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
    """Run the five model probes on one batch (x inside ``target.bounds``, labels y).

    The collapse probes (``gradient-vanishes-under-attack``, ``hidden-activity-collapses``)
    compare the points a bounded PGD reached with the clean inputs it started from.
    The model is put in eval mode and its mode is restored afterwards. The
    only randomness is PGD's random starts and the random targets, drawn from ``generator``; a model
    that draws from the global RNG itself (dropout left on) does so under
    ``fork_rng``, so the caller's global RNG state is unchanged.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown sanity objective '{objective}' (use one of {', '.join(OBJECTIVES)})")
    if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError(
            f"sanity probes need a non-empty batch x (N x C x H x W) and labels y (N), "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if not target.bounds.contains(x):
        raise ConfigError(
            f"sanity probe inputs fall outside the model's bounds ({target.bounds.low}, {target.bounds.high})"
        )
    device = target.device
    x, y = x.detach().to(device), y.to(device)
    model = target.model
    was_training = model.training
    rng_devices = [device] if device.type == "cuda" else []
    try:
        model.eval()
        with torch.random.fork_rng(devices=rng_devices):
            values = [_gradient_probe(target, x, y, objective), _determinism_probe(target, x)]
            values.append(_unbounded_probe(target, x, y, objective, generator, unbounded_steps))
            clean, reached = _attacked_points(target, x, y, objective, generator)
            values += [
                _vanishing_gradient_probe(target, clean, reached),
                _activity_probe(target, clean, reached),
            ]
    finally:
        model.train(was_training)
    return [
        SanityResult(check=c, model=model_name, threat=threat, flagged=f, value=v, threshold=t, detail=d)
        for c, f, v, t, d in values
    ]


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
    """Success rates of untargeted and of targeted PGD (random targets) with eps = the whole input range, on the
    clean-correct samples. value = the targeted rate when it is below UNBOUNDED_MIN_TARGETED_SUCCESS (threshold
    that), else the untargeted rate (threshold UNBOUNDED_MIN_SUCCESS).

    The targeted run is what catches a collapsing model: its sink class is the wrong class for most inputs, so
    untargeted attacks succeed by falling into it, but with the whole input range every target is reachable
    (an image of the target class is inside the budget) and an honest attack gets there."""
    width = target.bounds.width
    correct = target.predict(x) == y
    n = int(correct.sum())
    if n == 0:
        return (
            "unbounded-budget-not-reached",
            False,
            math.nan,
            UNBOUNDED_MIN_SUCCESS,
            "not evaluated: no clean-correct sample in the batch",
        )
    attack = PGD(eps=width, step=width * UNBOUNDED_STEP_FRACTION, steps=steps, random_start=True, objective=objective)
    x_ok, y_ok = x[correct], y[correct]
    untargeted = attack(target, x_ok, y_ok, generator=generator)
    with torch.no_grad():
        logits = Forward.of(target.model, x_ok).logits
    targets = choose_targets("random", logits, y_ok, generator)
    aimed = attack(target, x_ok, y_ok, targets, generator=generator)
    rate, threshold = float(untargeted.success.float().mean()), UNBOUNDED_MIN_SUCCESS
    targeted_rate = float(aimed.success.float().mean())
    if targeted_rate < UNBOUNDED_MIN_TARGETED_SUCCESS:
        rate, threshold = targeted_rate, UNBOUNDED_MIN_TARGETED_SUCCESS
    detail = (
        f"PGD-{steps} ({objective}), eps = input range {width:g}: untargeted {int(untargeted.success.sum())}/{n}, "
        f"targeted (random targets) {int(aimed.success.sum())}/{n} clean-correct samples reached"
    )
    return "unbounded-budget-not-reached", rate < threshold, rate, threshold, detail


def _attacked_points(
    target: AttackTarget, x: Tensor, y: Tensor, objective: str, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The clean-correct inputs (twice) and the points an untargeted and a targeted PGD (random targets) with
    eps = COLLAPSE_EPS_FRACTION of the input range reached from them: what the collapse probes compare.

    A bounded budget, not the unbounded probe's: with the whole range (and a random start anywhere in it) an
    attack lands far from the data, where a collapsing model's units are as active as anywhere; the collapse is
    on the way, at the budgets evaluations use."""
    correct = target.predict(x) == y
    x_ok, y_ok = x[correct], y[correct]
    if x_ok.shape[0] == 0:
        return x_ok, x_ok
    eps = target.bounds.width * COLLAPSE_EPS_FRACTION
    attack = PGD(eps=eps, step=eps / 8, steps=COLLAPSE_STEPS, random_start=True, objective=objective)
    untargeted = attack(target, x_ok, y_ok, generator=generator)
    with torch.no_grad():
        logits = Forward.of(target.model, x_ok).logits
    aimed = attack(target, x_ok, y_ok, choose_targets("random", logits, y_ok, generator), generator=generator)
    return torch.cat([x_ok, x_ok]), torch.cat([untargeted.x_adv, aimed.x_adv])


def _margin_gradient_norms(target: AttackTarget, x: Tensor) -> Tensor:
    """Per sample: the L2 norm of the input gradient of the logit margin (largest minus second-largest logit).

    The margin, not the attack's loss: a loss saturates once an attack has succeeded (its gradient then
    vanishes honestly), while the margin between the top logits stays as steep as the network is."""
    x_in = x.clone().requires_grad_(True)
    logits = Forward.of(target.model, x_in).logits
    top = logits.topk(2, dim=1).values
    margin = top[:, 0] - top[:, 1]
    grad = None
    if margin.requires_grad:
        (grad,) = torch.autograd.grad(margin.sum(), x_in, allow_unused=True)
    if grad is None:
        return torch.zeros(x.shape[0], device=x.device)
    return grad.flatten(1).norm(dim=1).nan_to_num(nan=0.0)


def _vanishing_gradient_probe(target: AttackTarget, clean: Tensor, reached: Tensor) -> _Probe:
    """Share of the points the bounded attacks reached (:func:`_attacked_points`) whose margin-gradient norm is
    below GRADIENT_COLLAPSE_FACTOR x their clean input's; flagged above COLLAPSED_SHARE."""
    name = "gradient-vanishes-under-attack"
    if clean.shape[0] == 0:
        return name, False, math.nan, COLLAPSED_SHARE, "not evaluated: no clean-correct sample in the batch"
    at_clean, at_attacked = _margin_gradient_norms(target, clean), _margin_gradient_norms(target, reached)
    usable = at_clean > 0  # a zero clean gradient is gradient-zero-or-nan's to report
    if not bool(usable.any()):
        return name, False, math.nan, COLLAPSED_SHARE, "not evaluated: the margin gradient is zero at every clean input"
    collapsed = at_attacked[usable] < GRADIENT_COLLAPSE_FACTOR * at_clean[usable]
    value = float(collapsed.float().mean())
    detail = (
        f"{int(collapsed.sum())}/{int(usable.sum())} attacked points (PGD, eps {COLLAPSE_EPS_FRACTION:g} x range) "
        f"with |grad_x (logit margin)| below {GRADIENT_COLLAPSE_FACTOR:g} x the clean input's; median "
        f"{float(at_attacked.median()):.3g} attacked vs {float(at_clean.median()):.3g} clean"
    )
    return name, value > COLLAPSED_SHARE, value, COLLAPSED_SHARE, detail


_RELU_LIKE = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.LeakyReLU, torch.nn.ELU, torch.nn.GELU, torch.nn.SiLU)


def _hidden_activity(target: AttackTarget, x: Tensor) -> tuple[Tensor | None, Tensor]:
    """Per sample: the fraction of active (> 0) units of the last ReLU-like module the pass ran (None when it ran
    none: a functional activation is not seen), and the feature norm |z|."""
    last: list[Tensor] = []

    def keep(module: torch.nn.Module, inputs: object, output: Tensor) -> None:
        last[:] = [output.detach().flatten(1).clone()]

    hooks = [m.register_forward_hook(keep) for m in target.model.modules() if isinstance(m, _RELU_LIKE)]
    try:
        with torch.no_grad():
            z = Forward.of(target.model, x).z
    finally:
        for hook in hooks:
            hook.remove()
    active = (last[0] > 0).float().mean(1) if last else None
    return active, z.flatten(1).norm(dim=1)


def _activity_probe(target: AttackTarget, clean: Tensor, reached: Tensor) -> _Probe:
    """Share of the points the bounded attacks reached (:func:`_attacked_points`) whose fraction of active units of
    the last ReLU layer (for a model without a ReLU module: feature norm |z|) is below ACTIVITY_COLLAPSE_FACTOR x
    their clean input's; flagged above COLLAPSED_SHARE."""
    name = "hidden-activity-collapses"
    if clean.shape[0] == 0:
        return name, False, math.nan, COLLAPSED_SHARE, "not evaluated: no clean-correct sample in the batch"
    active_clean, norm_clean = _hidden_activity(target, clean)
    active_reached, norm_reached = _hidden_activity(target, reached)
    norms = f"median |z| {float(norm_reached.median()):.3g} attacked vs {float(norm_clean.median()):.3g} clean"
    if active_clean is not None and active_reached is not None and active_clean.shape == active_reached.shape:
        at_clean, at_attacked, what = active_clean, active_reached, "active units of the last ReLU layer"
        levels = f"mean {float(at_attacked.mean()):.1%} active attacked vs {float(at_clean.mean()):.1%} clean; {norms}"
    else:
        at_clean, at_attacked, what = norm_clean, norm_reached, "feature norm |z| (no ReLU module seen)"
        levels = norms
    usable = at_clean > 0
    if not bool(usable.any()):
        return name, False, math.nan, COLLAPSED_SHARE, f"not evaluated: no {what} at any clean input"
    collapsed = at_attacked[usable] < ACTIVITY_COLLAPSE_FACTOR * at_clean[usable]
    value = float(collapsed.float().mean())
    detail = (
        f"{int(collapsed.sum())}/{int(usable.sum())} attacked points (PGD, eps {COLLAPSE_EPS_FRACTION:g} x range) "
        f"with {what} below {ACTIVITY_COLLAPSE_FACTOR:g} x the clean input's; {levels}"
    )
    return name, value > COLLAPSED_SHARE, value, COLLAPSED_SHARE, detail


# -------------------------------------------------------------- record checks


def record_flags(
    records: pd.DataFrame,
    margin: float = 0.02,
    budgets: Mapping[str, float] | None = None,
    attack_names: Mapping[tuple[str, str], str] | None = None,
) -> list[SanityResult]:
    """The record checks on a runner records frame (any number of models and threats).

    Success rates are the ``success_rate`` metric (clean-correct samples only);
    corruption rows are ignored. An attack counts as targeted when its success
    means "classified as the target": some record has a target class and every
    such record succeeded exactly when it was classified as its target. Transfer
    attacks crafted with targets but judged by misclassification on the
    evaluated model (the runner's black-box threat) therefore count as
    untargeted. Only attacks of the same kind (untargeted with untargeted,
    targeted with targeted) are compared.

    Attacks are told apart by the registered objects, not by their names: a
    record's threat is looked up in ``THREATS`` and its attack label in that
    threat's attacks (:func:`registered_attack`).

    - ``black-box-beats-white-box``: one result per model and threat whose
      attacks take the model's gradients (access white-box or grey-box) when
      the model also has records of black-box threats (all of them pooled);
      threats that are not registered are not checked. value = best black-box
      success rate - best success rate in the white-box threat, over the kinds
      present on both sides (the larger gap); flagged when value > ``margin``.
    - ``iterative-weaker-than-single-step``: one result per model and threat
      holding a single-step attack (FGSM) and an iterative one of its norm
      (L-inf: BIM, PGD, MIM; the attack classes' ``single_step``,
      ``iterative`` and ``norm``) of the same kind and target mode whose
      budget is at least FGSM's; ILCM's least-likely targets are harder than
      FGSM's random ones, so it is never paired with FGSM. value = the largest
      FGSM - iterative success gap; flagged when value > ``margin``.
      ``budgets`` maps attack labels to their eps; a label not in it gets the
      largest per-sample L-inf distance in its records (the budget it used, a
      lower bound of the one it had).

    - ``library-attack-beats-threat``: see :func:`library_flags`; ``attack_names`` maps
      (threat, label) to the registered attack name for attacks a run added (run.json's
      threats, :func:`attack_names_of`).
    - ``outputs-pile-into-one-class``: see :func:`pile_up_flags`.

    Checks with nothing to compare produce no result.
    """
    if not math.isfinite(margin) or margin < 0:
        raise ConfigError(f"sanity margin must be a finite number >= 0, got {margin}")
    needed = {R.MODEL, R.THREAT, R.ATTACK, R.LABEL, R.CLEAN_PRED, R.ADV_PRED, R.SUCCESS, R.TARGET, R.LINF}
    missing = needed - set(records.columns)
    if missing:
        raise ConfigError(f"records lack the column(s) {', '.join(sorted(missing))} that sanity checks need")
    stats = _attack_stats(records, budgets or {})
    return (
        _black_box_flags(stats, margin)
        + _iterative_flags(stats, margin)
        + library_flags(records, attack_names)
        + pile_up_flags(records)
    )


def pile_up_flags(records: pd.DataFrame) -> list[SanityResult]:
    """``outputs-pile-into-one-class``: one result per model x threat with a targeted attack that has at least
    PILE_UP_MIN_OUTPUTS misclassified outputs on clean-correct samples that missed their target. value = the
    largest share of one predicted class among those outputs, over the threat's targeted attacks; flagged above
    PILE_UP_SHARE. Untargeted attacks are not checked (see PILE_UP_SHARE). Corruptions and the worst-case rows are
    left out; models with fewer than PILE_UP_MIN_CLASSES classes (the largest label or prediction seen + 1)
    are not checked.
    """
    records = records[~R.corruption_mask(records)]
    records = records[~worst_case_mask(records)]
    results = []
    for (model, threat), group in records.groupby([R.MODEL, R.THREAT], sort=False):
        mine = records[records[R.MODEL] == model]
        classes = int(max(mine[R.LABEL].max(), mine[R.CLEAN_PRED].max(), mine[R.ADV_PRED].max())) + 1
        if classes < PILE_UP_MIN_CLASSES:
            continue
        worst: tuple[float, str] | None = None
        for attack, rows in group.groupby(R.ATTACK, sort=False):
            if not R.targeted(rows).any():
                continue
            wrong = R.clean_correct(rows) & ~R.robust(rows) & R.targeted(rows) & ~R.hit_target(rows)
            outputs = rows.loc[wrong, R.ADV_PRED]
            if len(outputs) < PILE_UP_MIN_OUTPUTS:
                continue
            counts = outputs.value_counts()
            share = float(counts.iloc[0]) / len(outputs)
            if worst is None or share > worst[0]:
                detail = (
                    f"{attack}: {int(counts.iloc[0])}/{len(outputs)} misclassified outputs (off target) "
                    f"in class {counts.index[0]}"
                )
                worst = (share, detail)
        if worst is not None:
            results.append(
                SanityResult(
                    "outputs-pile-into-one-class",
                    str(model),
                    str(threat),
                    worst[0] > PILE_UP_SHARE,
                    worst[0],
                    PILE_UP_SHARE,
                    worst[1],
                )
            )
    return results


def estimator_flags(
    model: str, densities: Sequence[Mapping[str, object]], white_box_threats: Sequence[str]
) -> list[SanityResult]:
    """``attacker-estimator-differs``: one result per attack of a white-box threat that used an attacker density.

    ``densities`` is run.json's ``attacker_density`` (each entry: ``attacks`` as ``threat/label``,
    ``same_as_scored``, the settings of both). Each result's ``threat`` is ``threat/label`` (the summary
    row of that attack carries it, :func:`robench.runs.output.with_sanity_flags`), so only the rows whose
    attacker descended on another estimator are marked: value = 1 when the attack used an estimator other
    than the scored KD detector's (or the run scored no KD), else 0; threshold 0.5.
    001 Table 10's reference-copy attacker (``C&W-wb/carlini``: Carlini's own kernel, the first 100 points per
    class) is flagged by design: its row measures the detector against an attacker that does not know it.
    """
    results = []
    for threat in white_box_threats:
        for d in densities:
            for attack in d.get("attacks", []):  # type: ignore[union-attr]
                if str(attack).split("/", 1)[0] != threat:
                    continue
                differs = not d.get("same_as_scored")
                results.append(
                    SanityResult(
                        "attacker-estimator-differs",
                        model,
                        str(attack),
                        differs,
                        float(differs),
                        0.5,
                        _estimator_detail(d)
                        if differs
                        else "the attacker descends on the scored KD detector's estimator",
                    )
                )
    return results


def _estimator_detail(d: Mapping[str, object]) -> str:
    """How an attacker's estimator (a run.json ``attacker_density`` entry) differs from the scored KD's."""
    text = f"bandwidth {d['bandwidth']}"
    if isinstance(d.get("width"), (int, float)):
        text += f" (width {d['width']:.4g})"
    text += f", {d['kd_per_class'] or 'all'} per class"
    if d.get("kd_per_class") and d.get("kd_subset"):
        text += f" ({d['kd_subset']})"
    scored = d.get("scored_kd")
    if not isinstance(scored, Mapping):
        return text + " (no kd scored)"
    return text + f" vs the scored kd's {scored['bandwidth']}, {scored['per_class'] or 'all'} per class"


def registered_attack(threat: str, label: str) -> tuple[type[Attack], str] | None:
    """The attack class behind a recorded attack label, and how it chose its targets (a target mode).

    The threat's :class:`~robench.specs.threats.AttackSpec` of that label says; for a threat
    that is not registered or holds no such label (hand-made records), the registered attack
    named as the label (``PGD`` -> ``pgd``) with its own default target mode. None when
    neither exists.
    """
    if threat in THREATS:
        for spec in THREATS.get(threat).attacks:
            if spec.label == label:
                return ATTACKS.get(spec.attack), spec.target_mode
    name = label.lower()
    if name not in ATTACKS:
        return None
    cls = ATTACKS.get(name)
    return cls, getattr(cls, "default_target_mode", None) or "none"  # only the L-inf gradient attacks fix a mode


def _side(threat: str) -> str | None:
    """The black-box check's side of a threat: its attacks take the model's gradients, or none (black-box)."""
    if threat not in THREATS:
        return None
    known = THREATS.get(threat)
    return _WHITE if known.gradient_access else _BLACK if known.access == "black-box" else None


def _step(attack: tuple[type[Attack], str] | None) -> str | None:
    """``single`` for a single-step attack (FGSM), ``iterative`` for an iterative one (BIM, PGD, C&W, ...),
    else None."""
    if attack is None:
        return None
    return _SINGLE if attack[0].single_step else _ITERATIVE if attack[0].iterative else None


def _target_mode(attack: tuple[type[Attack], str] | None, targeted: bool) -> str:
    """How the targets were chosen, as compared: none when the records show an untargeted attack, else the
    attack's target mode (random, or least-likely for ILCM); a settings override is seen in the records."""
    mode = attack[1] if attack is not None else "none"
    return ("random" if mode == "none" else mode) if targeted else "none"


# Columns of the per-attack statistics the record checks compare (besides the record keys).
_RATE, _TARGETED, _BUDGET, _MODE, _NORM = "rate", "targeted", "budget", "target_mode", "norm"
_SIDE_COLUMN, _STEP_COLUMN = "side", "step"
_WHITE, _BLACK, _SINGLE, _ITERATIVE = "white", "black", "single", "iterative"
_STATS_COLUMNS = [R.MODEL, R.THREAT, R.ATTACK, _RATE, _TARGETED, _BUDGET, _MODE, _NORM, _SIDE_COLUMN, _STEP_COLUMN]


def _attack_stats(records: pd.DataFrame, budgets: Mapping[str, float]) -> pd.DataFrame:
    """One row per (model, threat, attack): success rate, targeted, budget, target mode, norm, check side and step kind.

    Attacks with a defined success rate only.
    """
    records = records[~R.corruption_mask(records)]
    rows = []
    for key, group in R.groups(records):
        threat, label = str(key[R.THREAT]), str(key[R.ATTACK])
        attack = registered_attack(threat, label)
        targeted = _judged_targeted(group)
        rows.append(
            {
                R.MODEL: key[R.MODEL],
                R.THREAT: key[R.THREAT],
                R.ATTACK: label,
                _RATE: metric_value("success_rate", group),
                _TARGETED: targeted,
                _BUDGET: float(budgets.get(label, float(group[R.LINF].max()))),
                _MODE: _target_mode(attack, targeted),
                _NORM: attack[0].norm if attack is not None else None,
                _SIDE_COLUMN: _side(threat),
                _STEP_COLUMN: _step(attack),
            }
        )
    stats = pd.DataFrame(rows, columns=_STATS_COLUMNS)
    return stats[stats[_RATE].notna()]


def _judged_targeted(group: pd.DataFrame) -> bool:
    """True when the attack's success is "classified as the target" (see record_flags)."""
    aimed = R.targeted(group)
    return bool(aimed.any()) and bool((R.success(group)[aimed] == R.hit_target(group)[aimed]).all())


def _kind(targeted: bool) -> str:
    return "targeted" if targeted else "untargeted"


def _best(stats: pd.DataFrame) -> pd.Series:
    return stats.loc[stats[_RATE].idxmax()]


def _black_box_flags(stats: pd.DataFrame, margin: float) -> list[SanityResult]:
    results = []
    for model, mine in stats.groupby(R.MODEL, sort=False):
        black = mine[mine[_SIDE_COLUMN] == _BLACK]
        for threat, white in mine[mine[_SIDE_COLUMN] == _WHITE].groupby(R.THREAT, sort=False):
            worst: tuple[float, str] | None = None
            for targeted in (False, True):
                bb, wb = black[black[_TARGETED] == targeted], white[white[_TARGETED] == targeted]
                if bb.empty or wb.empty:
                    continue
                b, w = _best(bb), _best(wb)
                gap = float(b[_RATE] - w[_RATE])
                detail = (
                    f"{_kind(targeted)}: best black-box {b[R.ATTACK]} ({b[R.THREAT]}) {b[_RATE]:.3f} "
                    f"vs best {threat} {w[R.ATTACK]} {w[_RATE]:.3f}"
                )
                if worst is None or gap > worst[0]:
                    worst = (gap, detail)
            if worst is not None:
                results.append(
                    SanityResult(
                        "black-box-beats-white-box",
                        str(model),
                        str(threat),
                        worst[0] > margin,
                        worst[0],
                        margin,
                        worst[1],
                    )
                )
    return results


def _iterative_flags(stats: pd.DataFrame, margin: float) -> list[SanityResult]:
    single = stats[stats[_STEP_COLUMN] == _SINGLE]
    iterative = stats[stats[_STEP_COLUMN] == _ITERATIVE]
    # Every (FGSM, iterative) pair of the same model, threat, kind, target mode and norm (L-inf: C&W's L2 is not
    # compared); then keep those whose budget covers FGSM's.
    pairs = single.merge(iterative, on=[R.MODEL, R.THREAT, _TARGETED, _MODE, _NORM], suffixes=("_fgsm", "_iter"))
    fgsm, it = (lambda column: f"{column}_fgsm"), (lambda column: f"{column}_iter")
    pairs = pairs[pairs[it(_BUDGET)] >= pairs[fgsm(_BUDGET)] * (1 - _BUDGET_RTOL)]
    results = []
    for (model, threat), group in pairs.groupby([R.MODEL, R.THREAT], sort=False):
        gaps = group[fgsm(_RATE)] - group[it(_RATE)]
        row = group.loc[gaps.idxmax()]
        gap = float(gaps.max())
        detail = (
            f"{_kind(bool(row[_TARGETED]))}: {row[it(R.ATTACK)]} (eps {row[it(_BUDGET)]:.4g}) {row[it(_RATE)]:.3f} "
            f"vs {row[fgsm(R.ATTACK)]} (eps {row[fgsm(_BUDGET)]:.4g}) {row[fgsm(_RATE)]:.3f}"
        )
        results.append(
            SanityResult(
                "iterative-weaker-than-single-step", str(model), str(threat), gap > margin, gap, margin, detail
            )
        )
    return results


# Bootstrap of the libraries' robust accuracy (library-attack-beats-threat): resamples and the seed of their draw.
LIBRARY_BOOTSTRAP_RESAMPLES = 1000
LIBRARY_BOOTSTRAP_SEED = 0
LIBRARY_INTERVAL = 0.95


def attack_names_of(infos: Sequence[Mapping[str, object]]) -> dict[tuple[str, str], str]:
    """(threat, label) -> registered attack name, from run.json dicts (their ``threats``' attack configs)."""
    names: dict[tuple[str, str], str] = {}
    for info in infos:
        for threat in info.get("threats", []) or []:  # type: ignore[union-attr]
            for attack in threat.get("attacks", []) or []:
                names[(str(threat.get("name")), str(attack.get("label")))] = str(attack.get("attack"))
    return names


def _library_attack(threat: str, label: str, attack_names: Mapping[tuple[str, str], str] | None = None) -> bool:
    """Whether the recorded attack ``label`` of ``threat`` is a peer library's: by the run's attack name
    (``attack_names``), else the registered threat's spec of that label, else the label itself."""
    name = (attack_names or {}).get((threat, label))
    if name is None and threat in THREATS:
        name = next((spec.attack for spec in THREATS.get(threat).attacks if spec.label == label), None)
    # the peer libraries whose attacks robench runs by name (attacks/library.py): torchattacks:APGD, foolbox:LinfPGD
    return (name or label).startswith(tuple(f"{prefix}:" for prefix in ATTACKS.prefixes()))


def _robust(group: pd.DataFrame, samples: pd.Index) -> np.ndarray:
    """Per sample of ``samples``: clean-correct and still correct after every attack in ``group``
    (misclassification, as AutoAttack)."""
    wrong = (group[R.ADV_PRED] != group[R.LABEL]) | (group[R.CLEAN_PRED] != group[R.LABEL])
    broken = wrong.groupby(group[R.SAMPLE]).any()
    return ~broken.reindex(samples).to_numpy(dtype=bool)


def library_flags(
    records: pd.DataFrame, attack_names: Mapping[tuple[str, str], str] | None = None
) -> list[SanityResult]:
    """``library-attack-beats-threat``: one result per model x threat holding both library attacks and its own.

    Compared on the samples every one of those attacks was recorded on (a cascade drops samples
    from later attacks, so there the comparison covers the samples the last attack still saw):
    value = own worst-case robust accuracy - the libraries' worst-case robust accuracy (both over
    clean-correct samples, misclassification as the criterion); threshold = the half-width of the
    95% percentile bootstrap interval of the libraries' robust accuracy (1,000 resamples of the
    samples, seed 0, so the check is a pure, repeatable function of the records). Flagged when the
    libraries leave fewer samples robust than the threat's own attacks by more than that.
    """
    records = records[~R.corruption_mask(records)]
    records = records[~worst_case_mask(records)]
    results = []
    for (model, threat), group in records.groupby([R.MODEL, R.THREAT], sort=False):
        kinds = {str(a): _library_attack(str(threat), str(a), attack_names) for a in group[R.ATTACK].unique()}
        library = group[R.ATTACK].astype(str).map(kinds).to_numpy(dtype=bool)
        if library.all() or not library.any():
            continue
        per_attack = [set(g[R.SAMPLE]) for _, g in group.groupby(R.ATTACK, sort=False)]
        common = set.intersection(*per_attack)
        clean = group[group[R.SAMPLE].isin(common)].drop_duplicates(R.SAMPLE)
        samples = pd.Index(sorted(clean.loc[clean[R.CLEAN_PRED] == clean[R.LABEL], R.SAMPLE]))
        if samples.empty:
            continue
        mine, theirs = group[~library], group[library]
        own = _robust(mine[mine[R.SAMPLE].isin(samples)], samples)
        lib = _robust(theirs[theirs[R.SAMPLE].isin(samples)], samples)
        rng = np.random.default_rng(LIBRARY_BOOTSTRAP_SEED)
        draws = lib[rng.integers(0, len(lib), size=(LIBRARY_BOOTSTRAP_RESAMPLES, len(lib)))].mean(1)
        tail = (1 - LIBRARY_INTERVAL) / 2
        low, high = np.quantile(draws, [tail, 1 - tail])
        half = float(high - low) / 2
        gap = float(own.mean() - lib.mean())
        labels = lambda frame: ", ".join(dict.fromkeys(frame[R.ATTACK].astype(str)))  # noqa: E731 - a one-line helper
        detail = (
            f"robust accuracy on {len(samples)} clean-correct samples: libraries ({labels(theirs)}) {lib.mean():.3f} "
            f"vs the threat's own attacks ({labels(mine)}) {own.mean():.3f}"
        )
        results.append(
            SanityResult("library-attack-beats-threat", str(model), str(threat), gap > half, gap, half, detail)
        )
    return results


# ---------------------------------------------------------------------- tables


def sanity_table(results: Sequence[SanityResult]) -> pd.DataFrame:
    """Results as a frame with ``TABLE_COLUMNS``, one row per result, in the order given."""
    rows = [
        {
            R.MODEL: r.model,
            R.THREAT: r.threat,
            "check": r.check,
            "flagged": r.flagged,
            "value": r.value,
            "threshold": r.threshold,
            "detail": r.detail,
        }
        for r in results
    ]
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return table.astype({"flagged": bool, "value": float, "threshold": float})


def flag_values(column: pd.Series) -> pd.Series:
    """A sanity table's ``flagged`` column as booleans, whether it holds bools or text read back from CSV/JSON."""
    return column.map(lambda v: str(v).strip().lower() in ("true", "1", "yes"))


def one_per_check(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, threat, check), in first-appearance order: a flagged one where any is.

    A check may give several results under one key (``budget-not-attacked`` one per substitute of a transfer
    threat); keeping the first would hide a flag behind an unflagged row.
    """
    keys = [R.MODEL, R.THREAT, "check"]
    kept = table.assign(_flagged=flag_values(table["flagged"])).sort_values("_flagged", ascending=False, kind="stable")
    return kept.drop_duplicates(subset=keys).sort_index().drop(columns="_flagged").reset_index(drop=True)


def flags_by_model_threat(table: pd.DataFrame) -> dict[tuple[str, str], str]:
    """``(model, threat) -> "check-a,check-b"``: the flagged checks, sorted by name; "" for a pair with none flagged.

    Pairs absent from the table were not checked; look them up with ``.get(key, "")``.
    """
    flags: dict[tuple[str, str], str] = {}
    for (model, threat), group in table.groupby([R.MODEL, R.THREAT], sort=False):
        flagged = flag_values(group["flagged"]).to_numpy(dtype=bool)  # text read back from CSV/JSON too
        flags[(str(model), str(threat))] = ",".join(sorted(set(group.loc[flagged, "check"])))
    return flags
