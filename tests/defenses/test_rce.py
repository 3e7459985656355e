"""Reverse cross-entropy (Pang et al., NeurIPS 2018): reverse labels, the loss by hand, negated test-time logits."""

import math

import pytest
import torch
import torch.nn.functional as F

import robench.defenses.rce  # noqa: F401  (registration)
from robench.core.errors import ConfigError
from robench.defenses import DEFENSES
from robench.defenses.rce import NegatedLinear, RCEDefense, rce_per_sample, reverse_labels


def identity_head(num_classes=3):
    """Z = z (weight I, bias 0), so the features are the trained logits."""
    head = NegatedLinear(num_classes, num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.eye(num_classes))
        head.bias.zero_()
    return head


def test_reverse_labels():
    # L = 4: R_y is 0 at y and 1/(L-1) = 1/3 elsewhere; each row sums to 1.
    r = reverse_labels(torch.tensor([0, 2]), 4)
    third = 1 / 3
    torch.testing.assert_close(r, torch.tensor([[0.0, third, third, third], [third, third, 0.0, third]]))


def test_loss_matches_hand_computation():
    head = identity_head()
    z = torch.tensor([[0.0, 0.0, math.log(2.0)], [1.0, 1.0, 1.0]])
    y = torch.tensor([2, 0])
    # Sample 1: Z = (0, 0, ln 2) -> softmax = (1/4, 1/4, 1/2); R_2 = (1/2, 1/2, 0).
    #   L_RCE = -(1/2 log 1/4 + 1/2 log 1/4) = log 4.
    # Sample 2: Z = (1, 1, 1) -> softmax = 1/3 each; L_RCE = -(1/2 + 1/2) log 1/3 = log 3.
    expected = torch.tensor([math.log(4.0), math.log(3.0)])
    torch.testing.assert_close(rce_per_sample(head.reverse_logits(z), y), expected)
    terms = RCEDefense().loss(head, z, y)
    assert terms.total.item() == pytest.approx((math.log(4.0) + math.log(3.0)) / 2, abs=1e-6)


def test_test_time_logits_are_negated_and_argmax_is_the_rce_prediction():
    head = identity_head()
    z = torch.tensor([[5.0, 0.0, 1.0], [0.0, -3.0, 2.0]])
    torch.testing.assert_close(head(z), -z)
    # RCE drives the true class's Z to the minimum, so the prediction is argmin Z = argmax head(z).
    assert head(z).argmax(1).tolist() == [1, 1]


def test_rce_minimum_is_at_the_predicted_class():
    # For fixed other logits, lowering Z_t lowers L_RCE(z, t) (toward its infimum log(L - 1)) and moves argmax(-Z) to t.
    head = identity_head()
    t = torch.tensor([0])
    losses = [
        rce_per_sample(head.reverse_logits(torch.tensor([[v, 0.0, 0.0]])), t).item() for v in (2.0, 0.0, -2.0, -20.0)
    ]
    assert losses == sorted(losses, reverse=True)
    assert losses[-1] == pytest.approx(math.log(2.0), abs=1e-6)


def test_attack_loss_is_the_rce_loss_for_the_given_labels():
    defense = DEFENSES.get("rce").for_dataset("mnist")
    head = defense.make_head(8, 10)
    z = torch.randn(6, 8)
    labels = torch.randint(0, 10, (6,))
    Z = F.linear(z, head.weight, head.bias)
    expected = -(reverse_labels(labels, 10) * F.log_softmax(Z, 1)).sum(1)
    torch.testing.assert_close(defense.attack_loss(head, z, labels), expected)


def test_round_trip_and_bad_parameters():
    defense = RCEDefense.for_dataset("mnist")
    assert defense.params() == {}
    assert RCEDefense.from_params(defense.params()) == defense
    assert DEFENSES.get("rce") is RCEDefense
    with pytest.raises(ConfigError):
        RCEDefense.for_dataset("mnist", {"alpha": "1"})
    with pytest.raises(ConfigError):
        RCEDefense().make_head(8, 1)


def test_margin_form_is_the_cw_difference_of_test_time_logits_over_l_minus_1():
    # L_RCE(z, t) - L_RCE(z, y) = (1/(L-1)) [sum_{j != y} log p_j ... ] = (log p_t - log p_y)/(L-1) = (Z_t - Z_y)/(L-1)
    defense = RCEDefense()
    head = defense.make_head(8, 10)
    z = torch.randn(5, 8)
    y = torch.tensor([0, 1, 2, 3, 4])
    t = torch.tensor([9, 8, 7, 6, 5])
    logits = head(z)  # -Z
    expected = (logits.gather(1, y[:, None]) - logits.gather(1, t[:, None])).squeeze(1) / 9
    torch.testing.assert_close(
        defense.adaptive_objective(head, z, y, target=t, form="margin"), expected, atol=1e-5, rtol=1e-5
    )


def test_mnist_training_uses_momentum_sgd_not_adam():
    # With Adam (the MNIST family's default) RCE kills the last hidden layer's units and the model collapses under
    # attack (defenses/rce.py, "Training"); Pang et al. train with momentum SGD.
    from robench.checkpoints.training import train_config_for

    config = train_config_for("mnist", RCEDefense.train_defaults["mnist"])
    assert (config.optimizer, config.lr, config.momentum) == ("sgd", 0.05, 0.9)
    assert train_config_for("mnist", {**RCEDefense.train_defaults["mnist"], "lr": 0.01}).lr == 0.01  # overridable
    assert "cifar10" not in RCEDefense.train_defaults  # the CIFAR/SVHN families already train with SGD
