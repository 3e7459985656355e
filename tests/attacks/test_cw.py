"""C&W L2 (cw-l2, cw-hc): at least as strong as foolbox, torchattacks' negative-logit trap, per-sample search,
confidence, bounds, configuration.

The attacks run with few iterations to stay fast on a CPU. FAST uses lr 0.1 rather than the default 0.01:
Adam moves each coordinate of w by about lr per iteration and saturated MNIST pixels sit at |w| ~ 7.25,
so with 0.01 and 100 iterations they could not move at all. initial_const 1 lets 3 search steps reach
the useful range of c.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import foolbox
import pytest
import torch
import torchattacks

import robench.attacks.cw  # noqa: F401  (registers cw-l2 and cw-hc)
from robench.attacks.base import ATTACKS, AttackTarget, Bounds
from robench.attacks.cw import CarliniWagnerHighConfidence, CarliniWagnerL2
from robench.attacks.cw_wb import CarliniWagnerWhiteBox
from robench.attacks.objectives import logit_margin
from robench.attacks.optim import MaskedAdam
from robench.attacks.targets import choose_targets
from robench.core.errors import ConfigError
from robench.core.models import Classifier, Normalize
from robench.detectors.kd import KernelDensityDetector, features_of

FAST = {"steps": 100, "binary_search_steps": 3, "lr": 0.1, "initial_const": 1.0}
UNIT = Bounds(0.0, 1.0)


def target_of(bundle, bounds: Bounds = UNIT) -> AttackTarget:
    return AttackTarget(bundle.model, bundle.defense, bounds)


def correct_images(bundle, data, n: int):
    """The first n test images the model classifies correctly (so success rates are about the attack)."""
    x, y = data.test.x[: 2 * n], data.test.y[: 2 * n]
    keep = target_of(bundle).predict(x) == y
    return x[keep][:n], y[keep][:n]


def l2(a, b):
    return (a - b).flatten(1).norm(dim=1)


def raw_margin(model, x, y):
    """Z_y - max_{i != y} Z_i, unclamped."""
    with torch.no_grad():
        return logit_margin(model(x), y, None, kappa=math.inf)


@pytest.fixture(scope="module")
def gm_run(trained_tiny):
    """cw-l2 (kappa 0) on 64 correctly classified images of the GM model; shared by two tests."""
    bundle = trained_tiny["gm"]
    x, y = correct_images(bundle, trained_tiny["data"], 64)
    result = CarliniWagnerL2(**FAST)(target_of(bundle), x, y, generator=torch.Generator())
    return x, y, result


def test_registered_names_norm_and_defaults():
    assert ATTACKS.get("cw-l2") is CarliniWagnerL2 and ATTACKS.get("cw-hc") is CarliniWagnerHighConfidence
    plain, hc = CarliniWagnerL2(), CarliniWagnerHighConfidence()
    assert plain.norm == hc.norm == "l2"
    assert (plain.kappa, hc.kappa) == (0.0, 10.0)
    assert dataclasses.replace(hc, kappa=0.0) == CarliniWagnerHighConfidence(kappa=0.0)
    assert {k: v for k, v in hc.params().items() if k != "kappa"} == {
        k: v for k, v in plain.params().items() if k != "kappa"
    }
    assert plain.params() == {
        "binary_search_steps": 5,
        "steps": 1000,
        "lr": 0.01,
        "initial_const": 1e-3,
        "kappa": 0.0,
        "abort_early": True,
        "objective": "margin",
        "likelihood_weight": 0.0,
        "return_attempt": True,
        "search_tolerance": 0.01,
    }
    assert CarliniWagnerL2.for_dataset("mnist", {"steps": "20", "abort_early": "no"}) == CarliniWagnerL2(
        steps=20, abort_early=False
    )


def test_at_least_as_strong_as_foolbox_with_equal_settings(trained_tiny):
    bundle = trained_tiny["softmax"]
    x, y = correct_images(bundle, trained_tiny["data"], 64)
    ours = CarliniWagnerL2(**FAST)(target_of(bundle), x, y, generator=torch.Generator())

    fmodel = foolbox.PyTorchModel(bundle.model, bounds=(0, 1))
    attack = foolbox.attacks.L2CarliniWagnerAttack(
        binary_search_steps=FAST["binary_search_steps"],
        steps=FAST["steps"],
        stepsize=FAST["lr"],
        confidence=0.0,
        initial_const=FAST["initial_const"],
    )
    raw, _, reported = attack(fmodel, x, y, epsilons=None)
    # Foolbox returns an all-zero image where it found nothing, and a black image is often misclassified,
    # so its reported success overcounts; an example found in tanh space is never exactly 0 everywhere.
    theirs = reported & (raw.flatten(1).abs().amax(1) > 0)

    assert ours.success.float().mean() >= theirs.float().mean() - 0.02
    both = ours.success & theirs
    assert both.sum() >= 32
    ours_median = float(l2(ours.x_adv, x)[both].median())
    theirs_median = float(l2(raw, x)[both].median())
    assert ours_median <= 1.02 * theirs_median, (ours_median, theirs_median)


def test_succeeds_on_all_negative_gm_logits_where_torchattacks_does_not(trained_tiny, gm_run):
    x, y, ours = gm_run
    model = trained_tiny["gm"].model
    with torch.no_grad():
        assert (model(x) < 0).all()  # GM logits -||z - mu_k||^2 / 2
    ours_rate = float(ours.success.float().mean())

    baseline = torchattacks.CW(model, c=1, kappa=0, steps=FAST["steps"], lr=FAST["lr"])
    adv = baseline(x, y)
    theirs_rate = float((target_of(trained_tiny["gm"]).predict(adv) != y).float().mean())

    assert ours_rate >= 0.9
    assert ours_rate >= theirs_rate + 0.5, (ours_rate, theirs_rate)


def double_bundle_inputs(trained_tiny, n: int):
    bundle = trained_tiny["softmax"]
    x, y = correct_images(bundle, trained_tiny["data"], n)
    return copy.deepcopy(bundle.model).double().eval(), bundle.defense, x.double(), y


def test_batched_equals_one_at_a_time(trained_tiny, float64):
    model, defense, x, y = double_bundle_inputs(trained_tiny, 5)
    target = AttackTarget(model, defense, UNIT)
    attack = CarliniWagnerL2(**{**FAST, "steps": 60})
    batched = attack(target, x, y, generator=torch.Generator())
    assert batched.success.all()
    assert l2(batched.x_adv, x).std() > 0.1  # the samples need different c and stop at different times
    for i in range(len(x)):
        alone = attack(target, x[i : i + 1], y[i : i + 1], generator=torch.Generator())
        assert (alone.x_adv[0] - batched.x_adv[i]).abs().max() < 1e-5, i


def test_high_confidence_reaches_kappa_and_costs_more_distortion(trained_tiny, gm_run):
    x, y, plain = gm_run
    x, y, plain_adv, plain_success = x[:32], y[:32], plain.x_adv[:32], plain.success[:32]
    model = trained_tiny["gm"].model
    hc = ATTACKS.get("cw-hc")(**FAST)(target_of(trained_tiny["gm"]), x, y, generator=torch.Generator())
    assert hc.success.float().mean() >= 0.8
    assert (raw_margin(model, hc.x_adv, y)[hc.success] <= -10.0 + 1e-3).all()
    assert (raw_margin(model, plain_adv, y)[plain_success] > -10.0).all()  # kappa 0 stops near the boundary
    both = hc.success & plain_success
    assert l2(hc.x_adv, x)[both].median() > l2(plain_adv, x)[both].median()


def test_targeted_and_adaptive_objective_with_likelihood_term(trained_tiny):
    bundle = trained_tiny["gm"]
    x, y = correct_images(bundle, trained_tiny["data"], 8)
    targets = (y + 1) % 10
    target = target_of(bundle)
    attack = CarliniWagnerL2(**{**FAST, "steps": 60})
    aimed = attack(target, x, y, targets, generator=torch.Generator())
    assert aimed.success.float().mean() >= 0.75
    assert (aimed.predicted[aimed.success] == targets[aimed.success]).all()
    adaptive = dataclasses.replace(attack, objective="adaptive-margin", likelihood_weight=0.05)
    result = adaptive(target, x, y, generator=torch.Generator())
    assert result.success.float().mean() >= 0.75
    assert torch.equal(result.x_adv[~result.success], x[~result.success])


def shifted(model: Classifier, offset: float) -> Classifier:
    """A classifier that sees ``x + offset`` exactly as ``model`` sees ``x`` (shared weights)."""
    mean = tuple(float(m) + offset for m in model.normalize.mean.flatten())
    std = tuple(float(s) for s in model.normalize.std.flatten())
    return Classifier(Normalize(mean, std), model.backbone, model.head).eval()


def test_other_bounds_give_the_shifted_result_inside_them(trained_tiny, float64):
    model, defense, x, y = double_bundle_inputs(trained_tiny, 5)
    attack = CarliniWagnerL2(**{**FAST, "steps": 60})
    unit = attack(AttackTarget(model, defense, UNIT), x, y, generator=torch.Generator())
    # Carlini's reference range [-0.5, 0.5]: the same model up to the shift gives the shifted result
    centred_model = shifted(model, -0.5).double()
    centred = attack(AttackTarget(centred_model, defense, Bounds(-0.5, 0.5)), x - 0.5, y, generator=torch.Generator())
    assert centred.x_adv.min() >= -0.5 and centred.x_adv.max() <= 0.5
    assert torch.equal(centred.success, unit.success) and unit.success.all()
    # Equal up to float rounding, which 60 Adam steps amplify and which depends on the thread count
    # (seen: 2e-3 with 2 threads); an attack hard-coding [0, 1] would be off by 0.5.
    assert (centred.x_adv + 0.5 - unit.x_adv).abs().max() < 2e-2
    # a wider range than the data's: the output stays inside it and uses it
    wide = attack(AttackTarget(model, defense, Bounds(-1.0, 2.0)), x, y, generator=torch.Generator())
    assert wide.x_adv.min() >= -1.0 and wide.x_adv.max() <= 2.0
    assert wide.x_adv.min() < 0.0 or wide.x_adv.max() > 1.0


def test_failures_come_back_as_flagged_best_attempts_or_unchanged(trained_tiny):
    bundle = trained_tiny["softmax"]
    x, y = correct_images(bundle, trained_tiny["data"], 8)
    target = target_of(bundle)
    weak_settings = {"steps": 5, "binary_search_steps": 1, "initial_const": 1e-4}
    unchanged = CarliniWagnerL2(**weak_settings, return_attempt=False)(target, x, y, generator=torch.Generator())
    assert not unchanged.success.all()
    assert torch.equal(unchanged.x_adv[~unchanged.success], x[~unchanged.success])
    assert not unchanged.best_attempt.any()
    # by default a failure returns its best attempt (the references' behaviour), flagged and never a success
    weak = CarliniWagnerL2(**weak_settings)(target, x, y, generator=torch.Generator())
    assert torch.equal(weak.success, unchanged.success)
    failed = ~weak.success
    assert weak.best_attempt[failed].all() and not weak.best_attempt[weak.success].any()
    assert ((weak.x_adv[failed] - x[failed]).flatten(1).norm(dim=1) > 0).all()
    assert torch.equal(weak.x_adv[weak.success], unchanged.x_adv[weak.success])
    # labelled with a class the model does not predict: already adversarial, distortion 0
    wrong = (target.predict(x) + 1) % 10
    done = CarliniWagnerL2(**FAST)(target, x, wrong, generator=torch.Generator())
    assert done.success.all() and torch.equal(done.x_adv, x)


@pytest.mark.parametrize(
    "params",
    [
        {"steps": 0},
        {"steps": 2.5},
        {"binary_search_steps": 0},
        {"binary_search_steps": True},
        {"lr": 0.0},
        {"lr": -0.01},
        {"lr": float("nan")},
        {"initial_const": 0.0},
        {"initial_const": float("inf")},
        {"kappa": -1.0},
        {"objective": "ce"},
        {"objective": "adaptive"},
        {"objective": "nope"},
        {"likelihood_weight": -0.1},
        {"likelihood_weight": 0.1},  # needs the adaptive objective
        {"abort_early": "yes"},
    ],
)
def test_bad_parameters_raise_config_error(params):
    with pytest.raises(ConfigError):
        CarliniWagnerL2(**params)


def test_bad_overrides_raise_config_error():
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        ATTACKS.get("cw-l2").for_dataset("mnist", {"stepz": "10"})
    with pytest.raises(ConfigError):
        ATTACKS.get("cw-hc").for_dataset("mnist", {"kappa": "-3"})
    with pytest.raises(ConfigError):
        ATTACKS.get("cw-l2").for_dataset("mnist", {"lr": "fast"})


def test_a_settled_binary_search_stops_for_that_sample(trained_tiny):
    """search_tolerance stops a sample's search once its c bounds meet; 0 runs every step (the reference)."""
    from robench.core.execution import PassCounter

    bundle, data = trained_tiny["softmax"], trained_tiny["data"]
    x, y = correct_images(bundle, data, 12)
    settings = {**FAST, "steps": 30, "binary_search_steps": 4, "abort_early": False}
    runs = {}
    for tolerance in (0.0, 1.0):  # 1.0: settled as soon as a successful c is known
        attack = CarliniWagnerL2(**settings, search_tolerance=tolerance)
        with PassCounter(bundle.model) as counter:
            result = attack(target_of(bundle), x, y, generator=torch.Generator())
        runs[tolerance] = (result, counter.images)
    (full, full_passes), (settled, settled_passes) = runs[0.0], runs[1.0]
    assert full.success.any()
    assert settled_passes < full_passes
    assert torch.equal(settled.success, full.success)  # a success, once found, is kept: stopping loses none
    # those that stopped kept their first successful perturbation; searching on can only shrink it
    assert (l2(settled.x_adv, x)[full.success] >= l2(full.x_adv, x)[full.success] - 1e-6).all()


