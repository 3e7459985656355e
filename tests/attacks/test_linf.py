"""The L-inf gradient attacks (fgsm, bim, ilcm, pgd, mim): torchattacks cross-check, budget, bounds, targets, RNG."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchattacks

import robench.attacks.linf  # noqa: F401 - imported for its registrations
from robench.attacks.base import ATTACKS, AttackTarget, Bounds
from robench.attacks.linf import BIM, FGSM, ILCM, LINF_ATTACKS, MIM, PGD, LinfGradientAttack
from robench.attacks.targets import choose_targets
from robench.core.errors import ConfigError
from robench.core.models import Classifier, Normalize
from robench.defenses import DEFENSES
from tiny import assert_target_success_close, make_tiny

N_TEST = 300


def _data(trained_tiny, n: int = N_TEST) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset of the test split (the split is sorted by label)."""
    test = trained_tiny["data"].test
    index = torch.randperm(len(test), generator=_gen(123))[:n]
    return test.x[index], test.y[index]


def _target(bundle, bounds: Bounds = Bounds(0.0, 1.0)) -> AttackTarget:
    return AttackTarget(model=bundle.model, defense=bundle.defense, bounds=bounds)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_registered_with_paper_defaults():
    assert {"fgsm", "bim", "ilcm", "pgd", "mim"} <= set(ATTACKS.names())
    for cls in LINF_ATTACKS:
        assert ATTACKS.get(cls.name) is cls and cls.norm == "linf"
        attack = cls()
        assert attack.objective == "ce" and attack.likelihood_weight == 0.0
    fgsm = FGSM()
    assert (fgsm.eps, fgsm.steps, fgsm.step_size, fgsm.random_start) == (0.1, 1, 0.1, False)
    assert FGSM.for_dataset("mnist", {"eps": "0.3"}).step_size == 0.3  # step follows eps
    assert (BIM().eps, BIM().step, BIM().steps) == (0.2, 0.01, 20)
    assert (ILCM().eps, ILCM().step, ILCM().steps, ILCM.default_target_mode) == (0.2, 0.01, 20, "least-likely")
    assert dataclasses.astuple(PGD())[:4] == (8 / 255, 2 / 255, 10, True)
    assert PGD.for_dataset("cifar10", {"steps": "50"}).steps == 50
    assert (MIM().decay, MIM().eps, MIM().step, MIM().steps, MIM().random_start) == (1.0, 8 / 255, 2 / 255, 10, False)


# name, robench attack, torchattacks factory, deterministic (no random start)
CROSS_CHECKS = [
    ("fgsm", FGSM(eps=0.1), lambda m: torchattacks.FGSM(m, eps=0.1), True),
    ("bim", BIM(), lambda m: torchattacks.BIM(m, eps=0.2, alpha=0.01, steps=20), True),
    (
        "pgd",
        PGD(eps=0.1, step=0.02, steps=10),
        lambda m: torchattacks.PGD(m, eps=0.1, alpha=0.02, steps=10, random_start=True),
        False,
    ),
    (
        "pgd-no-start",
        PGD(eps=0.1, step=0.02, steps=10, random_start=False),
        lambda m: torchattacks.PGD(m, eps=0.1, alpha=0.02, steps=10, random_start=False),
        True,
    ),
    ("pgd-paper", PGD(), lambda m: torchattacks.PGD(m, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True), False),
    ("mim-paper", MIM(), lambda m: torchattacks.MIFGSM(m, eps=8 / 255, alpha=2 / 255, steps=10, decay=1.0), True),
    (
        "mim",
        MIM(eps=0.1, step=0.02, steps=10),
        lambda m: torchattacks.MIFGSM(m, eps=0.1, alpha=0.02, steps=10, decay=1.0),
        True,
    ),
]


@pytest.mark.parametrize(
    ("name", "attack", "make_reference", "deterministic"), CROSS_CHECKS, ids=[c[0] for c in CROSS_CHECKS]
)
def test_robust_accuracy_matches_torchattacks(trained_tiny, name, attack, make_reference, deterministic):
    bundle = trained_tiny["softmax"]
    x, y = _data(trained_tiny)
    ours = attack(_target(bundle), x, y, generator=_gen())
    with torch.random.fork_rng(devices=[]):  # torchattacks' random start uses the global RNG
        torch.manual_seed(0)
        theirs = make_reference(bundle.model)(x, y)
    acc_ours, acc_theirs = _accuracy(bundle.model, ours.x_adv, y), _accuracy(bundle.model, theirs, y)
    print(
        f"{name}: clean {_accuracy(bundle.model, x, y):.4f}, robust "
        f"accuracy robench {acc_ours:.4f} torchattacks {acc_theirs:.4f}"
    )
    assert abs(acc_ours - acc_theirs) <= 0.02
    assert acc_ours < _accuracy(bundle.model, x, y)  # the attack does something
    if deterministic:  # same update rule: (almost) the same pixels
        assert ((ours.x_adv - theirs).abs() > 1e-5).float().mean() < 0.01


