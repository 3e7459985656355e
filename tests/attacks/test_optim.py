"""MaskedAdam: torch.optim.Adam's update with per-sample state (rows that do not step keep theirs)."""

import torch

from robench.attacks.optim import MaskedAdam


def _reference_step(m, v, idx, g, t, lr, betas=(0.9, 0.999), eps=1e-8):
    """The update C&W and SPSA wrote out before sharing MaskedAdam, operation for operation."""
    beta1, beta2 = betas
    m[idx] = beta1 * m[idx] + (1 - beta1) * g
    v[idx] = beta2 * v[idx] + (1 - beta2) * g.square()
    m_hat = m[idx] / (1 - beta1**t)
    v_hat = v[idx] / (1 - beta2**t)
    return lr * m_hat / (v_hat.sqrt() + eps)


def test_bit_identical_to_the_written_out_update_with_frozen_rows():
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(6, 1, 4, 4, generator=generator)
    w_ref = w.clone()
    adam = MaskedAdam(w, 0.01)
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    moving = torch.ones(6, dtype=torch.bool)
    for t in range(1, 30):
        if t == 10:
            moving[[1, 4]] = False  # stop, never move again
        idx = moving.nonzero().squeeze(1)
        g = torch.randn(len(idx), 1, 4, 4, generator=generator)
        frozen_m = adam.m[~moving].clone()
        w[idx] = w[idx] - adam.step(idx, g, t)
        w_ref[idx] = w_ref[idx] - _reference_step(m, v, idx, g, t, 0.01)
        assert torch.equal(adam.m[~moving], frozen_m)
    assert torch.equal(w, w_ref) and torch.equal(adam.m, m) and torch.equal(adam.v, v)


def test_matches_torch_optim_adam_when_every_row_steps():
    generator = torch.Generator().manual_seed(1)
    start = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    param = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.Adam([param], lr=0.05)
    w = start.clone()
    adam = MaskedAdam(w, 0.05)
    every = torch.arange(5)
    for t in range(1, 20):
        g = torch.randn(5, 3, dtype=torch.float64, generator=generator)
        param.grad = g.clone()
        optimizer.step()
        w[every] = w[every] - adam.step(every, g, t)
    assert torch.allclose(w, param.detach(), rtol=0, atol=1e-12)
