"""Every registered defense's adaptive objective (paper 004, App. B.4) moves the right way under a gradient step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robench.defenses import DEFENSES
from tiny import make_tiny

CASES = [(form, targeted) for form in ("gradient", "margin") for targeted in (False, True)]


def _objective(model, defense, x, y, target, form):
    return defense.adaptive_objective(model.head, model.features(x), y, target=target, form=form)


@pytest.mark.parametrize("name", DEFENSES.names())
@pytest.mark.parametrize(("form", "targeted"), CASES)
def test_small_step_along_minus_gradient_lowers_the_objective(name, form, targeted):
    model, _ = make_tiny(name, seed=1)
    model = model.double()
    defense = DEFENSES.get(name).for_dataset("mnist")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28, generator=generator, dtype=torch.float64).requires_grad_(True)
    y = torch.randint(0, 10, (8,), generator=generator)
    target = (y + 1 + torch.randint(0, 9, (8,), generator=generator)) % 10 if targeted else None
    before = _objective(model, defense, x, y, target, form)
    assert before.shape == (8,)
    (grad,) = torch.autograd.grad(before.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
    with torch.no_grad():
        after = _objective(model, defense, x - 1e-3 * step, y, target, form)
    assert (after < before.detach()).all(), (before, after)


def test_softmax_margin_form_is_the_cw_logit_difference():
    model, _ = make_tiny("softmax")
    defense = DEFENSES.get("softmax")()
    x = torch.rand(5, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3, 4])
    t = torch.tensor([9, 8, 7, 6, 5])
    with torch.no_grad():
        logits = model(x)
        z = model.features(x)
        objective = defense.adaptive_objective(model.head, z, y, target=t, form="margin")
        expected = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, t[:, None]).squeeze(1)
        torch.testing.assert_close(objective, expected, atol=1e-5, rtol=1e-5)
        untargeted = defense.adaptive_objective(model.head, z, y, form="gradient")
        # the gradient form is Z_y - logsumexp_{k != y} Z_k, a monotone transform of -CE: -CE = -softplus(-it)
        torch.testing.assert_close(-F.softplus(-untargeted), -F.cross_entropy(logits, y, reduction="none"))


def test_untargeted_cross_entropy_objective_keeps_its_gradient_when_softmax_saturates():
    """With confidently classified inputs, autograd through -CE returns exactly zero in float32 (p_y rounds
    to 1); the stable form's gradient stays at full size, so PGD's sign step is not a no-op."""
    from robench.defenses.base import stable_negative_cross_entropy

    logits = torch.tensor([[120.0, 0.0, -5.0], [0.0, 150.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    (naive,) = torch.autograd.grad(-F.cross_entropy(logits, y, reduction="sum"), logits)
    assert naive.abs().max() == 0
    (stable,) = torch.autograd.grad(stable_negative_cross_entropy(logits, y).sum(), logits)
    assert stable[0].tolist() == pytest.approx([1.0, -1.0, 0.0], abs=0.01) and stable[1, 1] == pytest.approx(1.0)


def test_gm_margin_form_is_difference_of_half_squared_distances_and_likelihood_term_adds():
    model, _ = make_tiny("gm")
    defense = DEFENSES.get("gm")()
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3])
    t = torch.tensor([4, 5, 6, 7])
    with torch.no_grad():
        z = model.features(x)
        s = model.head.half_sq_distances(z)
        objective = defense.adaptive_objective(model.head, z, y, target=t, form="margin")
        expected = s.gather(1, t[:, None]).squeeze(1) - s.gather(1, y[:, None]).squeeze(1)
        torch.testing.assert_close(objective, expected, atol=1e-3, rtol=1e-4)
        with_lkd = defense.adaptive_objective(model.head, z, y, target=t, form="margin", likelihood_weight=0.5)
        torch.testing.assert_close(with_lkd - objective, 0.5 * s.gather(1, t[:, None]).squeeze(1), atol=1e-3, rtol=1e-4)
