"""Max-Mahalanobis centres (paper 004, Algorithm 1), the MMC loss (Eq. 8) and MMLDA (Eq. 10)."""

import math

import pytest
import torch
import torch.nn.functional as F

import robench.defenses.mmc  # noqa: F401  (registration, until defenses/__init__ imports it)
import robench.defenses.mmlda  # noqa: F401 - imported for its registration
from robench.checkpoints.model_factory import build_classifier
from robench.core.errors import ConfigError
from robench.defenses import DEFENSES
from robench.defenses.mm_centers import MMHead, max_mahalanobis_centers
from robench.defenses.mmc import MMCDefense
from robench.defenses.mmlda import MMLDADefense

NAMES = ["mmc", "mmlda"]
# The tiny test cnn, with enough feature dimensions for 10 MM centres (d >= L - 1 = 9).
SMALL_CNN = {"width": 4, "hidden": 16, "feature_dim": 12, "dropout": 0.0}


def small_model(name: str, seed: int = 0):
    defense = DEFENSES.get(name).for_dataset("mnist")
    model, _ = build_classifier("cnn", SMALL_CNN, (1, 28, 28), (0.1307,), (0.3081,), defense, 10, seed=seed)
    return model.eval(), defense


def head_3x2(c_mm: float = 2.0) -> MMHead:
    return MMHead(feature_dim=2, num_classes=3, c_mm=c_mm)


# ---- centres (Algorithm 1) ------------------------------------------------------------------


@pytest.mark.parametrize(("L", "d"), [(10, 64), (10, 9), (2, 1), (3, 2), (4, 3), (4, 10), (100, 99), (100, 128)])
@pytest.mark.parametrize("c_mm", [1.0, 10.0])
def test_centres_have_norm_c_mm_and_equal_pairwise_inner_products(L, d, c_mm):
    mu = max_mahalanobis_centers(L, d, c_mm)
    assert mu.shape == (L, d) and mu.dtype == torch.float32
    mu = mu.double()
    torch.testing.assert_close(mu.norm(dim=1), torch.full((L,), c_mm, dtype=torch.float64), rtol=1e-5, atol=0.0)
    gram = mu @ mu.t()
    off_diagonal = gram[~torch.eye(L, dtype=torch.bool)]
    expected = torch.full_like(off_diagonal, -(c_mm**2) / (L - 1))
    torch.testing.assert_close(off_diagonal, expected, rtol=0.0, atol=1e-5 * c_mm**2)
    # A regular simplex centred at the origin.
    assert mu.sum(0).abs().max() < 1e-4 * c_mm


def test_low_dimensional_centres_match_the_pictures_of_fig5():
    # L = 2: the two ends of a segment; L = 3: an equilateral triangle (worked through Algorithm 1 by hand).
    torch.testing.assert_close(max_mahalanobis_centers(2, 1, 3.0), torch.tensor([[3.0], [-3.0]]))
    s = math.sqrt(3.0)
    torch.testing.assert_close(max_mahalanobis_centers(3, 2, 2.0), torch.tensor([[2.0, 0.0], [-1.0, s], [-1.0, -s]]))


def test_centres_are_deterministic():
    assert torch.equal(max_mahalanobis_centers(10, 64, 10.0), max_mahalanobis_centers(10, 64, 10.0))


@pytest.mark.parametrize(("L", "d"), [(10, 8), (3, 1), (100, 64)])
def test_too_few_feature_dimensions_raise_config_error(L, d):
    with pytest.raises(ConfigError, match=f"at least {L - 1}.*feature_dim="):
        max_mahalanobis_centers(L, d, 10.0)
    for name in NAMES:
        with pytest.raises(ConfigError):
            DEFENSES.get(name)().make_head(d, L)


# ---- the head ---------------------------------------------------------------------------------


