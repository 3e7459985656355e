"""The L-GM loss against values worked out by hand from paper 002, Eqs. 10-14 and 17-18."""

import math

import pytest
import torch
import torch.nn.functional as F

import robench.defenses.lgm  # noqa: F401  (registration)
from robench.core.errors import ConfigError
from robench.defenses import DEFENSES
from robench.defenses.lgm import LGMDefense, LGMHead, lgm_loss


def head_with(means, variances):
    head = LGMHead(feature_dim=len(means[0]), num_classes=len(means))
    with torch.no_grad():
        head.means.copy_(torch.tensor(means, dtype=torch.float32))
        head.log_var.copy_(torch.tensor(variances, dtype=torch.float32).log())
    return head


# Class 0 at the origin with Lambda_0 = diag(1, 4); class 1 at (2, 0) with Lambda_1 = I.
MEANS = [[0.0, 0.0], [2.0, 0.0]]
VARIANCES = [[1.0, 4.0], [1.0, 1.0]]
# 1/2 log|Lambda_0| = 1/2 log 4 = log 2; 1/2 log|Lambda_1| = 0.
HALF_LOG_DET = [math.log(2.0), 0.0]


def test_mahalanobis_distances_and_test_time_logits():
    head = head_with(MEANS, VARIANCES)
    z = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    # z1 = (0, 2): d_0 = (0/1 + 4/4) / 2 = 0.5;  d_1 = (4/1 + 4/1) / 2 = 4
    # z2 = (1, 0): d_0 = (1/1 + 0/4) / 2 = 0.5;  d_1 = (1/1 + 0/1) / 2 = 0.5
    d = torch.tensor([[0.5, 4.0], [0.5, 0.5]])
    torch.testing.assert_close(head.half_mahalanobis(z), d)
    torch.testing.assert_close(head.half_log_det(), torch.tensor(HALF_LOG_DET))
    # Eq. 12 logits: -d_k - 1/2 log|Lambda_k|. z2 is equidistant, but class 0's larger variance loses.
    logits = head(z)
    torch.testing.assert_close(logits, -d - torch.tensor(HALF_LOG_DET))
    assert logits.argmax(1).tolist() == [0, 1]


def test_loss_matches_hand_computation():
    head = head_with(MEANS, VARIANCES)
    z = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    alpha, lam = 1.0, 0.1
    ln2 = math.log(2.0)
    # Sample 1 (y = 0): d = [0.5, 4]; exponents -(1 + alpha) d_0 - ln2 = -1 - ln2 and -d_1 - 0 = -4.
    cls1 = -math.log(math.exp(-1 - ln2) / (math.exp(-1 - ln2) + math.exp(-4)))
    # Sample 2 (y = 1): d = [0.5, 0.5]; exponents -d_0 - ln2 = -0.5 - ln2 and -(1 + alpha) d_1 = -1.
    cls2 = -math.log(math.exp(-1) / (math.exp(-0.5 - ln2) + math.exp(-1)))
    # Eq. 10 per sample, ground-truth class only: d_y + 1/2 log|Lambda_y| = 0.5 + ln2 and 0.5 + 0.
    lkd1, lkd2 = 0.5 + ln2, 0.5
    terms = LGMDefense(alpha=alpha, lam=lam).loss(head, z, y)
    cls, lkd = (cls1 + cls2) / 2, (lkd1 + lkd2) / 2
    assert terms.parts["cls"].item() == pytest.approx(cls, abs=1e-6)
    assert terms.parts["lkd"].item() == pytest.approx(lkd, abs=1e-6)
    assert terms.total.item() == pytest.approx(cls + lam * lkd, abs=1e-6)


def test_margin_multiplies_only_the_ground_truth_distance():
    d = torch.rand(5, 4) * 3
    half_log_det = torch.rand(4)
    y = torch.tensor([0, 1, 2, 3, 1])
    alpha = 0.7
    rows = torch.arange(5)
    expected = -d - half_log_det
    expected[rows, y] = -(1 + alpha) * d[rows, y] - half_log_det[y]
    # With lambda = 0 the loss is exactly the cross-entropy of these exponents (Eq. 17).
    terms = lgm_loss(d, half_log_det, y, alpha=alpha, lam=0.0)
    torch.testing.assert_close(terms.total, F.cross_entropy(expected, y))
    # ...and the margin must not touch non-target classes: without it, it is CE on the test-time logits.
    plain = lgm_loss(d, half_log_det, y, alpha=0.0, lam=0.0)
    torch.testing.assert_close(plain.total, F.cross_entropy(-d - half_log_det, y))
    assert terms.total > plain.total


def test_attack_loss_has_no_margin_and_likelihood_hooks():
    head = head_with(MEANS, VARIANCES)
    defense = LGMDefense()
    z = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    labels = torch.tensor([1, 0])
    torch.testing.assert_close(defense.attack_loss(head, z, labels), F.cross_entropy(head(z), labels, reduction="none"))
    # likelihood_term for labels (1, 0): d_1(z1) + 0 = 4; d_0(z2) + ln2 = 0.5 + ln2.
    torch.testing.assert_close(defense.likelihood_term(head, z, labels), torch.tensor([4.0, 0.5 + math.log(2.0)]))
    # log N(z; mu_k, Lambda_k) = -d_k - 1/2 log|Lambda_k| - (2/2) log(2 pi), checked against torch.distributions.
    expected = torch.stack(
        [
            torch.distributions.Normal(torch.tensor(m), torch.tensor(v).sqrt()).log_prob(z).sum(1)
            for m, v in zip(MEANS, VARIANCES)
        ],
        1,
    )
    torch.testing.assert_close(defense.class_log_likelihood(head, z), expected)


def test_gradient_reaches_means_variances_and_features():
    head = head_with(MEANS, VARIANCES)
    z = torch.randn(4, 2, requires_grad=True)
    LGMDefense().loss(head, z, torch.tensor([0, 1, 1, 0])).total.backward()
    for grad in (head.means.grad, head.log_var.grad, z.grad):
        assert grad is not None and grad.abs().sum() > 0


def test_paper_defaults_and_round_trip():
    # Paper 002, Sec. 4: alpha = 1.0 / 0.3 / 0.1 for MNIST / CIFAR-10 / CIFAR-100, lambda = 0.1.
    assert LGMDefense.for_dataset("mnist") == LGMDefense(alpha=1.0, lam=0.1)
    assert LGMDefense.for_dataset("cifar10").alpha == 0.3
    assert LGMDefense.for_dataset("cifar100").alpha == 0.1
    assert LGMDefense.for_dataset("mnist", {"lam": "0.05"}).lam == 0.05
    defense = LGMDefense.for_dataset("cifar10", {"lam": 0.2})
    assert LGMDefense.from_params(defense.params()) == defense
    assert DEFENSES.get("lgm") is LGMDefense


def test_bad_parameters_are_refused():
    for bad in ({"alpha": -0.1}, {"lam": -1.0}, {"alpha": float("nan")}):
        with pytest.raises(ConfigError):
            LGMDefense(**bad)
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        LGMDefense.for_dataset("mnist", {"alpah": "1"})
