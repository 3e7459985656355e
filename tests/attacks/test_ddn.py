"""DDN (ddn; Rony et al. 2019): a cross-check against foolbox's DDNAttack, outputs, targets, RNG, config.

The cross-check runs robench's DDN and foolbox 3.3.4's ``DDNAttack`` with equal settings (the defaults but 40
steps, to keep CI short) on the same 48 test images of the committed regression softmax bundle and compares the
median L2 distance over all samples (+inf where none was found) and the success rates. foolbox's DDN has no
projection defect (its line 152 rescales delta to eps, as Alg. 1), so it is compared as shipped. robench's
objective is the defense's adaptive one, for softmax the stable Z_y - logsumexp_{k != y} Z_k, whose normalised
gradient is foolbox's cross-entropy step except where -CE's gradient underflows (foolbox then steps in a random
direction): sample by sample the distances agree on most images (on 32 of them, 28 within 1%; one image 1.35
against foolbox's 2.87), the medians within 0.1%.

What the median check can and cannot see: DDN decouples the norm from the direction step, so its distances lie on
the lattice eps_0 (1 + gamma)^a (1 - gamma)^b and barely depend on the step size: with robench's step halved the
median moves +0.7% (48 images) to +4.2% (64 images), inside 5% (the FMN check in test_fmn.py does fail on a halved
step; measured with the mutation in place: 1.3605 against foolbox's 1.3517). It fails when the norm update is
wrong: with the eps update inverted (grow while adversarial) robench's median is +inf.
"""

from __future__ import annotations

from pathlib import Path

import foolbox
import pytest
import torch

from robench.attacks.apgd import APGDL2
from robench.attacks.base import ATTACKS, AttackTarget, Bounds
from robench.attacks.ddn import DDN
from robench.attacks.targets import choose_targets
from robench.checkpoints.bundle import load_bundle
from robench.core.data import load_dataset
from robench.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "reports" / "regression" / "models"
UNIT = Bounds(0.0, 1.0)
STEPS = 40  # CI; foolbox's default is 100
N = 48


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _committed(name: str):
    bundle = load_bundle(MODELS / f"{name}.pt")
    bundle.model.eval()
    return bundle