def test_head_logits_are_minus_half_squared_distances():
    head = head_3x2()
    s = math.sqrt(3.0)
    z = torch.tensor([[0.0, 0.0], [2.0, 1.0]])
    # centres (2, 0), (-1, sqrt 3), (-1, -sqrt 3); s_k = ||z - mu_k||^2 / 2
    expected = torch.tensor(
        [
            [2.0, 2.0, 2.0],
            [0.5 * (0 + 1), 0.5 * (9 + (1 - s) ** 2), 0.5 * (9 + (1 + s) ** 2)],
        ]
    )
    torch.testing.assert_close(head.half_sq_distances(z), expected)
    torch.testing.assert_close(head(z), -expected)
    z = torch.randn(20, 2) * 3
    nearest = torch.cdist(z, head.centers).argmin(1)
    assert torch.equal(head(z).argmax(1), nearest)


@pytest.mark.parametrize("name", NAMES)
def test_centres_are_a_buffer_not_a_parameter(name):
    model, defense = small_model(name)
    head = model.head
    assert isinstance(head, MMHead)
    assert not any(p is head.centers for p in model.parameters())
    assert list(head.parameters()) == []
    assert "head.centers" in model.state_dict()
    torch.testing.assert_close(model.state_dict()["head.centers"], max_mahalanobis_centers(10, 12, defense.c_mm))
    # Training cannot move them, and a rebuilt model loads the state dict strictly.
    x = torch.rand(4, 1, 28, 28)
    defense.loss(head, model.features(x), torch.tensor([0, 1, 2, 3])).total.backward()
    assert head.centers.grad is None and not head.centers.requires_grad
    rebuilt, _ = small_model(name, seed=1)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(rebuilt.head.centers, head.centers)
    # .double() (used by gradient checks) converts the centres with the rest of the model.
    assert model.double().head.centers.dtype == torch.float64


# ---- losses -----------------------------------------------------------------------------------


def test_mmc_loss_matches_hand_computation():
    head = head_3x2()
    s = math.sqrt(3.0)
    z = torch.tensor([[0.0, 0.0], [2.0, 1.0]])
    y = torch.tensor([0, 1])
    # Eq. 8: sample 1: ||(0,0) - (2,0)||^2 / 2 = 2; sample 2: ||(2,1) - (-1,sqrt 3)||^2 / 2 = (9 + (1 - sqrt 3)^2) / 2
    per_sample = [2.0, 0.5 * (9 + (1 - s) ** 2)]
    defense = MMCDefense(c_mm=2.0)
    torch.testing.assert_close(defense.attack_loss(head, z, y), torch.tensor(per_sample))
    terms = defense.loss(head, z, y)
    assert terms.total.item() == pytest.approx(sum(per_sample) / 2, abs=1e-6)
    assert terms.parts["mmc"].item() == pytest.approx(sum(per_sample) / 2, abs=1e-6)
    torch.testing.assert_close(defense.likelihood_term(head, z, y), torch.tensor(per_sample))


def test_mmc_gradient_pulls_features_onto_their_centre():
    head = head_3x2()
    z = torch.randn(5, 2, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1])
    MMCDefense(c_mm=2.0).loss(head, z, y).total.backward()
    # d/dz mean_i ||z_i - mu_yi||^2 / 2 = (z - mu_y) / N
    torch.testing.assert_close(z.grad, (z.detach() - head.centers[y]) / 5)


def test_mmlda_loss_is_cross_entropy_on_the_head_logits():
    head = MMHead(feature_dim=16, num_classes=10, c_mm=10.0)
    z = torch.randn(8, 16) * 3
    y = torch.randint(0, 10, (8,))
    defense = MMLDADefense()
    terms = defense.loss(head, z, y)
    torch.testing.assert_close(terms.total, F.cross_entropy(head(z), y))
    torch.testing.assert_close(defense.attack_loss(head, z, y), F.cross_entropy(head(z), y, reduction="none"))
    # Eq. 10's right-hand form: equal-norm centres make the logits z^T mu*_k up to a per-sample shift.
    torch.testing.assert_close(terms.total, F.cross_entropy(z @ head.centers.t(), y), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        defense.likelihood_term(head, z, y), head.half_sq_distances(z).gather(1, y[:, None]).squeeze(1)
    )


