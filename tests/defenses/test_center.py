"""Softmax + centre loss (Wen et al., ECCV 2016): Eq. 5 by hand, the centre update of Alg. 1, eval mode leaves centres
alone."""

import math

import pytest
import torch
import torch.nn.functional as F

import robench.defenses.center  # noqa: F401 - imported for its registration
from robench.core.errors import ConfigError
from robench.defenses import DEFENSES
from robench.defenses.center import CenterDefense, CenterHead, update_centers


def zero_head(centers):
    """A 2-d, 3-class head whose logits are all 0 (so CE = log 3) and whose centres are given."""
    head = CenterHead(feature_dim=2, num_classes=3)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.centers.copy_(torch.tensor(centers))
    return head


CENTERS = [[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]
Z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 3.0]])
Y = torch.tensor([0, 0, 1])


def test_loss_matches_hand_computation():
    head = zero_head(CENTERS).eval()
    lam = 0.5
    # CE with all-zero logits over 3 classes: log 3 per sample.
    # Centre term: ||z - c_y||^2 = 1, 9, (0^2 + 2^2) = 4; (1/2) * mean = (1/2) * 14/3 = 7/3.
    terms = CenterDefense(lam=lam, alpha=0.5).loss(head, Z, Y)
    assert terms.parts["ce"].item() == pytest.approx(math.log(3), abs=1e-6)
    assert terms.parts["center"].item() == pytest.approx(7 / 3, abs=1e-6)
    assert terms.total.item() == pytest.approx(math.log(3) + lam * 7 / 3, abs=1e-6)


def test_one_training_step_updates_centres_by_wens_rule():
    head = zero_head(CENTERS).train()
    CenterDefense(lam=0.5, alpha=0.5).loss(head, Z, Y)
    # Alg. 1: c_j <- c_j - alpha * sum_{y_i = j} (c_j - z_i) / (1 + n_j), alpha = 0.5.
    # Class 0 (n = 2): sum (c - z) = (0-1, 0-0) + (0-3, 0-0) = (-4, 0); delta = (-4, 0)/3;
    #   c = (0,0) + 0.5*(4/3, 0) = (2/3, 0).
    # Class 1 (n = 1): sum (c - z) = (1-1, 1-3) = (0, -2); delta = (0, -1); c = (1, 1) + 0.5*(0, 1) = (1, 1.5).
    # Class 2 (n = 0): no samples, unchanged.
    expected = torch.tensor([[2 / 3, 0.0], [1.0, 1.5], [5.0, 5.0]])
    torch.testing.assert_close(head.centers, expected)


def test_loss_uses_the_centres_before_the_update_and_eval_mode_never_updates():
    defense = CenterDefense(lam=0.5, alpha=0.5)
    head = zero_head(CENTERS).train()
    assert defense.loss(head, Z, Y).parts["center"].item() == pytest.approx(7 / 3, abs=1e-6)
    head.eval()
    before = head.centers.clone()
    defense.loss(head, Z, Y)
    defense.attack_loss(head, Z, Y)
    torch.testing.assert_close(head.centers, before)


def test_update_rule_with_alpha_one_moves_a_lone_sample_halfway():
    # n_j = 1, alpha = 1: c <- c - (c - z) / 2, the midpoint (the 1 in 1 + n_j damps small classes).
    centers = torch.tensor([[0.0, 0.0], [4.0, 4.0]])
    update_centers(centers, torch.tensor([[2.0, -2.0]]), torch.tensor([0]), alpha=1.0)
    torch.testing.assert_close(centers, torch.tensor([[1.0, -1.0], [4.0, 4.0]]))


def test_centre_gradient_flows_only_into_features():
    head = zero_head(CENTERS).train()
    z = Z.clone().requires_grad_(True)
    CenterDefense(lam=1.0, alpha=0.5).loss(head, z, Y).total.backward()
    # d/dz of (lam/2) mean ||z - c_y||^2 = lam (z - c_y) / N, plus the CE gradient through W = 0 (which is 0).
    expected = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]) / 3
    torch.testing.assert_close(z.grad, expected)
    assert not head.centers.requires_grad and "centers" in head.state_dict()


def test_attack_loss_is_cross_entropy_on_the_linear_logits():
    defense = DEFENSES.get("center").for_dataset("mnist")
    head = defense.make_head(8, 10).eval()
    z = torch.randn(5, 8)
    labels = torch.randint(0, 10, (5,))
    torch.testing.assert_close(defense.attack_loss(head, z, labels), F.cross_entropy(head(z), labels, reduction="none"))


def test_defaults_and_round_trip():
    # Wen et al. fix lambda = 0.003, alpha = 0.5 in their experiments (Sec. 4).
    assert CenterDefense.for_dataset("mnist") == CenterDefense(lam=0.003, alpha=0.5)
    defense = CenterDefense.for_dataset("mnist", {"lam": "0.01", "alpha": "0.2"})
    assert (defense.lam, defense.alpha) == (0.01, 0.2)
    assert CenterDefense.from_params(defense.params()) == defense
    assert DEFENSES.get("center") is CenterDefense


def test_bad_parameters_are_refused():
    for bad in ({"lam": -0.1}, {"alpha": -0.5}, {"alpha": 1.5}):
        with pytest.raises(ConfigError):
            CenterDefense(**bad)
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        CenterDefense.for_dataset("mnist", {"alpah": "0.5"})
