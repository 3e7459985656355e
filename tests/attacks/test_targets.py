"""Target selection: none, random (uniform over wrong classes, seeded), least-likely (argmin excluding y)."""

from __future__ import annotations

import pytest
import torch

from robench.attacks.targets import TARGET_MODES, choose_targets
from robench.core.errors import ConfigError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_none_is_untargeted():
    assert choose_targets("none", torch.randn(4, 10), torch.arange(4), _gen()) is None


def test_random_targets_are_wrong_uniform_and_reproducible():
    k, per_label = 10, 2000
    y = torch.arange(k).repeat_interleave(per_label)
    logits = torch.randn(len(y), k, generator=_gen(9))
    state = torch.get_rng_state()
    targets = choose_targets("random", logits, y, _gen(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert targets.shape == y.shape and targets.dtype == y.dtype
    assert (targets != y).all()
    assert targets.min() >= 0 and targets.max() < k
    for label in range(k):
        counts = torch.bincount(targets[y == label], minlength=k).float()
        assert counts[label] == 0
        wrong = counts[torch.arange(k) != label]
        expected = per_label / (k - 1)  # ~222; binomial sd ~14
        assert (wrong - expected).abs().max() < 0.3 * expected
    assert torch.equal(targets, choose_targets("random", logits, y, _gen(1)))
    assert not torch.equal(targets, choose_targets("random", logits, y, _gen(2)))


def test_random_targets_with_two_classes_are_the_other_class():
    y = torch.tensor([0, 1, 1, 0])
    assert torch.equal(choose_targets("random", torch.zeros(4, 2), y, _gen()), 1 - y)


def test_least_likely_is_argmin_excluding_the_label():
    logits = torch.randn(200, 10, generator=_gen(3))
    y = torch.randint(0, 10, (200,), generator=_gen(4))
    y[:20] = logits[:20].argmin(1)  # the label itself is the least likely: must be skipped
    targets = choose_targets("least-likely", logits, y, _gen())
    expected = torch.tensor(
        [min((c for c in range(10) if c != int(label)), key=lambda c: float(row[c])) for row, label in zip(logits, y)]
    )
    assert torch.equal(targets, expected)
    assert (targets != y).all()
    assert logits.equal(torch.randn(200, 10, generator=_gen(3)))  # input not modified


def test_least_likely_handles_all_negative_logits():
    logits = -torch.tensor([[1.0, 5.0, 3.0], [9.0, 2.0, 4.0]])  # GM-style logits
    assert choose_targets("least-likely", logits, torch.tensor([1, 0]), _gen()).tolist() == [2, 2]


def test_unknown_mode_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'least-likely'"):
        choose_targets("least_likely", torch.zeros(2, 3), torch.tensor([0, 1]), _gen())
    with pytest.raises(ConfigError, match="known: " + ", ".join(TARGET_MODES)):
        choose_targets("xyz", torch.zeros(2, 3), torch.tensor([0, 1]), _gen())


@pytest.mark.parametrize(
    ("logits", "y"),
    [
        (torch.zeros(3, 4), torch.zeros(2, dtype=torch.long)),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long)),
        (torch.zeros(2, 4), torch.tensor([0, 4])),
        (torch.zeros(2, 1), torch.tensor([0, 0])),
    ],
    ids=["length-mismatch", "logits-1d", "label-out-of-range", "one-class"],
)
def test_bad_shapes_raise_config_error(logits, y):
    with pytest.raises(ConfigError):
        choose_targets("random", logits, y, _gen())