class RowByRow(torch.nn.Module):
    """``inner`` run on one row at a time, so that a sample's floats cannot depend on the rest of the batch (batched
    convolutions and products round differently for different batch sizes); ``rows`` gets the row count of every
    forward that builds a graph (one per image-step)."""

    def __init__(self, inner: torch.nn.Module, rows: list[int] | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.rows = rows
        for name in ("num_classes", "feature_dim"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rows is not None and torch.is_grad_enabled():
            self.rows.append(x.shape[0])
        return torch.cat([self.inner(x[i : i + 1]) for i in range(x.shape[0])])


def row_by_row(model: Classifier) -> tuple[Classifier, list[int]]:
    rows: list[int] = []
    return Classifier(model.normalize, RowByRow(model.backbone, rows), RowByRow(model.head)), rows


def assert_each_sample_runs_as_if_alone(attack, target, x, y, targets, rows):
    """The batch equals each sample alone, bit for bit, and keeps every sample still searching in every forward.

    A sample alone takes T_i image-steps (one forward each); with each sample's search independent of the others,
    forward k of the batch holds exactly the samples with T_i > k: all of them until the first one has finished
    its whole search (the refill), then one fewer per finished sample (the tail).
    """
    batched = attack(target, x, y, targets, generator=torch.Generator())
    batch_rows = list(rows)
    alone_steps = []
    for i in range(len(x)):
        rows.clear()
        one = None if targets is None else targets[i : i + 1]
        alone = attack(target, x[i : i + 1], y[i : i + 1], one, generator=torch.Generator())
        assert torch.equal(alone.x_adv[0], batched.x_adv[i]), i
        assert bool(alone.success[0]) == bool(batched.success[i]), i
        assert bool(alone.best_attempt[0]) == bool(batched.best_attempt[i]), i
        alone_steps.append(len(rows))
    assert batch_rows == [sum(t > k for t in alone_steps) for k in range(max(alone_steps))]
    return batched, alone_steps


@pytest.mark.parametrize(
    ("settings", "targeted"),
    [
        # 10 search steps: the last one is the reference's final repeat at the best c found
        ({"steps": 30, "binary_search_steps": 10, "lr": 0.1, "initial_const": 1e-2}, False),
        ({"steps": 40, "binary_search_steps": 4, "lr": 0.1, "initial_const": 1e-1, "search_tolerance": 0.0}, True),
    ],
)
def test_the_refilled_search_equals_each_sample_alone_and_keeps_the_batch_full(trained_tiny, settings, targeted):
    bundle, data = trained_tiny["softmax"], trained_tiny["data"]
    x, y = correct_images(bundle, data, 6)
    model, rows = row_by_row(bundle.model)
    target = AttackTarget(model, bundle.defense, UNIT)
    targets = None
    if targeted:
        targets = choose_targets("random", bundle.model(x).detach(), y, torch.Generator().manual_seed(1))
    attack = CarliniWagnerL2(**settings)  # abort_early, return_attempt: the defaults
    batched, alone_steps = assert_each_sample_runs_as_if_alone(attack, target, x, y, targets, rows)
    assert batched.success.any()
    # the samples' searches end at different iterations of different search steps, so the refill is exercised:
    # after the first sample has finished one search step, the others still fill the batch
    assert len(set(alone_steps)) > 1 and min(alone_steps) > settings["steps"] // 10
    assert max(alone_steps) > settings["steps"]


def test_the_refilled_white_box_search_equals_each_sample_alone(trained_tiny):
    bundle, data = trained_tiny["softmax"], trained_tiny["data"]
    x, y = data.test.x[:5], data.test.y[:5]
    targets = choose_targets("random", bundle.model(x).detach(), y, torch.Generator().manual_seed(3))
    model, rows = row_by_row(bundle.model)
    kd = KernelDensityDetector(bandwidth=1.2, per_class=50)
    kd.fit(bundle.model, bundle.defense, data.train, torch.device("cpu"))
    eta = kd.median_training_nll(features_of(bundle.model, data.train.x, torch.device("cpu")), data.train.y)
    log_density = kd.log_density  # row by row too: its distances are products over the batch
    kd.log_density = lambda z, classes: torch.cat(
        [log_density(z[i : i + 1], classes[i : i + 1]) for i in range(len(z))]
    )
    target = AttackTarget(model, bundle.defense, UNIT, detector=kd, detector_eta=eta)
    attack = CarliniWagnerWhiteBox(steps=30, binary_search_steps=3, lr=0.1)
    _, alone_steps = assert_each_sample_runs_as_if_alone(attack, target, x, y, targets, rows)
    assert len(set(alone_steps)) > 1


def test_masked_adam_with_a_step_per_row_equals_the_shared_step():
    """C&W's samples sit at different iterations: a per-row t gives each row the bits of an int t."""
    torch.manual_seed(0)
    shared, per_row = MaskedAdam(torch.zeros(4, 3, 5), 0.01), MaskedAdam(torch.zeros(4, 3, 5), 0.01)
    ts = [1, 1, 1, 1]
    for _ in range(40):
        grad = torch.randn(4, 3, 5)
        idx = torch.randperm(4)[: int(torch.randint(1, 5, ()))]
        steps = torch.tensor([ts[i] for i in idx.tolist()])
        together = per_row.step(idx, grad[idx], steps)
        for k, i in enumerate(idx.tolist()):
            alone = shared.step(torch.tensor([i]), grad[i : i + 1], ts[i])
            assert torch.equal(alone[0], together[k])
            ts[i] += 1
        if ts[0] > 9:  # a row restarts (C&W's next search step)
            per_row.reset(torch.tensor([0]))
            shared.reset(torch.tensor([0]))
            ts[0] = 1
    assert torch.equal(shared.m, per_row.m) and torch.equal(shared.v, per_row.v)
