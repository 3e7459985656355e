"""Sanity flags: each probe fires on a toy model built to fail it and stays quiet on a plain tiny CNN."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from robench.attacks.base import AttackTarget, Bounds
from robench.core.errors import ConfigError
from robench.core.models import Classifier
from robench.defenses import DEFENSES
from robench.runs.sanity import (
    COLLAPSED_SHARE,
    PILE_UP_MIN_OUTPUTS,
    PILE_UP_SHARE,
    SANITY_CHECKS,
    TABLE_COLUMNS,
    SanityResult,
    attack_names_of,
    flags_by_model_threat,
    probe_model,
    record_flags,
    sanity_table,
)
from tiny import make_tiny

N = 16


class Quantised(Classifier):
    """Rounds its input to 4 grey levels first: the input gradient is exactly zero (shattered gradients)."""

    def features(self, x):
        return super().features(torch.round(x * 4) / 4)


class DropoutInEval(Classifier):
    """Dropout on the features even in eval mode: a randomised model."""

    def features(self, x):
        return F.dropout(super().features(x), p=0.5, training=True)


class Constant(Classifier):
    """Features multiplied by zero: the logits are the head's (zeroed) bias, class 0 whatever the input."""

    def features(self, x):
        return super().features(x) * 0


def _target(cls=None, seed: int = 0) -> AttackTarget:
    """A tiny untrained softmax CNN with every bias zeroed (wrapped in ``cls`` if given).

    Freshly initialised, the tiny CNN is nearly constant on [0, 1] (its biases
    dominate; seed 0 keeps a logit margin of ~0.19 under any input), so it
    really cannot be fooled and the unbounded probe rightly flags it. Without
    biases the network is positively homogeneous in its normalised input and
    its prediction follows the input.
    """
    model, _ = make_tiny("softmax", seed=seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
    if cls is not None:
        model = cls(model.normalize, model.backbone, model.head).eval()
    return AttackTarget(model, DEFENSES.get("softmax")(), Bounds(0.0, 1.0))


def _batch(target: AttackTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic inputs labelled with the model's own prediction, so every sample is clean-correct."""
    x = torch.rand(N, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    return x, target.predict(x)


def _probe(target: AttackTarget, batch=None, **kwargs) -> dict[str, SanityResult]:
    x, y = _batch(target) if batch is None else batch
    results = probe_model(
        target, x, y, generator=torch.Generator().manual_seed(2), model_name="m", threat="t", **kwargs
    )
    assert [r.check for r in results] == [
        "gradient-zero-or-nan",
        "nondeterministic-output",
        "unbounded-budget-not-reached",
        "gradient-vanishes-under-attack",
        "hidden-activity-collapses",
    ]
    assert all(r.model == "m" and r.threat == "t" for r in results)
    return {r.check: r for r in results}


def _trained(trained_tiny, name: str) -> tuple[AttackTarget, tuple[torch.Tensor, torch.Tensor]]:
    """One of the briefly trained tiny CNNs (conftest) and N test digits. Trained, not fresh: an untrained network
    may have no input in [0, 1] at all that it assigns to some class, and then the targeted unbounded attack
    rightly fails."""
    bundle, data = trained_tiny[name], trained_tiny["data"]
    target = AttackTarget(bundle.model, bundle.defense, Bounds(0.0, 1.0))
    return target, (data.test.x[:N], data.test.y[:N])


@pytest.fixture(scope="module")
def plain(trained_tiny):
    target, batch = _trained(trained_tiny, "softmax")
    return _probe(target, batch)


def test_plain_tiny_model_raises_no_flag(plain):
    assert not any(r.flagged for r in plain.values()), plain
    assert plain["gradient-zero-or-nan"].value == 0.0
    assert plain["nondeterministic-output"].value <= plain["nondeterministic-output"].threshold
    assert plain["unbounded-budget-not-reached"].value == 1.0
    assert "targeted (random targets)" in plain["unbounded-budget-not-reached"].detail
    assert plain["gradient-vanishes-under-attack"].value == 0.0  # no attacked point lost its gradient
    assert plain["hidden-activity-collapses"].value == 0.0 and plain["hidden-activity-collapses"].threshold == (
        COLLAPSED_SHARE
    )
    assert "last ReLU layer" in plain["hidden-activity-collapses"].detail


@pytest.mark.parametrize("objective", ["ce", "margin"])
def test_other_models_and_objectives_stay_quiet(trained_tiny, objective):
    target, batch = _trained(trained_tiny, "gm")
    results = _probe(target, batch, objective=objective, unbounded_steps=50)
    assert not any(r.flagged for r in results.values()), results


def test_quantised_input_flags_zero_gradients():
    result = _probe(_target(Quantised))["gradient-zero-or-nan"]
    assert result.flagged and result.value == 1.0
    assert f"{N}/{N} all-zero" in result.detail


def test_nan_gradient_is_flagged_even_for_one_sample():
    class NanForOne(Classifier):
        def features(self, x):
            # sqrt'(0) = inf times abs'(0) = 0 gives NaN, for sample 0 only (the pixel values are distinct).
            return super().features(x) * (x[:, :1, 0, 0] - x[0, 0, 0, 0]).abs().sqrt()

    target = _target(NanForOne)
    x, y = _batch(target)
    results = probe_model(target, x, y, generator=torch.Generator().manual_seed(0), unbounded_steps=5)
    gradient = results[0]
    assert gradient.check == "gradient-zero-or-nan" and gradient.flagged
    assert gradient.value == 1 / N and f"1/{N} non-finite" in gradient.detail


def test_dropout_in_eval_flags_nondeterminism_and_restores_mode():
    target = _target(DropoutInEval)
    target.model.train()
    result = _probe(target, unbounded_steps=2)["nondeterministic-output"]
    assert result.flagged and result.value > result.threshold
    assert target.model.training
    target.model.eval()
    _probe(target, unbounded_steps=2)
    assert not target.model.training


def test_unfoolable_model_flags_unbounded_budget():
    results = _probe(_target(Constant), unbounded_steps=10)
    assert results["unbounded-budget-not-reached"].flagged
    assert results["unbounded-budget-not-reached"].value == 0.0
    assert results["gradient-zero-or-nan"].flagged


def test_unbounded_probe_skips_when_no_sample_is_clean_correct():
    target = _target()
    x, y = _batch(target)
    wrong = (y + 1) % 10
    for result in probe_model(target, x, wrong, generator=torch.Generator().manual_seed(0))[2:]:
        assert not result.flagged and math.isnan(result.value) and "not evaluated" in result.detail


class Collapsing(Classifier):
    """Gradient masking by collapse, as the first RCE bundles did it: a last ReLU layer whose units are all on at
    the inputs it was shown (``clean``) and all off a little way from them. There the features are 0, the logits
    the head's bias (a sink class), the input gradient is zero, and no target but the sink can be reached."""

    def __init__(self, model: Classifier, clean: torch.Tensor, sink: int = 0) -> None:
        super().__init__(model.normalize, model.backbone, model.head)
        self.gate = torch.nn.ReLU()
        self.register_buffer("clean", clean.clone())
        with torch.no_grad():
            self.offset = float(super().features(clean).abs().max()) + 1.0
            self.head.bias.zero_()
            self.head.bias[sink] = 1.0  # argmax of the bias alone: the sink
        self.eval()

    def features(self, x):
        # 1000 x the mean squared distance to the nearest input it was shown: 0 there, ~300 after PGD's random start
        distance = ((x.flatten(1)[:, None, :] - self.clean.flatten(1)[None]) ** 2).mean(2).min(1).values
        return self.gate(super().features(x) + self.offset - 1000 * distance[:, None])


def _collapsing() -> AttackTarget:
    base = _target()
    x, _ = _batch(base)
    return AttackTarget(Collapsing(base.model, x), DEFENSES.get("softmax")(), Bounds(0.0, 1.0))


def test_collapsing_model_flags_targeted_unbounded_vanishing_gradient_and_dead_units():
    target = _collapsing()
    x, y = _batch(target)
    assert (y != 0).float().mean() > 0.5  # clean inputs are classified by their features, not as the sink
    results = _probe(target, unbounded_steps=10)
    assert not results["gradient-zero-or-nan"].flagged  # at the clean inputs the gradient is there
    unbounded = results["unbounded-budget-not-reached"]
    assert unbounded.flagged and unbounded.value < 0.5, unbounded  # targets other than the sink are out of reach
    assert "targeted (random targets)" in unbounded.detail
    vanishing = results["gradient-vanishes-under-attack"]
    assert vanishing.flagged and vanishing.value == 1.0, vanishing  # every attacked point: features, gradient gone
    activity = results["hidden-activity-collapses"]
    assert activity.flagged and activity.value == 1.0 and "mean 0.0% active attacked" in activity.detail, activity


def test_collapse_probes_without_a_relu_module_use_the_feature_norm():
    class Linear(Classifier):
        def __init__(self) -> None:
            super().__init__(_target().model.normalize, torch.nn.Flatten(), torch.nn.Linear(784, 10))

    model = Linear().eval()
    target = AttackTarget(model, DEFENSES.get("softmax")(), Bounds(0.0, 1.0))
    results = _probe(target, unbounded_steps=5)
    activity = results["hidden-activity-collapses"]
    assert "no ReLU module seen" in activity.detail and not activity.flagged and activity.value == 0.0


def test_probe_leaves_global_rng_untouched():
    for cls in (None, DropoutInEval):  # the dropout model draws from the global RNG itself
        target = _target(cls)
        x, y = _batch(target)
        before = torch.get_rng_state()
        probe_model(target, x, y, generator=torch.Generator().manual_seed(0), unbounded_steps=3)
        assert torch.equal(torch.get_rng_state(), before)


def test_probe_is_reproducible_from_its_generator():
    target = _target()
    x, y = _batch(target)
    runs = [probe_model(target, x, y, generator=torch.Generator().manual_seed(5), unbounded_steps=3) for _ in range(2)]
    assert runs[0] == runs[1]


def test_probe_rejects_bad_input():
    target = _target()
    x, y = _batch(target)
    gen = torch.Generator()
    with pytest.raises(ConfigError, match="objective"):
        probe_model(target, x, y, generator=gen, objective="nope")
    with pytest.raises(ConfigError, match="non-empty"):
        probe_model(target, x[:0], y[:0], generator=gen)
    with pytest.raises(ConfigError, match="bounds"):
        probe_model(target, x + 2, y, generator=gen)


# -------------------------------------------------------------- record checks


def _attack_records(
    model: str,
    threat: str,
    attack: str,
    rate: float,
    *,
    targeted: bool = False,
    transfer: bool = False,
    eps: float = 0.1,
    n: int = 100,
) -> pd.DataFrame:
    """n clean-correct samples (label 0) of which a fraction ``rate`` succeed, plus 20 misclassified samples that
    all 'succeed' (success_rate must ignore them). Targeted attacks aim at class 3; a ``transfer`` attack is
    crafted with targets but judged by misclassification, as the runner's black-box threat records it."""
    total = n + 20
    success = np.r_[np.arange(n) < int(round(rate * n)), np.ones(20, dtype=bool)]
    aimed = targeted or transfer
    # Successful targeted samples land on the target; successful transfer samples on class 5 (wrong, not the target).
    adv_pred = np.where(success, 3 if targeted else 5, 0)
    return pd.DataFrame(
        {
            "model": model,
            "threat": threat,
            "attack": attack,
            "corruption": False,
            "sample": np.arange(total),
            "label": np.zeros(total, dtype=int),
            "target": np.full(total, 3 if aimed else -1),
            "clean_pred": np.r_[np.zeros(n, dtype=int), np.ones(20, dtype=int)],
            "adv_pred": adv_pred,
            "success": success,
            "linf": np.full(total, eps),
        }
    )


def _records(*parts: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True)


def _only(results: list[SanityResult], check: str) -> list[SanityResult]:
    return [r for r in results if r.check == check]


def test_black_box_stronger_than_white_box_is_flagged():
    records = _records(
        _attack_records("m", "black-box", "transfer-PGD", 0.9), _attack_records("m", "white-box", "PGD-10-un", 0.3)
    )
    (result,) = _only(record_flags(records), "black-box-beats-white-box")
    assert result.flagged and result.threat == "white-box"
    assert result.value == pytest.approx(0.6) and result.threshold == 0.02
    assert "transfer-PGD" in result.detail and "PGD-10-un" in result.detail


def test_white_box_stronger_than_black_box_is_quiet():
    records = _records(
        _attack_records("m", "spsa", "SPSA", 0.3), _attack_records("m", "semi-white-box", "PGD-10-un", 0.9)
    )
    (result,) = _only(record_flags(records), "black-box-beats-white-box")
    assert not result.flagged and result.value == pytest.approx(-0.6)


def test_black_box_check_compares_like_with_like_and_skips_missing_kinds():
    # Only a black-box side, only a white-box side, or untargeted vs targeted only: nothing to compare, no result.
    assert _only(record_flags(_attack_records("m", "black-box", "transfer", 0.9)), "black-box-beats-white-box") == []
    assert _only(record_flags(_attack_records("m", "white-box", "PGD", 0.1)), "black-box-beats-white-box") == []
    mixed = _records(
        _attack_records("m", "black-box", "transfer", 0.9),
        _attack_records("m", "white-box", "PGD-tar", 0.1, targeted=True),
    )
    assert _only(record_flags(mixed), "black-box-beats-white-box") == []
    # A transfer attack crafted with targets but judged by misclassification is compared with untargeted attacks.
    transfer = _records(
        _attack_records("m", "black-box", "C&W-wb", 0.9, transfer=True),
        _attack_records("m", "white-box", "PGD-tar", 0.1, targeted=True),
        _attack_records("m", "white-box", "PGD-un", 0.95),
    )
    (result,) = _only(record_flags(transfer), "black-box-beats-white-box")
    assert not result.flagged and result.detail.startswith("untargeted") and "PGD-un" in result.detail
    # Another model's strong black-box attack does not count against this one.
    other = _records(_attack_records("a", "black-box", "transfer", 0.9), _attack_records("b", "white-box", "PGD", 0.1))
    assert _only(record_flags(other), "black-box-beats-white-box") == []


def test_corruptions_are_not_black_box_attacks():
    noise = _attack_records("m", "black-box", "noise", 0.9).assign(corruption=True)
    records = _records(
        noise, _attack_records("m", "black-box", "transfer", 0.2), _attack_records("m", "white-box", "PGD", 0.3)
    )
    (result,) = _only(record_flags(records), "black-box-beats-white-box")
    assert not result.flagged and "transfer" in result.detail


def test_iterative_weaker_than_fgsm_is_flagged():
    records = _records(
        _attack_records("m", "semi-white-box", "FGSM", 0.8, targeted=True, eps=0.1),
        _attack_records("m", "semi-white-box", "BIM", 0.3, targeted=True, eps=0.2),
        _attack_records("m", "semi-white-box", "PGD-10-tar", 0.9, targeted=True, eps=0.3),
    )
    (result,) = _only(record_flags(records), "iterative-weaker-than-single-step")
    assert result.flagged and result.value == pytest.approx(0.5) and "BIM" in result.detail


def test_iterative_stronger_than_fgsm_is_quiet():
    records = _records(
        _attack_records("m", "white-box", "FGSM", 0.5), _attack_records("m", "white-box", "PGD-10-un", 0.9, eps=0.3)
    )
    (result,) = _only(record_flags(records), "iterative-weaker-than-single-step")
    assert not result.flagged and result.value == pytest.approx(-0.4)


def test_iterative_check_needs_same_kind_and_at_least_fgsm_budget():
    smaller = _records(
        _attack_records("m", "t", "FGSM", 0.8, eps=0.1), _attack_records("m", "t", "PGD", 0.1, eps=8 / 255)
    )
    assert _only(record_flags(smaller), "iterative-weaker-than-single-step") == []
    # An explicit budget overrides the one observed in the records.
    (result,) = _only(record_flags(smaller, budgets={"PGD": 0.3}), "iterative-weaker-than-single-step")
    assert result.flagged
    kinds = _records(
        _attack_records("m", "t", "FGSM", 0.8, targeted=True), _attack_records("m", "t", "PGD", 0.1, eps=0.3)
    )
    assert _only(record_flags(kinds), "iterative-weaker-than-single-step") == []
    ilcm = _records(
        _attack_records("m", "t", "FGSM", 0.8, targeted=True),
        _attack_records("m", "t", "ILCM", 0.1, targeted=True, eps=0.2),
    )
    assert _only(record_flags(ilcm), "iterative-weaker-than-single-step") == []


def test_record_flags_on_empty_or_all_misclassified_records_is_empty():
    records = _records(
        _attack_records("m", "black-box", "transfer", 0.9), _attack_records("m", "white-box", "PGD", 0.1)
    )
    assert record_flags(records.iloc[:0]) == []
    assert record_flags(records.assign(clean_pred=1)) == []  # no clean-correct sample: no success rate to compare


def test_record_flags_rejects_bad_input():
    records = _attack_records("m", "t", "FGSM", 0.5)
    with pytest.raises(ConfigError, match="margin"):
        record_flags(records, margin=-1)
    with pytest.raises(ConfigError, match="linf"):
        record_flags(records.drop(columns=["linf"]))


def _spread_records(model: str, threat: str, attack: str, outputs: list[int], *, targets: list[int] | None = None):
    """One clean-correct sample (label 0) per entry of ``outputs``, classified as that entry after the attack."""
    n = len(outputs)
    adv = np.asarray(outputs)
    target = np.asarray(targets) if targets is not None else np.full(n, -1)
    return pd.DataFrame(
        {
            "model": model,
            "threat": threat,
            "attack": attack,
            "corruption": False,
            "sample": np.arange(n),
            "label": np.zeros(n, dtype=int),
            "target": target,
            "clean_pred": np.zeros(n, dtype=int),
            "adv_pred": adv,
            "success": (adv != 0) if targets is None else adv == target,
            "linf": np.full(n, 0.3),
        }
    )


def test_outputs_piling_into_one_class_are_flagged():
    # A targeted attack (random targets 1..8) missing 40 targets, 30 of the misses in class 9: a sink
    outputs = [9] * 30 + list(range(2, 10)) + [2, 3] + [0] * 10
    targets = [1 + i % 8 for i in range(50)]
    outputs = [1 + (t % 8) if o == t else o for o, t in zip(outputs, targets)]  # no miss is "on target" by chance
    piled = _spread_records("m", "semi-white-box", "PGD-10-tar", outputs, targets=targets)
    (result,) = _only(record_flags(piled), "outputs-pile-into-one-class")
    assert result.flagged and result.value >= 30 / 40 and result.threshold == PILE_UP_SHARE
    assert "PGD-10-tar: " in result.detail and "class 9" in result.detail


def test_outputs_spread_over_classes_are_quiet_and_untargeted_attacks_are_not_checked():
    targets = [1 + i % 9 for i in range(45)]
    spread = _spread_records("m", "semi-white-box", "PGD-10-tar", [1 + (i + 1) % 9 for i in range(45)], targets=targets)
    (result,) = _only(record_flags(spread), "outputs-pile-into-one-class")
    assert not result.flagged and result.value == pytest.approx(5 / 45)
    # untargeted attacks head for the nearest class, which may honestly be one class: not checked
    nearest = _spread_records("m", "semi-white-box", "PGD-10-un", [9] * 40)
    assert _only(record_flags(nearest), "outputs-pile-into-one-class") == []


def test_pile_up_check_leaves_out_outputs_on_their_target_and_needs_enough_outputs():
    # A targeted attack that sent 40 samples to their target, class 9, and missed 20 (spread): no sink.
    targets = [9] * 40 + [1 + i % 8 for i in range(20)]
    outputs = [9] * 40 + [1 + (i + 1) % 8 for i in range(20)]
    aimed = _spread_records("m", "t", "PGD-10-tar", outputs, targets=targets)
    (result,) = _only(record_flags(aimed), "outputs-pile-into-one-class")
    assert not result.flagged and "/20 misclassified" in result.detail
    # The same attack missing its targets into class 9 is a sink.
    missed = _spread_records("m", "t", "PGD-10-tar", [9] * 40, targets=[1 + i % 8 for i in range(40)])
    (result,) = _only(record_flags(missed), "outputs-pile-into-one-class")
    assert result.flagged and result.value == 1.0
    # Fewer than PILE_UP_MIN_OUTPUTS misclassified outputs, a corruption, or too few classes: not checked.
    few = _spread_records("m", "t", "PGD", [9] * (PILE_UP_MIN_OUTPUTS - 1), targets=[1] * (PILE_UP_MIN_OUTPUTS - 1))
    assert _only(record_flags(few), "outputs-pile-into-one-class") == []
    noise = _spread_records("m", "t", "noise", [9] * 40, targets=[1] * 40).assign(corruption=True)
    assert _only(record_flags(noise), "outputs-pile-into-one-class") == []
    binary = _spread_records("m", "t", "PGD", [1] * 40, targets=[2] * 40)
    assert _only(record_flags(binary), "outputs-pile-into-one-class") == []


# ---------------------------------------------------------------------- tables


def test_table_and_flags_by_model_threat():
    results = [
        SanityResult("gradient-zero-or-nan", "m", "white-box", True, 1.0, 0.05, ""),
        SanityResult("black-box-beats-white-box", "m", "white-box", True, 0.6, 0.02, ""),
        SanityResult("nondeterministic-output", "m", "white-box", False, 0.0, 1e-4, ""),
        SanityResult("nondeterministic-output", "m", "semi-white-box", False, 0.0, 1e-4, ""),
    ]
    table = sanity_table(results)
    assert list(table.columns) == TABLE_COLUMNS and len(table) == 4
    assert table["flagged"].dtype == bool
    assert flags_by_model_threat(table) == {
        ("m", "white-box"): "black-box-beats-white-box,gradient-zero-or-nan",
        ("m", "semi-white-box"): "",
    }
    assert flags_by_model_threat(sanity_table([])) == {}


def test_every_check_is_registered_with_a_citation(plain):
    names = set(SANITY_CHECKS.names())
    assert (
        set(plain)
        | {
            "black-box-beats-white-box",
            "iterative-weaker-than-single-step",
            "attacker-estimator-differs",
            "library-attack-beats-threat",
            "outputs-pile-into-one-class",
            "budget-not-attacked",
            "detector-not-attacked",
        }
        == names
    )
    assert all(
        SANITY_CHECKS.get(n).citation and SANITY_CHECKS.get(n).kind in ("model", "records", "config") for n in names
    )


# ------------------------------------------------- library attacks against the threat's own


def test_library_attack_stronger_than_the_threats_own_is_flagged():
    records = _records(
        _attack_records("m", "white-box", "PGD-50-un", 0.3), _attack_records("m", "white-box", "torchattacks:APGD", 0.6)
    )
    (result,) = _only(record_flags(records), "library-attack-beats-threat")
    assert result.flagged and result.value == pytest.approx(0.3) and 0 < result.threshold < 0.15
    assert "torchattacks:APGD" in result.detail and "PGD-50-un" in result.detail


def test_library_attack_within_its_interval_is_quiet_and_needs_both_sides():
    close = _records(
        _attack_records("m", "white-box", "PGD-50-un", 0.3), _attack_records("m", "white-box", "foolbox:LinfPGD", 0.32)
    )
    (result,) = _only(record_flags(close), "library-attack-beats-threat")
    assert not result.flagged and result.value == pytest.approx(0.02) and result.value < result.threshold
    assert (
        _only(record_flags(_attack_records("m", "autoattack", "torchattacks:APGD", 0.9)), "library-attack-beats-threat")
        == []
    )
    assert _only(record_flags(_attack_records("m", "white-box", "PGD-50-un", 0.9)), "library-attack-beats-threat") == []
    weaker = _records(
        _attack_records("m", "white-box", "PGD-50-un", 0.6), _attack_records("m", "white-box", "torchattacks:APGD", 0.3)
    )
    (result,) = _only(record_flags(weaker), "library-attack-beats-threat")
    assert not result.flagged and result.value == pytest.approx(-0.3)


def test_library_check_compares_on_the_samples_both_saw():
    own = _attack_records("m", "white-box", "PGD-50-un", 0.3)
    library = _attack_records("m", "white-box", "torchattacks:APGD", 0.6)
    library = library[library["sample"] >= 50]  # a cascade ran the library attack on samples 50.. only
    (result,) = _only(record_flags(_records(own, library)), "library-attack-beats-threat")
    assert "on 50 clean-correct samples" in result.detail  # samples 50..99 (100..119 are misclassified clean)
    assert result.value == pytest.approx(1.0 - 0.8)  # own: all 50 robust; library breaks 50..59


def test_library_check_knows_added_attacks_by_their_registered_name():
    own = _attack_records("m", "white-box", "PGD-50-un", 0.3)
    added = _attack_records("m", "white-box", "APGD-lib", 0.6)  # a suite's [[threat.add]] label
    assert (
        _only(record_flags(_records(own, added)), "library-attack-beats-threat") == []
    )  # by its label: one of the threat's own
    names = attack_names_of(
        [{"threats": [{"name": "white-box", "attacks": [{"label": "APGD-lib", "attack": "torchattacks:APGD"}]}]}]
    )
    (result,) = _only(record_flags(_records(own, added), attack_names=names), "library-attack-beats-threat")
    assert result.flagged and "APGD-lib" in result.detail


def test_one_row_per_check_keeps_a_flagged_one():
    """Two results under one key (one per substitute): the flagged one is kept, wherever it comes, in key order."""
    from robench.runs.sanity import one_per_check

    table = pd.DataFrame(
        {
            "model": ["m", "m", "m", "n"],
            "threat": ["black-box/worst-case Linf 0.1"] * 2 + ["white-box", "white-box"],
            "check": ["budget-not-attacked", "budget-not-attacked", "gradient-zero-or-nan", "gradient-zero-or-nan"],
            "flagged": [False, True, False, "True"],
            "value": [0.0, 1.0, 0.0, 1.0],
            "threshold": [0.0] * 4,
            "detail": ["a", "b", "c", "d"],
        }
    )
    kept = one_per_check(table)
    assert list(kept["detail"]) == ["b", "c", "d"]
