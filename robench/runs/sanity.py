"""Sanity flags: cheap signs that an evaluation overstates robustness (gradient masking, broken attacks).

After Carlini et al. 2019, "On Evaluating Adversarial Robustness" (Sec. 5
checklist), and the checks AutoAttack (Croce & Hein 2020) runs before it
reports a number. Two kinds of check:

- model probes (:func:`probe_model`), run once per model on a small batch:
  ``gradient-zero-or-nan``, ``nondeterministic-output``, ``unbounded-budget-not-reached``;
- record checks (:func:`record_flags`), pure functions of the runner's
  per-sample records: ``black-box-beats-white-box``, ``iterative-weaker-than-single-step``,
  ``library-attack-beats-threat``.

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
from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.core.registry import Registry
from robench.scoring import records as R
from robench.scoring.metrics import metric_value
from robench.scoring.worst_case import WORST_CASE
from robench.specs.threats import THREATS

# Probe thresholds. A few exactly-zero gradients can be honest (a saturated
# ReLU network on a blank input), so zero gradients are tolerated up to 5%.
ZERO_GRADIENT_FRACTION = 0.05
# Relative to max(1, max |logit|): well above cuDNN's run-to-run float noise, far below any random layer.
NONDETERMINISM_RTOL = 1e-4
UNBOUNDED_MIN_SUCCESS = 0.95
UNBOUNDED_STEPS = 100
UNBOUNDED_STEP_FRACTION = 1 / 20  # PGD step as a fraction of the input range: 20 steps cross it

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


SANITY_CHECKS: Registry[SanityCheck] = Registry("sanity check", base=SanityCheck)
for _check in (
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
        "of clean-correct samples",
        "Carlini et al. 2019 Sec. 5: unbounded attacks must reach 100% success",
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
        "(bandwidth, points per class, seed), or the run scores no KD",
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
    """Run the three model probes on one batch (x inside ``target.bounds``, labels y).

    The model is put in eval mode and its mode is restored afterwards. The
    only randomness is PGD's random start, drawn from ``generator``; a model
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
            values = [
                _gradient_probe(target, x, y, objective),
                _determinism_probe(target, x),
                _unbounded_probe(target, x, y, objective, generator, unbounded_steps),
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
    """Success rate of untargeted PGD with eps = the whole input range, on the clean-correct samples."""
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
    result = attack(target, x[correct], y[correct], generator=generator)
    rate = float(result.success.float().mean())
    detail = (
        f"PGD-{steps} ({objective}), eps = input range {width:g}: "
        f"{int(result.success.sum())}/{n} clean-correct samples fooled"
    )
    return "unbounded-budget-not-reached", rate < UNBOUNDED_MIN_SUCCESS, rate, UNBOUNDED_MIN_SUCCESS, detail


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

    Checks with nothing to compare produce no result.
    """
    if not math.isfinite(margin) or margin < 0:
        raise ConfigError(f"sanity margin must be a finite number >= 0, got {margin}")
    needed = {R.MODEL, R.THREAT, R.ATTACK, R.LABEL, R.CLEAN_PRED, R.ADV_PRED, R.SUCCESS, R.TARGET, R.LINF}
    missing = needed - set(records.columns)
    if missing:
        raise ConfigError(f"records lack the column(s) {', '.join(sorted(missing))} that sanity checks need")
    stats = _attack_stats(records, budgets or {})
    return _black_box_flags(stats, margin) + _iterative_flags(stats, margin) + library_flags(records, attack_names)


def estimator_flags(
    model: str, densities: Sequence[Mapping[str, object]], white_box_threats: Sequence[str]
) -> list[SanityResult]:
    """``attacker-estimator-differs``: one result per white-box threat whose attacks used an attacker density.

    ``densities`` is run.json's ``attacker_density`` (each entry: ``attacks`` as ``threat/label``,
    ``same_as_scored``, the settings of both). value = 1 when some attack of the threat used an
    estimator other than the scored KD detector's (or the run scored no KD), else 0; threshold 0.5.
    """
    results = []
    for threat in white_box_threats:
        used = [
            d
            for d in densities
            if any(str(a).split("/", 1)[0] == threat for a in d.get("attacks", []))  # type: ignore[union-attr]
        ]
        if not used:
            continue
        differing = [d for d in used if not d.get("same_as_scored")]
        detail = (
            "; ".join(
                f"{', '.join(d['attacks'])}: bandwidth {d['bandwidth']}, "  # type: ignore[index]
                f"{d['kd_per_class'] or 'all'} per class"
                + (
                    f" vs the scored kd's {d['scored_kd']['bandwidth']}, {d['scored_kd']['per_class'] or 'all'}"
                    if d.get("scored_kd")
                    else " (no kd scored)"
                )  # type: ignore[index]
                for d in differing
            )
            or "the attacker descends on the scored KD detector's estimator"
        )
        results.append(
            SanityResult(
                "attacker-estimator-differs", model, threat, bool(differing), float(bool(differing)), 0.5, detail
            )
        )
    return results


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
    records = records[records[R.ATTACK] != WORST_CASE]
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


def flags_by_model_threat(table: pd.DataFrame) -> dict[tuple[str, str], str]:
    """``(model, threat) -> "check-a,check-b"``: the flagged checks, sorted by name; "" for a pair with none flagged.

    Pairs absent from the table were not checked; look them up with ``.get(key, "")``.
    """
    flags: dict[tuple[str, str], str] = {}
    for (model, threat), group in table.groupby([R.MODEL, R.THREAT], sort=False):
        flags[(str(model), str(threat))] = ",".join(sorted(set(group.loc[group["flagged"].astype(bool), "check"])))
    return flags
