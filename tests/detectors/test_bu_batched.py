"""BU's Monte-Carlo dropout passes batched into one (or a few chunked) forward passes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robench.core.models import Forward
from robench.defenses import DEFENSES
from robench.detectors import DETECTORS
from robench.detectors.bu import MAX_ROWS, mc_dropout_uncertainty
from tiny import make_tiny


def mlp(seed: int = 0, p: float = 0.5) -> nn.Module:
    """Logits (N, 4) for (N, 1, 4, 4) inputs; a batch norm checks that only dropout is put in train mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(p), nn.Linear(32, 4)
    )
    model[2].running_mean.normal_()  # eval-mode batch norm is then visibly not the identity
    return model.eval()


def conv(dropout: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), dropout, nn.Flatten(), nn.Linear(6 * 16, 4)).eval()


def inputs(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))


def by_hand(model: nn.Module, x: torch.Tensor, passes: int, seed: int, per_chunk: int) -> torch.Tensor:
    """U from the stacked inputs, ``per_chunk`` whole passes per forward, one RNG stream seeded once."""
    n = x.shape[0]
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    probs = []
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        done = 0
        while done < passes:
            k = min(per_chunk, passes - done)
            probs.append(torch.softmax(model(x.repeat(k, 1, 1, 1)), dim=1).reshape(k, n, -1))
            done += k
    model.eval()
    p = torch.cat(probs).double()  # (passes, N, K)
    assert p.shape[0] == passes
    return ((p * p).sum(2).mean(0) - (p.mean(0) ** 2).sum(1)).float()


def test_matches_the_stacked_forward_computed_by_hand():
    model, x = mlp(), inputs(8)
    with torch.no_grad():
        u = mc_dropout_uncertainty(model, x, 10, seed=3)
    assert u.shape == (8,)
    torch.testing.assert_close(u, by_hand(model, x, 10, 3, per_chunk=10), atol=1e-6, rtol=0)


@pytest.mark.parametrize("max_rows, per_chunk", [(8, 1), (3, 1), (24, 3), (40, 5), (79, 9), (80, 10), (10**6, 10)])
def test_chunks_match_per_chunk_forwards_by_hand(max_rows, per_chunk):
    model, x = mlp(), inputs(8)
    with torch.no_grad():
        u = mc_dropout_uncertainty(model, x, 10, seed=3, max_rows=max_rows)
    torch.testing.assert_close(u, by_hand(model, x, 10, 3, per_chunk=per_chunk), atol=1e-6, rtol=0)


def sequential(model: nn.Module, x: torch.Tensor, passes: int, seed: int) -> torch.Tensor:
    """The earlier implementation: one forward of the N inputs per pass."""
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        p = torch.stack([torch.softmax(model(x), dim=1) for _ in range(passes)]).double()
    model.eval()
    return ((p * p).sum(2).mean(0) - (p.mean(0) ** 2).sum(1)).float()


def test_chunkings_and_the_sequential_passes_agree_in_distribution():
    # Two dropout layers, so one chunk draws its masks in another order than pass by pass. Over 512 inputs x 50
    # passes the mean U varies by ~0.5% (relative std) from seed to seed, for each of the three ways (measured
    # over 20 seeds); 5% is > 7 standard deviations of a difference. Passes sharing one mask would give U = 0.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4)
    ).eval()
    x = inputs(512)
    with torch.no_grad():
        one_pass_per_chunk = mc_dropout_uncertainty(model, x, 50, seed=0, max_rows=512)
        one_chunk = mc_dropout_uncertainty(model, x, 50, seed=1, max_rows=50 * 512)
    reference = sequential(model, x, 50, seed=2)
    means = [float(u.mean()) for u in (one_pass_per_chunk, one_chunk, reference)]
    assert min(means) > 1e-3
    assert max(means) - min(means) <= 0.05 * max(means), means
    assert not torch.equal(one_pass_per_chunk, one_chunk)


