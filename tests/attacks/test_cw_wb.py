"""C&W-wb (cw-wb): the f_2 term, eta, success = target and f_2 = 0, batched = one at a time, configuration."""

from __future__ import annotations

import copy

import pytest
import torch

from robench.attacks.base import ATTACKS, AttackTarget, Bounds
from robench.attacks.cw_wb import CarliniWagnerWhiteBox, density_penalty
from robench.attacks.targets import choose_targets
from robench.core.errors import ConfigError
from robench.detectors.kd import KernelDensityDetector, features_of

FAST = {"steps": 100, "binary_search_steps": 3, "lr": 0.1}
UNIT = Bounds(0.0, 1.0)
CPU = torch.device("cpu")


def test_f2_is_zero_exactly_when_the_density_reaches_eta():
    log_density = torch.tensor([-5.0, -3.0, -3.0 + 1e-6, -1.0, -7.5])
    eta = torch.tensor(3.0)
    f2 = density_penalty(log_density, eta)
    nll = -log_density
    assert torch.equal(f2 == 0, nll <= eta)
    assert torch.allclose(f2, (nll - eta).clamp_min(0))
    assert f2[0] == pytest.approx(2.0) and f2[4] == pytest.approx(4.5)


def fitted_kd(bundle, data, per_class: int = 50) -> tuple[KernelDensityDetector, float]:
    kd = KernelDensityDetector(bandwidth=1.2, per_class=per_class)
    kd.fit(bundle.model, bundle.defense, data.train, CPU)
    eta = kd.median_training_nll(features_of(bundle.model, data.train.x, CPU), data.train.y)
    return kd, eta


def test_eta_is_the_leave_one_out_median_of_training_nll(trained_tiny):
    bundle, data = trained_tiny["softmax"], trained_tiny["data"]
    kd = KernelDensityDetector(bandwidth=1.2, per_class=0)
    kd.fit(bundle.model, bundle.defense, data.train, CPU)
    z = features_of(bundle.model, data.train.x[:300], CPU)
    labels = data.train.y[:300]
    eta = kd.median_training_nll(z, labels)
    # by hand: each point against its class's other training points
    everything = features_of(bundle.model, data.train.x, CPU)
    values = []
    for i in range(len(z)):
        same = everything[data.train.y == labels[i]]
        # "itself" within float rounding: z and everything come from different batchings, which round differently
        others = same[(same - z[i]).norm(dim=1) > 1e-5 * (1.0 + float(z[i].norm()))]
        from robench.detectors.kd import gaussian_kde_log_density

        values.append(-gaussian_kde_log_density(z[i : i + 1], others, 1.2))
    assert eta == pytest.approx(float(torch.cat(values).median()), rel=1e-4)
    with_self = float((-kd.log_density(z, labels)).median())
    assert with_self < eta  # including a point's own kernel would make training inputs look denser


def attack_inputs(trained_tiny, n: int, seed: int = 0):
    bundle, data = trained_tiny["softmax"], trained_tiny["data"]
    x, y = data.test.x[:n], data.test.y[:n]
    with torch.no_grad():
        logits = bundle.model(x)
    targets = choose_targets("random", logits, y, torch.Generator().manual_seed(seed))
    return bundle, data, x, y, targets


def test_success_means_target_class_and_f2_zero(trained_tiny):
    bundle, data, x, y, targets = attack_inputs(trained_tiny, 24)
    kd, eta = fitted_kd(bundle, data)
    target = AttackTarget(bundle.model, bundle.defense, UNIT, detector=kd, detector_eta=eta)
    result = CarliniWagnerWhiteBox(**FAST)(target, x, y, targets, generator=torch.Generator())
    assert result.success.float().mean() >= 0.8
    nll = -kd.log_density(result.forward.z, targets)
    hit = result.success
    assert (nll[hit] <= eta + 1e-4).all()  # f_2 = 0 on every success
    assert (result.predicted[hit] == targets[hit]).all()
    failed = ~hit
    assert result.best_attempt[failed].all()  # failures come back as flagged best attempts
    # the plain C&W (no f_2) leaves many of its adversarial inputs below the density level
    plain = ATTACKS.get("cw-l2")(**FAST, initial_const=1.0)(
        AttackTarget(bundle.model, bundle.defense, UNIT), x, y, targets, generator=torch.Generator()
    )
    plain_nll = -kd.log_density(plain.forward.z, targets)
    assert (plain_nll[plain.success] > eta).float().mean() > (nll[hit] > eta + 1e-4).float().mean()