def test_targeted_success_matches_torchattacks(trained_tiny):
    bundle = trained_tiny["softmax"]
    x, y = _data(trained_tiny)
    with torch.no_grad():
        targets = choose_targets("random", bundle.model(x), y, _gen(1))
    ours = BIM()(_target(bundle), x, y, targets, generator=_gen())
    reference = torchattacks.BIM(bundle.model, eps=0.2, alpha=0.01, steps=20)
    reference.set_mode_targeted_by_label(quiet=True)
    theirs = reference(x, targets)
    assert_target_success_close(bundle.model, ours, theirs, targets, "targeted bim", tolerance=0.02)


@pytest.mark.parametrize("cls", LINF_ATTACKS, ids=[c.name for c in LINF_ATTACKS])
def test_budget_and_bounds(trained_tiny, cls):
    bundle = trained_tiny["softmax"]
    x, y = _data(trained_tiny, 64)
    attack = cls(eps=0.15, step=0.05, steps=5) if cls is not FGSM else cls(eps=0.15)
    targets = None
    if cls.requires_targets:
        with torch.no_grad():
            targets = choose_targets("least-likely", bundle.model(x), y, _gen())
    result = attack(_target(bundle), x, y, targets, generator=_gen())
    assert (result.x_adv - x).abs().max() <= attack.eps + 1e-6
    assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0
    assert (result.x_adv != x).any()


def _rescaled(model: Classifier, scale: float, shift: float) -> Classifier:
    """The same network on inputs ``scale * x + shift`` (x in [0, 1]): identical logits, different bounds."""
    mean = tuple(float(m) * scale + shift for m in model.normalize.mean.flatten())
    std = tuple(float(s) * scale for s in model.normalize.std.flatten())
    return Classifier(Normalize(mean, std), model.backbone, model.head).eval()


@pytest.mark.parametrize(("scale", "shift"), [(0.5, 0.0), (1.0, -0.5)], ids=["0-0.5", "minus-half-to-half"])
@pytest.mark.parametrize("cls", [BIM, PGD, MIM], ids=["bim", "pgd", "mim"])
def test_declared_bounds_not_hard_coded_unit_interval(trained_tiny, scale, shift, cls):
    bundle = trained_tiny["softmax"]
    x, y = _data(trained_tiny, 128)
    attack = cls(eps=0.2, step=0.05, steps=6)
    unit = attack(_target(bundle), x, y, generator=_gen()).x_adv
    bounds = Bounds(shift, scale + shift)
    scaled_attack = dataclasses.replace(attack, eps=0.2 * scale, step=0.05 * scale)
    model = _rescaled(bundle.model, scale, shift)
    x_scaled = x * scale + shift
    result = scaled_attack(AttackTarget(model, bundle.defense, bounds), x_scaled, y, generator=_gen())
    assert result.x_adv.min() >= bounds.low and result.x_adv.max() <= bounds.high
    assert (result.x_adv - x_scaled).abs().max() <= scaled_attack.eps + 1e-6
    # Both bounds are active (MNIST has many 0 and 1 pixels) and the run is the unit run, rescaled.
    assert (result.x_adv == bounds.low).any() and (result.x_adv == bounds.high).any()
    assert ((result.x_adv - (unit * scale + shift)).abs() > 1e-4).float().mean() < 0.01


GM_CASES = [
    (cls, mode, objective, 0.0)
    for cls, mode in ((BIM, "random"), (ILCM, "least-likely"))
    for objective in ("ce", "adaptive")
]
GM_CASES.append(
    (BIM, "random", "adaptive", 0.1)
)  # plus the GM likelihood term (white-box against a likelihood detector)


@pytest.mark.parametrize(
    ("cls", "mode", "objective", "likelihood_weight"),
    GM_CASES,
    ids=[f"{c.name}-{m}-{o}-{w}" for c, m, o, w in GM_CASES],
)
def test_targeted_attacks_work_on_negative_logit_gm_model(trained_tiny, cls, mode, objective, likelihood_weight):
    """Paper 001 Sec. 4.4 attacks are targeted; eps 0.3 with 20 steps of 0.03
    (the paper's 20 x 0.01 is too short for GM)."""
    bundle = trained_tiny["gm"]
    x, y = _data(trained_tiny)
    with torch.no_grad():
        logits = bundle.model(x)
    assert (logits < 0).all()  # GM logits are -||z - mu_k||^2 / 2
    targets = choose_targets(mode, logits, y, _gen(2))
    attack = cls(eps=0.3, step=0.03, steps=20, objective=objective, likelihood_weight=likelihood_weight)
    result = attack(_target(bundle), x, y, targets, generator=_gen())
    rate = float(result.success.float().mean())
    print(f"gm {cls.name} {mode} {objective} likelihood_weight={likelihood_weight}: target success {rate:.4f}")
    assert rate >= 0.8


