"""The GM loss against values worked out by hand from paper 001, Eqs. 4, 7, 8, 18, 19."""

import math

import pytest
import torch
import torch.nn.functional as F

from robench.core.errors import ConfigError
from robench.defenses import DEFENSES
from robench.defenses.gm import GMDefense, GMHead, gm_loss, margined_logits


def head_with(means):
    head = GMHead(feature_dim=len(means[0]), num_classes=len(means))
    with torch.no_grad():
        head.means.copy_(torch.tensor(means, dtype=torch.float32))
    return head


MEANS = [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]


def test_half_squared_distances_and_test_time_logits():
    head = head_with(MEANS)
    z = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # s_k = ||z - mu_k||^2 / 2 (Eq. 18 with identity covariance)
    expected = torch.tensor([[0.5, 0.5, 2.5], [0.0, 2.0, 2.0]])
    torch.testing.assert_close(head.half_sq_distances(z), expected)
    # Test-time logits are -s_k with no margin (Eq. 3), always <= 0.
    torch.testing.assert_close(head(z), -expected)


def test_loss_matches_hand_computation():
    head = head_with(MEANS)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 2])
    alpha, lam = 1.0, 0.1
    # Sample 1: s = [0.5, 0.5, 2.5], y = 0, m = alpha * 0.5 = 0.5.
    #   margined exponents: [-1.0, -0.5, -2.5]; L_cls,1 = -log(e^-1 / (e^-1 + e^-0.5 + e^-2.5))
    #   L_lkd,1 = (1/3) * (1 + 1 + 5) = 7/3
    # Sample 2: s = [0.5, 2.5, 0.5], y = 2, m = 0.5.
    #   margined exponents: [-0.5, -2.5, -1.0]; L_cls,2 = -log(e^-1 / (e^-0.5 + e^-2.5 + e^-1))
    #   L_lkd,2 = (1/3) * (1 + 5 + 1) = 7/3
    cls1 = -math.log(math.exp(-1) / (math.exp(-1) + math.exp(-0.5) + math.exp(-2.5)))
    cls2 = -math.log(math.exp(-1) / (math.exp(-0.5) + math.exp(-2.5) + math.exp(-1)))
    cls = (cls1 + cls2) / 2
    lkd = 7 / 3
    terms = GMDefense(alpha=alpha, lam=lam).loss(head, z, y)
    assert terms.parts["cls"].item() == pytest.approx(cls, abs=1e-6)
    assert terms.parts["lkd"].item() == pytest.approx(lkd, abs=1e-6)
    assert terms.total.item() == pytest.approx(cls + lam * lkd, abs=1e-6)


def test_margin_touches_only_the_ground_truth_class():
    s = torch.rand(5, 4) * 3
    y = torch.tensor([0, 1, 2, 3, 1])
    logits = margined_logits(s, y, alpha=0.7)
    expected = -s.clone()
    rows = torch.arange(5)
    expected[rows, y] = -(1 + 0.7) * s[rows, y]
    torch.testing.assert_close(logits, expected)
    other = torch.ones_like(s, dtype=torch.bool)
    other[rows, y] = False
    torch.testing.assert_close(logits[other], -s[other])


def test_without_margin_and_regulariser_it_is_cross_entropy_on_minus_s():
    head = head_with(MEANS)
    z = torch.randn(6, 2)
    y = torch.randint(0, 3, (6,))
    terms = GMDefense(alpha=0.0, lam=0.0).loss(head, z, y)
    torch.testing.assert_close(terms.total, F.cross_entropy(head(z), y))


def test_gradient_reaches_means_and_features():
    head = head_with(MEANS)
    z = torch.randn(4, 2, requires_grad=True)
    terms = gm_loss(head.half_sq_distances(z), torch.tensor([0, 1, 2, 0]), alpha=1.0, lam=0.1)
    terms.total.backward()
    assert head.means.grad is not None and head.means.grad.abs().sum() > 0
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_paper_defaults_per_dataset_family():
    assert GMDefense.for_dataset("mnist") == GMDefense(alpha=1.0, lam=0.1)
    assert GMDefense.for_dataset("cifar10").alpha == 0.3
    assert GMDefense.for_dataset("cifar100").alpha == 0.3
    assert GMDefense.for_dataset("mnist", {"alpha": "0.5"}).alpha == 0.5
    assert DEFENSES.get("gm") is GMDefense


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError):
        GMDefense(alpha=-1.0)
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        GMDefense.for_dataset("mnist", {"alpah": "1"})