def test_clean_eta_mode_uses_each_inputs_own_density(trained_tiny):
    bundle, data, x, y, targets = attack_inputs(trained_tiny, 12)
    kd, _ = fitted_kd(bundle, data)
    target = AttackTarget(bundle.model, bundle.defense, UNIT, detector=kd)
    attack = CarliniWagnerWhiteBox(**FAST, eta_mode="clean")
    result = attack(target, x, y, targets, generator=torch.Generator())
    with torch.no_grad():
        clean = target.forward(x)
        eta = -kd.log_density(clean.z, clean.predicted)
    nll = -kd.log_density(result.forward.z, targets)
    assert result.success.any()
    assert (nll[result.success] <= eta[result.success] + 1e-4).all()


def test_batched_equals_one_at_a_time(trained_tiny, float64):
    bundle, data, x, y, targets = attack_inputs(trained_tiny, 5, seed=3)
    model = copy.deepcopy(bundle.model).double().eval()
    kd = KernelDensityDetector(bandwidth=1.2, per_class=50)
    kd.fit(model, bundle.defense, data.train, CPU)
    eta = kd.median_training_nll(features_of(model, data.train.x.double(), CPU), data.train.y)
    target = AttackTarget(model, bundle.defense, UNIT, detector=kd, detector_eta=eta)
    x = x.double()
    attack = CarliniWagnerWhiteBox(**{**FAST, "steps": 60})
    batched = attack(target, x, y, targets, generator=torch.Generator())
    # The point is equality below; it must cover a success (how many of 5 succeed depends on the briefly trained model).
    assert batched.success.any()
    for i in range(len(x)):
        alone = attack(target, x[i : i + 1], y[i : i + 1], targets[i : i + 1], generator=torch.Generator())
        assert bool(alone.success[0]) == bool(batched.success[i])
        assert (alone.x_adv[0] - batched.x_adv[i]).abs().max() < 1e-5, i


def test_needs_targets_a_kd_detector_and_eta(trained_tiny):
    bundle, data, x, y, targets = attack_inputs(trained_tiny, 4)
    kd, eta = fitted_kd(bundle, data)
    attack = CarliniWagnerWhiteBox(**FAST)
    with pytest.raises(ConfigError, match="targeted"):
        attack(
            AttackTarget(bundle.model, bundle.defense, UNIT, detector=kd, detector_eta=eta),
            x,
            y,
            None,
            generator=torch.Generator(),
        )
    with pytest.raises(ConfigError, match="'kd' detector"):
        attack(AttackTarget(bundle.model, bundle.defense, UNIT), x, y, targets, generator=torch.Generator())
    with pytest.raises(ConfigError, match="detector_eta"):
        attack(
            AttackTarget(bundle.model, bundle.defense, UNIT, detector=kd), x, y, targets, generator=torch.Generator()
        )


@pytest.mark.parametrize(
    "params",
    [
        {"eta_mode": "median"},
        {"kd_per_class": -2},
        {"kd_per_class": 1.5},
        {"steps": 0},
        {"kd_bandwidth": -1.0},
        {"first_lr": 0.0},
        {"first_search_steps": 0},
    ],
)
def test_bad_parameters(params):
    with pytest.raises(ConfigError):
        CarliniWagnerWhiteBox(**params)


def test_an_unknown_eta_mode_is_one_line_with_a_suggestion():
    with pytest.raises(ConfigError, match="classs") as error:
        CarliniWagnerWhiteBox(eta_mode="classs")
    assert "class" in str(error.value) and "\n" not in str(error.value)


def test_registered_with_reference_defaults():
    attack = ATTACKS.get("cw-wb")()
    assert (
        attack.initial_const == 1.0
        and attack.kd_per_class == -1
        and attack.kd_bandwidth == 0.0
        and attack.eta_mode == "global"
    )
    needs = attack.needs()
    assert attack.norm == "l2" and needs.density and needs.kd_per_class is None and needs.kd_bandwidth is None
    assert CarliniWagnerWhiteBox(kd_per_class=100, kd_bandwidth=0.5).needs().kd_per_class == 100
    assert CarliniWagnerWhiteBox(kd_per_class=100, kd_bandwidth=0.5).needs().kd_bandwidth == 0.5


