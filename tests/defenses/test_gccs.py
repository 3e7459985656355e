"""The GCCS loss (paper 003, Eqs. 1-3) against values worked out by hand; nearest-centre decision."""

import math

import pytest
import torch

import robench.defenses.gccs  # noqa: F401  (registration)
from robench.core.errors import ConfigError
from robench.defenses import DEFENSES
from robench.defenses.gccs import GCCSDefense, GCCSHead, gccs_loss


def identity_head(num_classes=2, mu_t=2.0):
    """Latent mapper u = z, so tests can pick u directly."""
    head = GCCSHead(num_classes, num_classes, mu_t)
    with torch.no_grad():
        head.mapper.weight.copy_(torch.eye(num_classes))
        head.mapper.bias.zero_()
    return head


def test_loss_matches_hand_computation():
    # mu_T = 2, sigma_T = 1, D = 2: centres (2, 0) and (0, 2).
    u = torch.tensor([[1.0, 1.0], [3.0, -1.0], [1.0, 1.0], [-1.0, 5.0], [0.0, 3.0]])
    y = torch.tensor([0, 0, 1, 1, 1])
    # Class 0: mean (2, 0) = target -> mean term 0. Deviations (-1, 1), (1, -1):
    #   unbiased variances (2/1, 2/1) = (2, 2) -> sum_j [log 1 - log 2 - 1 + 2] = 2 - 2 log 2 = KL_0.
    #   kurtosis per component (biased moments): m2 = 2/2 = 1, m4 = 2/2 = 1 -> 1; K_0 = 1.
    # Class 1: mean (0, 3), target (0, 2) -> mean term 1. Deviations (1, -2), (-1, 2), (0, 0):
    #   component 0: unbiased var 2/2 = 1; component 1: 8/2 = 4
    #   -> sum_j [log 1 - log v_j - 1 + v_j] = 0 + (-log 4 + 3); KL_1 = 1 + 3 - log 4.
    #   kurtosis: comp 0 m2 = 2/3, m4 = 2/3 -> (2/3)/(4/9) = 1.5; comp 1 m2 = 8/3, m4 = 32/3 -> 1.5; K_1 = 1.5.
    kl = (2.0 - 2 * math.log(2.0)) + (4.0 - math.log(4.0))
    kurt = (1.0 - 3.0) + (1.5 - 3.0)
    terms = gccs_loss(u, y, mu_t=2.0, sigma_t=1.0, lam=0.2)
    assert terms.parts["kl"].item() == pytest.approx(kl, abs=1e-5)
    assert terms.parts["kurtosis"].item() == pytest.approx(kurt, abs=1e-5)
    assert terms.total.item() == pytest.approx(kl + 0.2 * kurt, abs=1e-5)
    # The defense computes the same through the head (u = z).
    assert GCCSDefense(lam=0.2, mu_t=2.0).loss(identity_head(), u, y).total.item() == pytest.approx(
        kl + 0.2 * kurt, abs=1e-5
    )


def test_sigma_t_scales_the_kl_terms():
    # Class 0 alone, samples (3, 1) and (1, -1), mu_T = 2, sigma_T = 2: mean (2, 0) = target -> mean term 0;
    #   unbiased variances (2, 2); sum_j [log sigma_T^2 - log v_j - 1 + v_j / sigma_T^2]
    #   = 2 (log 4 - log 2 - 1 + 2/4) = 2 log 2 - 1.
    u = torch.tensor([[3.0, 1.0], [1.0, -1.0]])
    terms = gccs_loss(u, torch.tensor([0, 0]), mu_t=2.0, sigma_t=2.0, lam=0.0)
    assert terms.total.item() == pytest.approx(2 * math.log(2.0) - 1.0, abs=1e-5)