@pytest.mark.parametrize("name", NAMES)
def test_class_log_likelihood_is_the_unit_gaussian_around_each_centre(name):
    head = MMHead(feature_dim=12, num_classes=10, c_mm=10.0)
    z = torch.randn(6, 12) * 4
    expected = torch.stack([torch.distributions.Normal(mu, 1.0).log_prob(z).sum(1) for mu in head.centers], 1)
    torch.testing.assert_close(DEFENSES.get(name)().class_log_likelihood(head, z), expected, rtol=1e-5, atol=1e-4)


# ---- adaptive objectives (paper 004, App. B.4) ---------------------------------------------------


def test_mmc_adaptive_objectives_are_those_of_appendix_b4():
    head = head_3x2()
    defense = MMCDefense(c_mm=2.0)
    z = torch.tensor([[0.5, 0.2], [-1.0, 1.0], [0.0, -1.0]])
    y = torch.tensor([0, 1, 2])
    t = torch.tensor([1, 2, 0])
    s = head.half_sq_distances(z)

    def at(labels):  # L_MMC(z, labels), from the hand-checked distances
        return s.gather(1, labels[:, None]).squeeze(1)

    y_tilde = (-s).scatter(1, y[:, None], float("-inf")).argmax(1)
    torch.testing.assert_close(defense.adaptive_objective(head, z, y), -at(y))  # L_Ada^{un,1}
    torch.testing.assert_close(defense.adaptive_objective(head, z, y, target=t), at(t))  # L_Ada^{tar,1}
    torch.testing.assert_close(
        defense.adaptive_objective(head, z, y, form="margin"), at(y_tilde) - at(y)
    )  # L_Ada^{un,2}
    torch.testing.assert_close(
        defense.adaptive_objective(head, z, y, target=t, form="margin"), at(t) - at(y)
    )  # L_Ada^{tar,2}
    with_lkd = defense.adaptive_objective(head, z, y, target=t, form="margin", likelihood_weight=0.5)
    torch.testing.assert_close(with_lkd, at(t) - at(y) + 0.5 * at(t))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("form", "targeted"), [(f, t) for f in ("gradient", "margin") for t in (False, True)])
def test_small_step_along_minus_gradient_lowers_the_objective(name, form, targeted):
    # The generic check of test_adaptive_objectives.py, on a cnn wide enough for 10 MM centres.
    model, defense = small_model(name, seed=1)
    model = model.double()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28, generator=generator, dtype=torch.float64).requires_grad_(True)
    y = torch.randint(0, 10, (8,), generator=generator)
    target = (y + 1 + torch.randint(0, 9, (8,), generator=generator)) % 10 if targeted else None
    before = defense.adaptive_objective(model.head, model.features(x), y, target=target, form=form)
    (grad,) = torch.autograd.grad(before.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
    with torch.no_grad():
        after = defense.adaptive_objective(model.head, model.features(x - 1e-3 * step), y, target=target, form=form)
    assert (after < before.detach()).all(), (before, after)


# ---- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "cls"), [("mmc", MMCDefense), ("mmlda", MMLDADefense)])
def test_defaults_and_round_trips(name, cls):
    assert DEFENSES.get(name) is cls
    default = cls.for_dataset("mnist")
    assert default == cls(c_mm=10.0) and default.params() == {"c_mm": 10.0}
    custom = cls.for_dataset("cifar10", {"c_mm": "5"})
    assert custom.c_mm == 5.0
    assert cls.from_params(custom.params()) == custom
    assert cls.from_params(default.params()) == default
    with pytest.raises(ConfigError):
        cls(c_mm=0.0)
    with pytest.raises(ConfigError):
        cls.for_dataset("mnist", {"c_mm": "-1"})
    with pytest.raises(ConfigError, match="did you mean 'c_mm'"):
        cls.for_dataset("mnist", {"c_m": "1"})