@pytest.mark.parametrize(
    "model",
    [
        mlp(),
        conv(nn.Dropout(0.5)),
        conv(nn.Dropout2d(0.5)),
        conv(nn.AlphaDropout(0.5)),
        conv(nn.FeatureAlphaDropout(0.5)),
    ],
    ids=["dropout-mlp", "dropout", "dropout2d", "alpha", "feature-alpha"],
)
def test_passes_are_independent_samples(model):
    x = inputs(64)
    with torch.no_grad():
        u = mc_dropout_uncertainty(model, x, 20, seed=0)
    assert (u >= -1e-6).all()
    assert float((u > 1e-7).float().mean()) >= 0.95  # identical masks across passes would give U = 0


@pytest.mark.parametrize(
    "n, passes, max_rows", [(8, 10, MAX_ROWS), (8, 10, 80), (8, 10, 79), (8, 10, 24), (8, 7, 24), (8, 5, 3), (1, 50, 7)]
)
def test_forward_calls_and_rows_per_call(n, passes, max_rows):
    model, x = mlp(), inputs(n)
    rows = []
    handle = model.register_forward_hook(lambda module, args, out: rows.append((args[0].shape[0], out.shape[0])))
    try:
        with torch.no_grad():
            mc_dropout_uncertainty(model, x, passes, seed=0, max_rows=max_rows)
    finally:
        handle.remove()
    cap = max(max_rows, n)
    assert len(rows) == math.ceil(passes / max(1, cap // n))
    # the layers before the first dropout see the N inputs once per chunk; from the dropout on, whole passes
    assert all(inputs_ == n for inputs_, _ in rows)
    assert sum(out for _, out in rows) == passes * n
    assert all(out <= cap and out % n == 0 for _, out in rows)
    if passes * n <= max_rows:
        assert [out for _, out in rows] == [passes * n]


class _SkipAroundDropout(nn.Module):
    """h + dropout(h): mixes an expanded activation with an unexpanded one, so the shared prefix cannot be used."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.drop, self.out = nn.Linear(16, 32), nn.Dropout(0.5), nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.inp(x.flatten(1)))
        return self.out(h + self.drop(h))


def test_a_skip_around_dropout_falls_back_to_stacked_inputs():
    model, x = _SkipAroundDropout(), inputs(8)
    calls = []
    handle = model.inp.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            u = mc_dropout_uncertainty(model, x, 10, seed=0)
    finally:
        handle.remove()
    assert calls == [8, 80]  # the shared prefix failed its shape check, then the stacked inputs ran
    assert float((u > 1e-7).float().mean()) >= 0.95


def test_reproducible_seeded_and_leaves_the_global_rng_alone():
    model, x = mlp(), inputs(16)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    with torch.no_grad():
        first = mc_dropout_uncertainty(model, x, 10, seed=0)
        second = mc_dropout_uncertainty(model, x, 10, seed=0)
        other = mc_dropout_uncertainty(model, x, 10, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_works_with_grad_enabled_and_adds_none_when_disabled():
    model, x = mlp(), inputs(4)
    with torch.no_grad():
        u = mc_dropout_uncertainty(model, x, 5, seed=0)
    assert not u.requires_grad
    torch.testing.assert_close(mc_dropout_uncertainty(model, x, 5, seed=0).detach(), u)


@pytest.mark.parametrize("was_training", [False, True])
def test_train_and_eval_flags_restored(was_training):
    model, x = mlp(), inputs(8)
    model.train(was_training)
    model[1].training = not was_training  # a mixed state must come back as it was, module by module
    before = [m.training for m in model.modules()]
    running = model[2].running_mean.clone()
    with torch.no_grad():
        mc_dropout_uncertainty(model, x, 5, seed=0, max_rows=16)
    assert [m.training for m in model.modules()] == before
    assert torch.equal(model[2].running_mean, running)  # batch norm ran in eval mode


def test_detector_on_a_tiny_classifier_matches_the_function():
    model, _ = make_tiny("softmax", dropout=0.5)
    defense = DEFENSES.get("softmax")()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    detector = DETECTORS.get("bu")(passes=7, seed=2)
    score = detector.score(model, defense, Forward.of(model, x))
    with torch.no_grad():
        u = mc_dropout_uncertainty(model, x, 7, seed=2)
    assert torch.equal(score, -u)
    assert (u > 0).all()
    assert not model.training and all(not m.training for m in model.modules())
