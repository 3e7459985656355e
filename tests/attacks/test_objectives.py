"""Objectives: no vanishing gradient on saturated heads, and the kappa clamp acts on the margin alone."""

import torch
import torch.nn.functional as F
from tiny import make_tiny

from robench.attacks.base import AttackTarget, Bounds
from robench.attacks.objectives import objective_value
from robench.core.models import Forward
from robench.defenses import DEFENSES


def test_untargeted_ce_keeps_its_gradient_when_the_softmax_saturates():
    logits = torch.tensor([[120.0, 0.0, -5.0]], requires_grad=True)  # a gap of ~100, usual for MMC heads
    y = torch.tensor([0])
    forward = Forward(x=torch.zeros(1), z=torch.zeros(1, 2), logits=logits)
    (naive,) = torch.autograd.grad(-F.cross_entropy(logits, y), logits)
    assert naive.abs().max() == 0  # what the textbook form gives in float32
    (ours,) = torch.autograd.grad(objective_value("ce", None, forward, y, None).sum(), logits)
    assert ours[0, 0] > 0.99 and ours[0, 1] < -0.99  # pushes the true logit down, the best other up
    small = torch.tensor([[1.0, 0.5, -0.5]], requires_grad=True)
    (a,) = torch.autograd.grad(objective_value("ce", None, Forward(torch.zeros(1), torch.zeros(1, 2), small), y, None).sum(), small)
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
        torch.testing.assert_close(margin, s.gather(1, t[:, None]).squeeze(1) - s.gather(1, y[:, None]).squeeze(1), atol=1e-3, rtol=1e-4)
        with_term = objective_value("adaptive-margin", target, forward, y, t, kappa=0.0, likelihood_weight=2.0)
        term = defense.likelihood_term(model.head, forward.z, t)
        torch.testing.assert_close(with_term, margin.clamp_min(0.0) + 2.0 * term)
