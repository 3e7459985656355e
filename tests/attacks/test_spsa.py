"""SPSA (spsa): the gradient estimate on closed-form losses, torchattacks cross-check, targets, budget, bounds,
RNG, early stop, configuration.

Most attack tests use a small MLP trained in a fraction of a second on synthetic 8x8 "images" (10 noisy
class prototypes in [0, 1], many pixels exactly on a bound): SPSA needs 2 * samples forwards per image
and step, which a CNN on one CPU thread would make take minutes.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

import robench.attacks.spsa  # noqa: F401 - imported to register spsa
from robench.attacks.base import ATTACKS, AttackTarget, Bounds
from robench.attacks.objectives import objective_value
from robench.attacks.spsa import SPSA, spsa_gradient
from robench.attacks.targets import choose_targets
from robench.core.errors import ConfigError
from robench.core.models import Classifier, Normalize
from robench.defenses import DEFENSES
from tiny import assert_target_success_close, make_tiny

K = 10
SHAPE = (1, 8, 8)
UNIT = Bounds(0.0, 1.0)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _MLP(nn.Module):
    feature_dim = 32

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(SHAPE), self.feature_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _draw(n: int, prototypes: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, K, (n,), generator=generator)
    return (prototypes[y] + 0.35 * torch.randn(n, *SHAPE, generator=generator)).clamp(0, 1), y


@pytest.fixture(scope="module")
def mlp():
    """(target, x, y): a softmax MLP trained on synthetic data, and 64 test points it classifies correctly."""
    generator = _gen(0)
    prototypes = torch.rand(K, *SHAPE, generator=generator)
    defense = DEFENSES.get("softmax")()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Classifier(Normalize((0.5,), (0.5,)), _MLP(), defense.make_head(_MLP.feature_dim, K))
    x_train, y_train = _draw(4096, prototypes, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        index = torch.randint(0, len(x_train), (256,), generator=generator)
        loss = F.cross_entropy(model(x_train[index]), y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)  # so a test can tell that attacks leave the parameters' .grad alone
    model.eval()
    x, y = _draw(128, prototypes, generator)
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return AttackTarget(model, defense, UNIT), x[keep][:64], y[keep][:64]


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# --- the gradient estimate -------------------------------------------------------------------------------


def _linear_loss(weights: torch.Tensor):
    """Per-row loss x_r . w_{r mod N}: image i has the closed-form gradient weights[i]."""

    def loss(probes: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(probes.shape[0]) % weights.shape[0]
        return (probes.flatten(1) * weights[rows]).sum(1)

    return loss


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


def test_cosine_with_the_true_gradient_rises_with_samples():
    n = 6
    weights = torch.randn(n, 16, generator=_gen(1))
    x = torch.rand(n, 1, 4, 4, generator=_gen(2))
    mean_cosine = {}
    for samples in (8, 128, 2048):
        cosines = [
            _cosine(spsa_gradient(_linear_loss(weights), x, 0.01, samples, _gen(seed), 4096), weights)
            for seed in range(4)
        ]
        mean_cosine[samples] = torch.stack(cosines)
    low, mid, high = (mean_cosine[s].mean() for s in (8, 128, 2048))
    assert low < mid < high
    assert mean_cosine[2048].min() > 0.9  # every image, every seed: its own gradient, not a neighbour's
    assert mean_cosine[8].mean() < 0.8


def test_each_image_gets_independent_draws():
    """Identical images with identical losses still get different estimates (torchattacks shares v)."""
    w = torch.randn(1, 16, generator=_gen(3))
    x = torch.rand(1, 1, 4, 4, generator=_gen(4)).expand(5, -1, -1, -1)
    estimate = spsa_gradient(_linear_loss(w.expand(5, -1)), x, 0.01, 32, _gen(), 4096).flatten(1)
    assert torch.cdist(estimate, estimate)[~torch.eye(5, dtype=torch.bool)].min() > 1e-3


def test_linear_loss_estimate_converges_to_the_weights():
    w = torch.randn(3, 16, generator=_gen(5), dtype=torch.float64)
    x = torch.rand(3, 1, 4, 4, generator=_gen(6), dtype=torch.float64)
    estimate = spsa_gradient(_linear_loss(w), x, 0.01, 8192, _gen(), 4096).flatten(1)
    # relative error ~ sqrt(d / samples) = 0.044 for d = 16
    assert ((estimate - w).norm(dim=1) / w.norm(dim=1)).max() < 0.1


def test_central_differences_are_exact_for_a_quadratic_at_any_delta():
    """(f(x + dv) - f(x - dv)) / 2d = grad f . v exactly for a quadratic, so delta cannot change the estimate
    (a one-sided difference would add d/2 v'Hv)."""
    a = torch.rand(2, 16, generator=_gen(7), dtype=torch.float64) + 0.5
    x = torch.rand(2, 1, 4, 4, generator=_gen(8), dtype=torch.float64)

    def quadratic(probes: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(probes.shape[0]) % 2
        return (a[rows] * probes.flatten(1).square()).sum(1)

    small = spsa_gradient(quadratic, x, 1e-3, 64, _gen(9), 4096)
    large = spsa_gradient(quadratic, x, 0.5, 64, _gen(9), 4096)
    torch.testing.assert_close(small, large, rtol=0, atol=1e-9)
    assert _cosine(spsa_gradient(quadratic, x, 0.5, 1024, _gen(9), 4096), 2 * a * x.flatten(1)).min() > 0.9


def test_probes_are_the_iterate_plus_and_minus_delta_v_and_respect_max_batch():
    """Guards against cleverhans' 2x + delta v: every probe is x +- delta in each coordinate, in mirrored pairs."""
    n, delta, samples, max_batch = 4, 0.05, 10, 24  # 3 perturbations per call: calls of 3, 3, 3, 1
    x = torch.rand(n, 1, 4, 4, generator=_gen(10))
    calls: list[torch.Tensor] = []

    def recording(probes: torch.Tensor) -> torch.Tensor:
        calls.append(probes.clone())
        return probes.flatten(1).sum(1)

    spsa_gradient(recording, x, delta, samples, _gen(), max_batch)
    assert [len(c) for c in calls] == [24, 24, 24, 8]
    for probes in calls:
        k = len(probes) // (2 * n)
        plus, minus = probes.reshape(2, k, *x.shape)
        torch.testing.assert_close((plus - x).abs(), torch.full_like(plus, delta))
        torch.testing.assert_close(plus + minus, 2 * x.expand_as(plus))


# --- the attack ------------------------------------------------------------------------------------------


def test_registered_with_004_defaults():
    assert ATTACKS.get("spsa") is SPSA and SPSA.norm == "linf"
    attack = SPSA()
    assert (attack.eps, attack.lr, attack.delta, attack.samples) == (8 / 255, 0.01, 0.01, 128)
    assert (attack.objective, attack.early_stop) == ("adaptive", True)
    mnist = SPSA.for_dataset("mnist", {"samples": "4096"})
    assert (mnist.eps, mnist.samples) == (0.3, 4096)
    assert SPSA.for_dataset("cifar10").eps == 8 / 255


@pytest.mark.parametrize(
    "params",
    [
        {"eps": 0.0},
        {"eps": -0.1},
        {"eps": math.inf},
        {"lr": 0.0},
        {"delta": -1.0},
        {"samples": 0},
        {"samples": 2.5},
        {"steps": 0},
        {"max_batch": 1},
        {"objective": "cross-entropy"},
        {"early_stop": "yes"},
    ],
    ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()),
)
def test_bad_parameters_raise_config_error(params):
    with pytest.raises(ConfigError, match="spsa"):
        SPSA(**params)


def test_matches_torchattacks_robust_accuracy(mlp):
    """Untargeted, same budget, Adam, delta and sample count; torchattacks' loss is the (unclamped) logit
    margin Z_y - max_{i != y} Z_i, so ours runs with objective "margin" (clamped at 0, which with early
    stop changes nothing: a sample stops when its margin turns negative)."""
    target, x, y = mlp
    eps, steps, samples = 0.15, 50, 64
    ours = SPSA(eps=eps, steps=steps, samples=samples, objective="margin")(target, x, y, generator=_gen())
    with torch.random.fork_rng(devices=[]):  # torchattacks draws from the global RNG
        torch.manual_seed(0)
        reference = torchattacks.SPSA(
            target.model, eps=eps, delta=0.01, lr=0.01, nb_iter=steps, nb_sample=samples, max_batch_size=samples
        )
        theirs = reference(x, y)
    acc_ours, acc_theirs = 1 - float(ours.success.float().mean()), _accuracy(target.model, theirs, y)
    print(f"spsa eps {eps}: robust accuracy robench {acc_ours:.4f} torchattacks {acc_theirs:.4f}")
    assert abs(acc_ours - acc_theirs) <= 0.1
    assert acc_ours < 0.8  # the setting is not trivial: both attacks reduce accuracy from 100%


def test_targeted_matches_torchattacks_by_label_and_its_random_mode_does_nothing(mlp):
    """torchattacks' SPSA never calls get_target_label: targets work only passed as labels ("by label");
    in its random-target mode it attacks towards the true label, and accuracy stays at 100%."""
    target, x, y = mlp
    eps, steps, samples = 0.2, 50, 64
    with torch.no_grad():
        targets = choose_targets("random", target.model(x), y, _gen(1))
    ours = SPSA(eps=eps, steps=steps, samples=samples, objective="margin")(target, x, y, targets, generator=_gen())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        by_label = torchattacks.SPSA(
            target.model, eps=eps, delta=0.01, lr=0.01, nb_iter=steps, nb_sample=samples, max_batch_size=samples
        )
        by_label.set_mode_targeted_by_label(quiet=True)
        theirs = by_label(x, targets)
        random_mode = torchattacks.SPSA(
            target.model, eps=eps, delta=0.01, lr=0.01, nb_iter=5, nb_sample=samples, max_batch_size=samples
        )
        random_mode.set_mode_targeted_random(quiet=True)
        theirs_random = random_mode(x, y)
    assert_target_success_close(target.model, ours, theirs, targets, f"spsa targeted eps {eps}", tolerance=0.1)
    assert _accuracy(target.model, theirs_random, y) == 1.0


def test_untargeted_and_targeted_attacks_work(mlp):
    target, x, y = mlp
    attack = SPSA(eps=0.3, steps=50, samples=32)  # objective "adaptive": the cross-entropy for softmax
    untargeted = attack(target, x, y, generator=_gen())
    assert untargeted.success.float().mean() > 0.85  # accuracy from 100% to below 15%
    with torch.no_grad():
        targets = choose_targets("random", target.model(x), y, _gen(1))
    targeted = attack(target, x, y, targets, generator=_gen())
    rate = float(targeted.success.float().mean())
    print(f"spsa targeted success {rate:.4f} (chance 1/{K})")
    assert rate > 0.5
    assert (targeted.predicted == targets).float().mean() > (untargeted.predicted == targets).float().mean() + 0.3


def test_budget_bounds_reproducibility_and_global_rng(mlp):
    target, x, y = mlp
    attack = SPSA(eps=0.1, steps=10, samples=16, early_stop=False)
    state = torch.get_rng_state()
    first = attack(target, x, y, generator=_gen(7)).x_adv
    assert torch.equal(torch.get_rng_state(), state)
    assert (first - x).abs().max() <= attack.eps + 1e-6
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert torch.equal(first, attack(target, x, y, generator=_gen(7)).x_adv)
    assert not torch.equal(first, attack(target, x, y, generator=_gen(8)).x_adv)


def test_declared_bounds_not_hard_coded_unit_interval(mlp):
    """The same network on inputs 2x - 1 in (-1, 1): outputs stay inside,
    and pixels pushed onto either bound are clipped there."""
    target, x, y = mlp
    old = target.model
    model = Classifier(Normalize((0.0,), (1.0,)), old.backbone, old.head).eval()  # (2x - 1 - 0) / 1 = (x - 0.5) / 0.5
    bounds = Bounds(-1.0, 1.0)
    x_scaled = 2 * x - 1
    attack = SPSA(eps=0.3, lr=0.02, steps=30, samples=16, early_stop=False)
    x_adv = attack(AttackTarget(model, target.defense, bounds), x_scaled, y, generator=_gen()).x_adv
    assert x_adv.min() >= -1.0 and x_adv.max() <= 1.0
    assert (x_adv - x_scaled).abs().max() <= attack.eps + 1e-6
    assert ((x_adv == -1.0) & (x_scaled > -1.0)).any() and ((x_adv == 1.0) & (x_scaled < 1.0)).any()
    assert (x_adv < 0).any()  # a [0, 1] clip would have moved every negative pixel


def _count_rows(model: nn.Module, sizes: list[int]):
    def hook(module, inputs, output):
        assert not torch.is_grad_enabled()  # every model evaluation runs without a graph
        sizes.append(inputs[0].shape[0])

    return model.backbone.register_forward_hook(hook)


def test_early_stop_freezes_samples_at_their_first_adversarial_point(mlp):
    target, x, y = mlp
    wrong = y.clone()
    wrong[:8] = (y[:8] + 1) % K  # adversarial already on the clean input
    attack = SPSA(eps=0.25, steps=15, samples=16)
    short = attack(target, x, wrong, generator=_gen(3))
    assert torch.equal(short.x_adv[:8], x[:8])
    longer_result = dataclasses.replace(attack, steps=30)(target, x, wrong, generator=_gen(3))
    done = short.success
    assert done[8:].any() and not done.all()
    assert torch.equal(longer_result.x_adv[done], short.x_adv[done])  # frozen: more steps never move them
    assert not torch.equal(longer_result.x_adv[~done], short.x_adv[~done])
    # without early stop the already-adversarial samples are optimised too
    moving = SPSA(eps=0.25, steps=2, samples=4, early_stop=False)(target, x, wrong, generator=_gen(3))
    assert (moving.x_adv[:8] != x[:8]).any()


def test_forward_cost_no_model_gradients_and_max_batch(mlp):
    target, x, y = mlp
    x, y = x[:8], y[:8]
    sizes: list[int] = []
    handle = _count_rows(target.model, sizes)
    try:
        wrong = (y + 1) % K
        SPSA(steps=5, samples=16).run(target, x, wrong, None, _gen())  # all adversarial at x: one check, no probes
        assert sizes == [8]
        sizes.clear()
        x_adv = SPSA(eps=0.01, steps=3, samples=5, max_batch=6, early_stop=False).run(target, x, y, None, _gen())
    finally:
        handle.remove()
    assert max(sizes) <= 6 and sum(sizes) == 3 * 2 * 5 * 8  # images in groups of 3: 2 probes each per forward
    assert not x_adv.requires_grad
    assert all(p.grad is None for p in target.model.parameters())


@pytest.mark.parametrize("defense", ["gm", "mmc"])
def test_adaptive_objective_decreases_on_other_heads(defense):
    """The default objective is the defense's own (004 App. B.4); SPSA lowers it on GM and MMC heads too."""
    model, _ = make_tiny(defense)
    target = AttackTarget(model, DEFENSES.get(defense).for_dataset("mnist"), UNIT)
    x = torch.rand(8, 1, 28, 28, generator=_gen(11))
    y = target.predict(x)
    x_adv = SPSA(eps=0.3, lr=0.05, steps=4, samples=16, early_stop=False)(target, x, y, generator=_gen()).x_adv
    with torch.no_grad():
        before = objective_value("adaptive", target, target.forward(x), y, None)
        after = objective_value("adaptive", target, target.forward(x_adv), y, None)
    assert (after < before).float().mean() >= 0.75


@pytest.mark.gpu
def test_cuda_inputs_with_a_cpu_generator(mlp):
    """The runner passes a CPU generator; draws then come from a CUDA generator seeded from it."""
    target, x, y = mlp
    cuda = AttackTarget(copy.deepcopy(target.model).to("cuda"), target.defense, UNIT)
    attack = SPSA(eps=0.15, steps=20, samples=64)
    first = attack(cuda, x.cuda(), y.cuda(), generator=_gen(1))
    second = attack(cuda, x.cuda(), y.cuda(), generator=_gen(1))
    assert first.x_adv.is_cuda and torch.equal(first.x_adv, second.x_adv)
    assert (first.x_adv.cpu() - x).abs().max() <= attack.eps + 1e-6
    assert first.success.float().mean() > 0.2
