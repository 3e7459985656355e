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


def _probe(target: AttackTarget, **kwargs) -> dict[str, SanityResult]:
    x, y = _batch(target)
    results = probe_model(
        target, x, y, generator=torch.Generator().manual_seed(2), model_name="m", threat="t", **kwargs
    )
    assert [r.check for r in results] == [
        "gradient-zero-or-nan",
        "nondeterministic-output",
        "unbounded-budget-not-reached",
    ]
    assert all(r.model == "m" and r.threat == "t" for r in results)
    return {r.check: r for r in results}


@pytest.fixture(scope="module")
def plain():
    return _probe(_target())


def test_plain_tiny_model_raises_no_flag(plain):
    assert not any(r.flagged for r in plain.values()), plain
    assert plain["gradient-zero-or-nan"].value == 0.0
    assert plain["nondeterministic-output"].value <= plain["nondeterministic-output"].threshold
    assert plain["unbounded-budget-not-reached"].value == 1.0


@pytest.mark.parametrize("objective", ["ce", "margin"])
def test_other_seeds_and_objectives_stay_quiet(objective):
    results = _probe(_target(seed=1), objective=objective, unbounded_steps=50)
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
    result = probe_model(target, x, wrong, generator=torch.Generator().manual_seed(0))[2]
    assert not result.flagged and math.isnan(result.value) and "not evaluated" in result.detail


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