def test_pgd_is_reproducible_and_leaves_the_global_rng_alone(trained_tiny):
    bundle = trained_tiny["softmax"]
    x, y = _data(trained_tiny, 64)
    attack = PGD(eps=0.1, step=0.02, steps=3)
    state = torch.get_rng_state()
    first = attack(_target(bundle), x, y, generator=_gen(7)).x_adv
    assert torch.equal(torch.get_rng_state(), state)
    second = attack(_target(bundle), x, y, generator=_gen(7)).x_adv
    other = attack(_target(bundle), x, y, generator=_gen(8)).x_adv
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_one_forward_per_step_and_no_parameter_gradients(trained_tiny):
    bundle = trained_tiny["softmax"]
    x, y = _data(trained_tiny, 16)
    before = [None if p.grad is None else p.grad.clone() for p in bundle.model.parameters()]
    calls = []
    handle = bundle.model.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        x_adv = MIM(steps=5).run(_target(bundle), x, y, None, _gen())
    finally:
        handle.remove()
    assert len(calls) == 5
    assert not x_adv.requires_grad
    for old, p in zip(before, bundle.model.parameters()):
        assert (p.grad is None and old is None) or torch.equal(p.grad, old)


def test_adaptive_objective_equals_ce_for_softmax(trained_tiny):
    bundle = trained_tiny["softmax"]
    x, y = _data(trained_tiny, 32)
    ce = BIM(steps=5).run(_target(bundle), x, y, None, _gen())
    adaptive = BIM(steps=5, objective="adaptive").run(_target(bundle), x, y, None, _gen())
    assert ((ce - adaptive).abs() > 1e-5).float().mean() < 0.001


def test_momentum_survives_zero_gradients(trained_tiny):
    """The clamped margin has zero gradient once a sample is misclassified;
    MIM's L1 normalisation must not divide by 0."""
    bundle = trained_tiny["softmax"]
    x, y = _data(trained_tiny, 64)
    with torch.no_grad():
        assert (bundle.model(x).argmax(1) != y).any()
    result = MIM(eps=0.1, step=0.02, steps=5, objective="margin")(_target(bundle), x, y, generator=_gen())
    assert torch.isfinite(result.x_adv).all()


def test_ilcm_needs_targets(trained_tiny):
    bundle = trained_tiny["softmax"]
    x, y = _data(trained_tiny, 4)
    with pytest.raises(ConfigError, match="least-likely"):
        ILCM(steps=1)(_target(bundle), x, y, generator=_gen())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eps": 0.0},
        {"eps": -0.1},
        {"eps": float("nan")},
        {"eps": float("inf")},
        {"step": 0.0},
        {"step": -1.0},
        {"steps": 0},
        {"steps": 2.5},
        {"steps": True},
        {"decay": -1.0},
        {"objective": "xent"},
        {"likelihood_weight": -1.0},
        {"likelihood_weight": 0.5},  # "ce" would ignore it
    ],
)
@pytest.mark.parametrize("cls", LINF_ATTACKS, ids=[c.name for c in LINF_ATTACKS])
def test_bad_parameters_raise_config_error(cls, kwargs):
    with pytest.raises(ConfigError):
        cls(**kwargs)


def test_config_errors_from_overrides_are_helpful():
    with pytest.raises(ConfigError, match="did you mean 'margin'"):
        PGD(objective="margn")
    with pytest.raises(ConfigError):
        BIM.for_dataset("mnist", {"steps": "0"})
    with pytest.raises(ConfigError, match="did you mean 'eps'"):
        PGD.for_dataset("mnist", {"epss": "0.1"})
    assert MIM(objective="adaptive", likelihood_weight=0.5).likelihood_weight == 0.5


def test_base_engine_is_not_registered():
    assert LinfGradientAttack.name not in ATTACKS


@pytest.mark.gpu
def test_runs_on_cuda_with_a_cpu_generator():
    model, _ = make_tiny("softmax", seed=3)
    defense = DEFENSES.get("softmax")()
    x = torch.rand(32, 1, 28, 28, generator=_gen(1))
    y = torch.randint(0, 10, (32,), generator=_gen(2))
    attack = PGD(eps=0.1, step=0.02, steps=3)
    cpu = attack(AttackTarget(model, defense, Bounds(0.0, 1.0)), x, y, generator=_gen(5)).x_adv
    cuda_model = model.to("cuda")
    target = AttackTarget(cuda_model, defense, Bounds(0.0, 1.0))
    on_cuda = attack(target, x.cuda(), y.cuda(), generator=_gen(5)).x_adv
    assert on_cuda.device.type == "cuda"
    assert ((on_cuda.cpu() - cpu).abs() > 1e-4).float().mean() < 0.01  # same random start, drawn on the CPU
    cuda_gen = torch.Generator(device="cuda").manual_seed(5)
    result = attack(target, x.cuda(), y.cuda(), generator=cuda_gen)
    assert (result.x_adv - x.cuda()).abs().max() <= attack.eps + 1e-6