def _subset(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset of mnist-5k's test split (the same as test_fmn.py's)."""
    test = load_dataset("mnist-5k").test
    index = torch.randperm(len(test), generator=_gen(123))[:n]
    return test.x[index], test.y[index]


def _l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1)


def _with_failures_as_inf(distance: torch.Tensor, success: torch.Tensor) -> torch.Tensor:
    return torch.where(success, distance, torch.full_like(distance, float("inf")))


@pytest.fixture(scope="module")
def softmax_run():
    """robench's and foolbox's DDN on the same N images: (bundle, x, y, robench's result, foolbox's x_adv and
    success)."""
    bundle = _committed("softmax")
    x, y = _subset(N)
    result = DDN(steps=STEPS)(AttackTarget(bundle.model, bundle.defense, UNIT), x, y, generator=_gen())
    raw, _, _ = foolbox.attacks.DDNAttack(steps=STEPS)(
        foolbox.PyTorchModel(bundle.model, bounds=(0, 1)), x, y, epsilons=None
    )
    with torch.no_grad():
        theirs = bundle.model(raw).argmax(1) != y
    return bundle, x, y, result, (raw, theirs)


# ---------------------------------------------------------------- configuration


def test_registered_with_foolbox_s_defaults():
    assert ATTACKS.get("ddn") is DDN and DDN.norm == "l2"
    assert DDN.iterative and not DDN.single_step and DDN.budget_param is None
    assert DDN().params() == {
        "steps": 100,
        "init_epsilon": 1.0,
        "gamma": 0.05,
        "alpha_init": 1.0,
        "alpha_final": 0.01,
        "objective": "adaptive",
    }
    assert DDN(steps=30).cost() == 31
    assert DDN.for_dataset("mnist", {"steps": "20"}) == DDN(steps=20)


@pytest.mark.parametrize(
    "params",
    [
        {"steps": 0},
        {"init_epsilon": 0.0},
        {"gamma": 0.0},
        {"gamma": 1.0},
        {"alpha_init": float("nan")},
        {"alpha_final": 0.0},
        {"alpha_final": 2.0},  # above alpha_init
        {"objective": "cee"},
    ],
)
def test_bad_parameters_raise_a_one_line_config_error(params):
    with pytest.raises(ConfigError) as caught:
        DDN(**params)
    assert "\n" not in str(caught.value) and "ddn" in str(caught.value)


# ---------------------------------------------------------------- outputs


def test_every_adversarial_is_misclassified_in_bounds_and_failures_come_back_clean(softmax_run):
    bundle, x, y, result, _ = softmax_run
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0
    with torch.no_grad():
        predicted = bundle.model(result.x_adv).argmax(1)
    assert torch.equal(result.success, predicted != y)
    assert torch.equal(result.x_adv[~result.success], x[~result.success])
    assert float(result.success.float().mean()) >= 0.9


def test_median_l2_and_success_agree_with_foolbox(softmax_run):
    _, x, _, result, (raw, theirs) = softmax_run
    ours = _with_failures_as_inf(_l2(result.x_adv, x), result.success)
    peer = _with_failures_as_inf(_l2(raw, x), theirs)
    ours_median, peer_median = float(ours.median()), float(peer.median())
    print(f"DDN n={len(x)} steps={STEPS}: robench median {ours_median:.4f}, foolbox {peer_median:.4f}")
    assert abs(ours_median - peer_median) <= 0.05 * peer_median, (ours_median, peer_median)
    assert abs(float(result.success.float().mean()) - float(theirs.float().mean())) <= 1 / len(x)
    close = (ours - peer).abs() <= 0.01 * peer
    assert float(close.float().mean()) >= 0.75, (ours, peer)


@pytest.mark.parametrize("defense", ["softmax", "gm"])
def test_finds_adversarials_on_a_tiny_model(trained_tiny, defense):
    """On the session's briefly trained tiny models (conftest.py), through each defense's adaptive objective."""
    bundle = trained_tiny[defense]
    x, y = _subset(16)
    with torch.no_grad():
        correct = bundle.model(x).argmax(1) == y
    x, y = x[correct], y[correct]
    result = DDN(steps=STEPS)(AttackTarget(bundle.model, bundle.defense, UNIT), x, y, generator=_gen())
    assert float(result.success.float().mean()) >= 0.9
    distance = _l2(result.x_adv, x)[result.success]
    assert (distance > 0).all() and result.x_adv.min() >= 0 and result.x_adv.max() <= 1


def test_smaller_than_a_bounded_attack_and_shrinking_with_steps(softmax_run):
    """DDN's perturbations are smaller than those of APGD-L2 at MNIST's eps 2.0 (which stops at its first adversarial
    iterate, anywhere inside the ball), and more steps shrink them."""
    bundle, x, y, result, _ = softmax_run
    x, y = x[:16], y[:16]
    target = AttackTarget(bundle.model, bundle.defense, UNIT)
    bounded = APGDL2.for_dataset("mnist", {"steps": "20"})(target, x, y, generator=_gen())
    ours = result.success[:16]
    both = bounded.success & ours
    assert both.sum() >= 8
    ddn_l2 = _l2(result.x_adv[:16], x)[both]
    apgd_l2 = _l2(bounded.x_adv, x)[both]
    assert float(ddn_l2.median()) < 0.8 * float(apgd_l2.median()), (ddn_l2, apgd_l2)
    short = DDN(steps=10)(target, x, y, generator=_gen())
    short_l2 = _with_failures_as_inf(_l2(short.x_adv, x), short.success)
    long_l2 = _with_failures_as_inf(_l2(result.x_adv[:16], x), ours)
    assert float(long_l2.median()) < float(short_l2.median())


def test_already_misclassified_inputs_come_back_unchanged():
    bundle = _committed("softmax")
    x, y = _subset(8)
    wrong = torch.arange(8) % 2 == 0
    y = torch.where(wrong, (y + 1) % 10, y)
    result = DDN(steps=5)(AttackTarget(bundle.model, bundle.defense, UNIT), x, y, generator=_gen())
    assert torch.equal(result.x_adv[wrong], x[wrong]) and result.success[wrong].all()


def test_other_bounds_are_kept():
    bundle = _committed("softmax")
    bounds = Bounds(0.1, 0.8)
    x, y = _subset(8)
    x = bounds.clip(x)
    result = DDN(steps=10)(AttackTarget(bundle.model, bundle.defense, bounds), x, y, generator=_gen())
    assert result.x_adv.min() >= 0.1 - 1e-6 and result.x_adv.max() <= 0.8 + 1e-6
    assert result.success.any()


def test_targeted_reaches_the_targets():
    bundle = _committed("softmax")
    x, y = _subset(8)
    with torch.no_grad():
        targets = choose_targets("random", bundle.model(x), y, _gen(1))
    result = DDN(steps=30)(AttackTarget(bundle.model, bundle.defense, UNIT), x, y, targets, generator=_gen())
    assert torch.equal(result.success, result.predicted == targets)
    assert float(result.success.float().mean()) >= 0.75


# ---------------------------------------------------------------- reproducibility


def test_seeded_runs_repeat_and_leave_the_global_rng_alone():
    bundle = _committed("softmax")
    x, y = _subset(8)
    target = AttackTarget(bundle.model, bundle.defense, UNIT)
    state = torch.get_rng_state()
    first = DDN(steps=10)(target, x, y, generator=_gen(7))
    assert torch.equal(torch.get_rng_state(), state)
    again = DDN(steps=10)(target, x, y, generator=_gen(7))
    assert torch.equal(first.x_adv, again.x_adv) and torch.equal(first.success, again.success)


def test_a_zero_gradient_steps_in_a_direction_drawn_from_the_generator():
    grad = torch.zeros(3, 1, 4, 4)
    grad[1] = 2.0
    state = torch.get_rng_state()
    first = DDN._direction(grad, _gen(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.allclose(first.flatten(1).norm(dim=1), torch.ones(3))
    assert torch.allclose(first[1], torch.full((1, 4, 4), 0.25))  # a nonzero gradient is only normalised
    assert torch.equal(first, DDN._direction(grad, _gen(1)))
    assert not torch.equal(first[0], DDN._direction(grad, _gen(2))[0])


def test_batched_equals_one_at_a_time():
    """No sample's result depends on the rest of the batch (float64, so rounding cannot differ with batch size)."""
    bundle = _committed("softmax")
    model = bundle.model.double()
    x, y = _subset(4)
    x = x.double()
    target = AttackTarget(model, bundle.defense, UNIT)
    attack = DDN(steps=15)
    batched = attack(target, x, y, generator=_gen()).x_adv
    single = torch.cat([attack(target, x[i : i + 1], y[i : i + 1], generator=_gen()).x_adv for i in range(len(y))])
    assert torch.allclose(batched, single, atol=1e-9)


@pytest.mark.gpu
def test_runs_on_the_inputs_device():
    bundle = _committed("softmax")
    x, y = _subset(16)
    cpu = DDN(steps=20)(AttackTarget(bundle.model, bundle.defense, UNIT), x, y, generator=_gen()).success
    model = bundle.model.to("cuda")
    result = DDN(steps=20)(
        AttackTarget(model, bundle.defense, UNIT), x.cuda(), y.cuda(), generator=torch.Generator("cuda")
    )
    assert result.x_adv.device.type == "cuda" and result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert abs(float(result.success.float().mean()) - float(cpu.float().mean())) <= 2 / 16