def test_a_failure_returns_a_target_classified_iterate_when_one_was_found(trained_tiny):
    """A density term that can never reach 0 (a constant f_2 = 1: no gradient, so the iterates are exactly the
    plain targeted C&W's) makes every sample fail; each returns its best attempt: target-classified wherever
    the plain C&W found a target-classified iterate, flagged, and never counted as a success."""

    class NeverDense(CarliniWagnerWhiteBox):
        def _penalty(self, target, forward, targets, context):
            return torch.ones(forward.z.shape[0], dtype=forward.z.dtype)

    bundle, data, x, y, targets = attack_inputs(trained_tiny, 12)
    kd, eta = fitted_kd(bundle, data)
    target = AttackTarget(bundle.model, bundle.defense, UNIT, detector=kd, detector_eta=eta)
    settings = {**FAST, "abort_early": False}
    result = NeverDense(**settings)(target, x, y, targets, generator=torch.Generator())
    assert not result.success.any() and result.best_attempt.all()
    plain = ATTACKS.get("cw-l2")(**settings, initial_const=1.0)(
        AttackTarget(bundle.model, bundle.defense, UNIT), x, y, targets, generator=torch.Generator()
    )
    assert plain.success.float().mean() >= 0.5
    assert (result.predicted[plain.success] == targets[plain.success]).all()
    unchanged = NeverDense(**settings, return_attempt=False)(target, x, y, targets, generator=torch.Generator())
    assert torch.equal(unchanged.x_adv, x) and not unchanged.best_attempt.any()


def test_class_eta_mode_uses_the_target_class_median(trained_tiny):
    bundle, data, x, y, targets = attack_inputs(trained_tiny, 16)
    kd, _ = fitted_kd(bundle, data)
    z = features_of(bundle.model, data.train.x, CPU)
    overall, per_class = kd.training_medians(z, data.train.y)
    values, classes = kd.training_nll(z, data.train.y)
    assert per_class[3] == values[classes == 3].median()
    assert kd.median_training_nll(z, data.train.y) == pytest.approx(float(values.median())) == pytest.approx(overall)
    target = AttackTarget(bundle.model, bundle.defense, UNIT, detector=kd, detector_eta_per_class=per_class)
    result = CarliniWagnerWhiteBox(**FAST, eta_mode="class")(target, x, y, targets, generator=torch.Generator())
    nll = -kd.log_density(result.forward.z, targets)
    assert result.success.any()
    assert (nll[result.success] <= per_class[targets[result.success]] + 1e-4).all()
    with pytest.raises(ConfigError, match="detector_eta_per_class"):
        CarliniWagnerWhiteBox(**FAST, eta_mode="class")(
            AttackTarget(bundle.model, bundle.defense, UNIT, detector=kd), x, y, targets, generator=torch.Generator()
        )


def test_two_phase_starts_the_density_phase_from_a_plain_cw(trained_tiny):
    bundle, data, x, y, targets = attack_inputs(trained_tiny, 12)
    kd, eta = fitted_kd(bundle, data)
    target = AttackTarget(bundle.model, bundle.defense, UNIT, detector=kd, detector_eta=eta)
    settings = {**FAST, "steps": 40}
    two = CarliniWagnerWhiteBox(**settings, two_phase=True, first_initial_const=1.0)(
        target, x, y, targets, generator=torch.Generator()
    )
    assert two.success.any()
    nll = -kd.log_density(two.forward.z, targets)
    assert (nll[two.success] <= eta + 1e-4).all() and (two.predicted[two.success] == targets[two.success]).all()
    # the distortion is measured from the clean input, not from the first phase's output
    one = CarliniWagnerWhiteBox(**settings)(target, x, y, targets, generator=torch.Generator())
    assert not torch.equal(two.x_adv, one.x_adv)


def test_without_the_density_term_it_is_exactly_targeted_cw_l2(trained_tiny):
    """With eta above every -log KD, f_2 is 0 everywhere and C&W-wb is cw-l2 (itself cross-checked against
    foolbox's L2CarliniWagnerAttack in test_cw.py) with the same settings: the same adversarial inputs."""
    bundle, data, x, y, targets = attack_inputs(trained_tiny, 8, seed=5)
    kd, _ = fitted_kd(bundle, data)
    settings = {**FAST, "steps": 40, "initial_const": 1.0}
    wb = CarliniWagnerWhiteBox(**settings)(
        AttackTarget(bundle.model, bundle.defense, UNIT, detector=kd, detector_eta=1e30),
        x,
        y,
        targets,
        generator=torch.Generator(),
    )
    plain = ATTACKS.get("cw-l2")(**settings)(
        AttackTarget(bundle.model, bundle.defense, UNIT), x, y, targets, generator=torch.Generator()
    )
    assert wb.success.sum() >= 4
    assert torch.equal(wb.success, plain.success)
    assert (wb.x_adv - plain.x_adv).abs().max() < 1e-6
