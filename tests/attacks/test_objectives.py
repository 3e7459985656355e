"""Objectives: no vanishing gradient on saturated heads, the kappa clamp acts on the margin alone, and DLR."""

import pytest
import torch
import torch.nn.functional as F

from robench.attacks.base import AttackTarget, Bounds
from robench.attacks.objectives import OBJECTIVES, logit_margin, objective_value
from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.defenses import DEFENSES
from robench.defenses.base import stable_negative_cross_entropy
from tiny import make_tiny


def test_untargeted_ce_keeps_its_gradient_when_the_softmax_saturates():
    logits = torch.tensor([[120.0, 0.0, -5.0]], requires_grad=True)  # a gap of ~100, usual for MMC heads
    y = torch.tensor([0])
    forward = Forward(x=torch.zeros(1), z=torch.zeros(1, 2), logits=logits)
    (naive,) = torch.autograd.grad(-F.cross_entropy(logits, y), logits)
    assert naive.abs().max() == 0  # what the textbook form gives in float32
    (ours,) = torch.autograd.grad(objective_value("ce", None, forward, y, None).sum(), logits)
    assert ours[0, 0] > 0.99 and ours[0, 1] < -0.99  # pushes the true logit down, the best other up
    small = torch.tensor([[1.0, 0.5, -0.5]], requires_grad=True)
    (a,) = torch.autograd.grad(
        objective_value("ce", None, Forward(torch.zeros(1), torch.zeros(1, 2), small), y, None).sum(), small
    )
    (b,) = torch.autograd.grad(-F.cross_entropy(small, y), small)
    assert torch.equal(a.sign(), b.sign())  # the same direction where -CE does not underflow


def test_kappa_clamps_the_margin_and_the_likelihood_term_is_added_after():
    model, _ = make_tiny("gm")
    defense = DEFENSES.get("gm")()
    target = AttackTarget(model, defense, Bounds(0.0, 1.0))
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3])
    t = torch.tensor([4, 5, 6, 7])
    with torch.no_grad():
        forward = Forward.of(model, x)
        margin = objective_value("adaptive-margin", target, forward, y, t, kappa=1e9)  # so large nothing clamps
        s = model.head.half_sq_distances(forward.z)
        torch.testing.assert_close(
            margin, s.gather(1, t[:, None]).squeeze(1) - s.gather(1, y[:, None]).squeeze(1), atol=1e-3, rtol=1e-4
        )
        with_term = objective_value("adaptive-margin", target, forward, y, t, kappa=0.0, likelihood_weight=2.0)
        term = defense.likelihood_term(model.head, forward.z, t)
        torch.testing.assert_close(with_term, margin.clamp_min(0.0) + 2.0 * term)


# ---- DLR (Croce & Hein 2020, eqs. 6 and 7), minimised ---------------------------------------------


def _logits_forward(logits: torch.Tensor) -> Forward:
    return Forward(x=torch.zeros(len(logits)), z=torch.zeros(len(logits), 2), logits=logits)


def test_dlr_is_the_negated_paper_formula_and_matches_torchattacks():
    import torchattacks

    logits = torch.tensor([[3.0, 1.0, 0.5, -2.0, 0.0], [0.2, 4.0, 1.0, 0.9, -1.0], [-9.0, -1.0, -3.0, -2.5, -7.0]])
    y = torch.tensor([0, 0, 4])
    t = torch.tensor([2, 3, 1])
    dlr = objective_value("dlr", None, _logits_forward(logits), y, None)
    # by hand: (Z_y - max_{i != y} Z_i) / (Z_pi1 - Z_pi3)
    expected = torch.tensor([(3.0 - 1.0) / (3.0 - 0.5), (0.2 - 4.0) / (4.0 - 0.9), (-7.0 + 1.0) / (-1.0 + 3.0)])
    torch.testing.assert_close(dlr, expected)
    torch.testing.assert_close(dlr, -torchattacks.APGD.dlr_loss(None, logits, y))
    targeted = objective_value("dlr", None, _logits_forward(logits), y, t)
    # (Z_y - Z_t) / (Z_pi1 - (Z_pi3 + Z_pi4) / 2)
    expected_t = torch.tensor([(3.0 - 0.5) / (3.0 - 0.25), (0.2 - 0.9) / (4.0 - 0.55), (-7.0 + 1.0) / (-1.0 + 5.0)])
    torch.testing.assert_close(targeted, expected_t)
    torch.testing.assert_close(targeted, -torchattacks.APGDT.dlr_loss_targeted(None, logits, y, t))


def test_dlr_ignores_the_logits_scale_and_shift_and_keeps_its_gradient():
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 10
    plain = objective_value("dlr", None, _logits_forward(logits), y, None)
    moved = objective_value("dlr", None, _logits_forward(50.0 * logits - 300.0), y, None)  # GM-like: large, negative
    torch.testing.assert_close(plain, moved, rtol=1e-4, atol=1e-5)
    saturated = torch.tensor([[120.0, 0.0, -5.0, -6.0]], requires_grad=True)  # CE's gradient is 0 here in fp32
    (grad,) = torch.autograd.grad(
        objective_value("dlr", None, _logits_forward(saturated), torch.tensor([0]), None).sum(), saturated
    )
    assert grad[0, 0] > 0 and grad[0, 1] < 0


@pytest.mark.parametrize("defense_name", ["softmax", "gm"])
def test_adaptive_dlr_equals_dlr_for_cross_entropy_defenses(defense_name):
    model, _ = make_tiny(defense_name)
    defense = DEFENSES.get(defense_name)()
    target = AttackTarget(model, defense, Bounds(0.0, 1.0))
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    t = (y + 3) % 10
    with torch.no_grad():
        forward = Forward.of(model, x)
        for targets in (None, t):
            adaptive = objective_value("adaptive-dlr", target, forward, y, targets)
            torch.testing.assert_close(
                adaptive, objective_value("dlr", target, forward, y, targets), rtol=1e-4, atol=1e-5
            )


def test_dlr_refuses_too_few_classes_and_a_likelihood_term():
    y = torch.tensor([0])
    with pytest.raises(ConfigError, match="at least 3 classes"):
        objective_value("dlr", None, _logits_forward(torch.tensor([[1.0, 0.0]])), y, None)
    with pytest.raises(ConfigError, match="at least 4 classes"):
        objective_value("dlr", None, _logits_forward(torch.tensor([[1.0, 0.0, 2.0]])), y, torch.tensor([1]))
    with pytest.raises(ConfigError, match="no likelihood term"):
        objective_value("adaptive-dlr", None, _logits_forward(torch.zeros(1, 10)), y, None, likelihood_weight=1.0)


def test_existing_objectives_unchanged_by_the_dlr_ones():
    """ce and margin still compute exactly their formulas (bit for bit)."""
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(2))
    y = torch.arange(6)
    forward = _logits_forward(logits)
    assert torch.equal(objective_value("ce", None, forward, y, None), stable_negative_cross_entropy(logits, y))
    assert torch.equal(objective_value("margin", None, forward, y, None), logit_margin(logits, y, None))
    assert OBJECTIVES[:4] == ("ce", "margin", "adaptive", "adaptive-margin")