def test_a_lone_sample_contributes_only_its_mean_term_with_finite_gradients():
    # One sample of class 0 at (1, 0), mu_T = 2: ||(2, 0) - (1, 0)||^2 = 1; class 1 absent contributes 0.
    u = torch.tensor([[1.0, 0.0]], requires_grad=True)
    terms = gccs_loss(u, torch.tensor([0]), mu_t=2.0, sigma_t=1.0, lam=0.2)
    assert terms.total.item() == pytest.approx(1.0, abs=1e-6)
    terms.total.backward()
    # d/du ||u - (2, 0)||^2 = 2 (u - (2, 0)) = (-2, 0)
    torch.testing.assert_close(u.grad, torch.tensor([[-2.0, 0.0]]))


def test_nearest_centre_decision_equals_argmax_of_the_latent():
    head = identity_head(num_classes=3, mu_t=2.0)
    u = torch.tensor([[1.5, 0.2, 0.0]])
    # distances to (2,0,0), (0,2,0), (0,0,2): sqrt(0.25+0.04), sqrt(2.25+3.24), sqrt(2.25+0.04+4)
    expected = -torch.tensor([[math.sqrt(0.29), math.sqrt(5.49), math.sqrt(6.29)]])
    torch.testing.assert_close(head(u), expected)
    # Eq. 3: argmax_i u_i is the nearest centre, since ||u - mu e_i||^2 = ||u||^2 - 2 mu u_i + mu^2.
    u = torch.randn(200, 3) * 3
    assert torch.equal(head(u).argmax(1), u.argmax(1))


def test_attack_loss_is_the_per_sample_distance_term():
    defense = GCCSDefense(mu_t=2.0, sigma_t=2.0)
    head = identity_head(num_classes=2, mu_t=2.0)
    u = torch.tensor([[1.5, 0.2], [1.5, 0.2]])
    # t = 0: ((2 - 1.5)^2 + 0.2^2) / 2^2 = 0.29 / 4;  t = 1: (1.5^2 + (2 - 0.2)^2) / 4 = 5.49 / 4
    torch.testing.assert_close(defense.attack_loss(head, u, torch.tensor([0, 1])), torch.tensor([0.29, 5.49]) / 4)


def test_head_maps_features_to_one_dimension_per_class():
    head = GCCSDefense().make_head(64, 10)
    assert head(torch.randn(3, 64)).shape == (3, 10)
    assert head.mu_t == 70.0


def test_paper_defaults_and_round_trip():
    # Paper 003: lambda = 0.2 (Sec. III-B), mu_T = 70 and sigma_T = 1 (Sec. IV-A1).
    assert GCCSDefense.for_dataset("mnist") == GCCSDefense(lam=0.2, mu_t=70.0, sigma_t=1.0)
    defense = GCCSDefense.for_dataset("cifar10", {"mu_t": "30", "sigma_t": "0.5"})
    assert (defense.mu_t, defense.sigma_t) == (30.0, 0.5)
    assert GCCSDefense.from_params(defense.params()) == defense
    assert DEFENSES.get("gccs") is GCCSDefense


def test_bad_parameters_are_refused():
    for bad in ({"lam": -0.2}, {"mu_t": 0.0}, {"sigma_t": 0.0}, {"sigma_t": -1.0}):
        with pytest.raises(ConfigError):
            GCCSDefense(**bad)
    with pytest.raises(ConfigError, match="did you mean 'sigma_t'"):
        GCCSDefense.for_dataset("mnist", {"sigma": "1"})


def test_margin_form_is_linear_in_the_latent():
    # ||u - mu e_t||^2 - ||u - mu e_y||^2 = 2 mu (u_y - u_t), over sigma_T^2 (mu_T = 2, sigma_T = 2 -> factor 1).
    defense = GCCSDefense(mu_t=2.0, sigma_t=2.0)
    head = identity_head(num_classes=3, mu_t=2.0)
    u = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    t = torch.tensor([1, 2, 0, 2])
    expected = (u.gather(1, y[:, None]) - u.gather(1, t[:, None])).squeeze(1)
    torch.testing.assert_close(
        defense.adaptive_objective(head, u, y, target=t, form="margin"), expected, atol=1e-5, rtol=1e-5
    )
