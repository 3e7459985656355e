"""Detectors: KD against scikit-learn, BU, GM likelihood, max-prob, thresholds, KD+BU hold-out, the cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import KernelDensity

from robench.checkpoints.bundle import load_bundle, save_bundle
from robench.core.data import Split
from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.defenses import DEFENSES
from robench.detectors import DETECTORS, fit_or_load, flagged, threshold_at_fpr
from robench.detectors.cache import cache_path
from robench.detectors.combined import KDBUDetector
from robench.detectors.kd import KernelDensityDetector, gaussian_kde_log_density
from tiny import make_tiny


def tiny_split(n: int = 60, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10)


@pytest.mark.parametrize("bandwidth", [0.5, 1.2, 3.0])
def test_kd_log_density_matches_scikit_learn(bandwidth):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 8))
    queries = rng.normal(size=(15, 8)) * 1.5
    expected = KernelDensity(kernel="gaussian", bandwidth=bandwidth).fit(points).score_samples(queries)
    ours = gaussian_kde_log_density(
        torch.tensor(queries, dtype=torch.float32), torch.tensor(points, dtype=torch.float32), bandwidth
    )
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-4, rtol=0)


def test_kd_detector_scores_under_the_predicted_class_and_is_differentiable():
    model, _ = make_tiny("gm")
    defense = DEFENSES.get("gm")()
    kd = KernelDensityDetector(bandwidth=1.0)
    kd.fit(model, defense, tiny_split(), torch.device("cpu"))
    x = torch.rand(6, 1, 28, 28, requires_grad=True)
    forward = Forward.of(model, x)
    score = kd.score(model, defense, forward)
    all_classes = kd.class_log_density(forward.z)
    torch.testing.assert_close(score, all_classes.gather(1, forward.predicted[:, None]).squeeze(1))
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # per-class estimator = scikit-learn on that class's training features
    z_train = model.features(tiny_split().x).detach().numpy()
    labels = tiny_split().y.numpy()
    k = int(forward.predicted[0])
    sk = KernelDensity(bandwidth=1.0).fit(z_train[labels == k]).score_samples(forward.z[:1].detach().numpy())
    assert score[0].item() == pytest.approx(sk[0], abs=1e-3)


def test_kd_per_class_subset_is_seeded():
    model, _ = make_tiny("softmax")
    defense = DEFENSES.get("softmax")()
    split = tiny_split(200)
    a, b, c = (KernelDensityDetector(bandwidth=1.0, per_class=5, seed=s) for s in (1, 1, 2))
    for det in (a, b, c):
        det.fit(model, defense, split, torch.device("cpu"))
    classes = [k for k in a.fitted_state() if k.startswith("class_")]
    assert all(len(a.fitted_state()[k]) == 5 for k in classes)
    assert all(torch.equal(a.fitted_state()[k], b.fitted_state()[k]) for k in classes)
    assert any(not torch.equal(a.fitted_state()[k], c.fitted_state()[k]) for k in classes)


def test_bu_refuses_models_without_dropout_and_is_reproducible():
    bu = DETECTORS.get("bu")(passes=10)
    model, _ = make_tiny("softmax")
    defense = DEFENSES.get("softmax")()
    with pytest.raises(ConfigError, match="no dropout"):
        bu.check_applicable(model, defense)
    model, _ = make_tiny("softmax", dropout=0.5)
    x = torch.rand(5, 1, 28, 28)
    state = torch.random.get_rng_state()
    first = bu.score(model, defense, Forward.of(model, x))
    second = bu.score(model, defense, Forward.of(model, x))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first, second)
    assert (first <= 1e-6).all() and (first < 0).any()  # -U with U >= 0, and dropout does vary the output
    assert not model.training and all(not m.training for m in model.modules())


def test_gm_likelihood_refuses_softmax_and_matches_gaussian_on_gm():
    detector = DETECTORS.get("gm-likelihood")()
    model, _ = make_tiny("softmax")
    with pytest.raises(ConfigError, match="needs a Gaussian head") as info:
        detector.check_applicable(model, DEFENSES.get("softmax")())
    assert "\n" not in str(info.value)
    model, _ = make_tiny("gm")
    forward = Forward.of(model, torch.rand(4, 1, 28, 28))
    score = detector.score(model, DEFENSES.get("gm")(), forward)
    s = model.head.half_sq_distances(forward.z).gather(1, forward.predicted[:, None]).squeeze(1)
    torch.testing.assert_close(score, -s - 0.5 * forward.z.shape[1] * math.log(2 * math.pi))


def test_max_prob_is_a_probability():
    model, _ = make_tiny("softmax")
    score = DETECTORS.get("max-prob")().score(
        model, DEFENSES.get("softmax")(), Forward.of(model, torch.rand(9, 1, 28, 28))
    )
    assert ((score >= 0.1 - 1e-6) & (score <= 1.0)).all()


def test_threshold_flags_the_requested_fraction_of_clean_inputs():
    clean = torch.arange(100.0)
    threshold = threshold_at_fpr(clean, 0.05)
    assert flagged(clean, threshold).sum() == 5
    assert flagged(clean, threshold_at_fpr(clean, 0.0)).sum() == 0
    with pytest.raises(ConfigError):
        threshold_at_fpr(clean, 1.5)


def test_kd_bu_fits_on_one_split_and_scores_another():
    g = torch.Generator().manual_seed(0)
    clean = torch.stack([torch.randn(200, generator=g) + 2.0, -torch.rand(200, generator=g) * 0.1], 1)
    adversarial = torch.stack([torch.randn(200, generator=g) - 2.0, -torch.rand(200, generator=g) * 0.1 - 0.05], 1)
    detector = KDBUDetector(seed=0)
    clean_scores, adv_scores, clean_idx, adv_idx = detector.holdout_scores(clean, adversarial)
    assert len(clean_idx) == 100 and len(adv_idx) == 100
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(np.r_[np.ones(100), np.zeros(100)], np.r_[clean_scores.numpy(), adv_scores.numpy()])
    assert auc > 0.95
    # The combiner never saw the rows it scores: changing them leaves it unchanged.
    combiner = {k: v.clone() for k, v in detector.combiner.items()}
    clean2 = clean.clone()
    clean2[clean_idx] = 0.0
    detector.holdout_scores(clean2, adversarial)
    assert all(torch.equal(combiner[k], detector.combiner[k]) for k in combiner)
    with pytest.raises(ConfigError, match="not fitted"):
        KDBUDetector().score_features(clean)


def test_cache_reuses_fits_keyed_by_model_and_config(tmp_path):
    model, meta = make_tiny("gm")
    save_bundle(tmp_path / "gm.pt", model, meta)
    bundle = load_bundle(tmp_path / "gm.pt")
    split = tiny_split()
    cpu = torch.device("cpu")
    first = KernelDensityDetector(bandwidth=1.0)
    assert fit_or_load(first, bundle, split, cpu) is False
    second = KernelDensityDetector(bandwidth=1.0)
    assert fit_or_load(second, bundle, split, cpu) is True
    forward = Forward.of(bundle.model, torch.rand(3, 1, 28, 28))
    torch.testing.assert_close(
        first.score(bundle.model, bundle.defense, forward), second.score(bundle.model, bundle.defense, forward)
    )
    assert fit_or_load(KernelDensityDetector(bandwidth=2.0), bundle, split, cpu) is False  # new config, new key
    files = sorted((tmp_path / "gm.pt.detectors").iterdir())
    assert len(files) == 2
    files[0].write_bytes(b"corrupt")
    for path in files:
        path.write_bytes(b"corrupt")
    assert fit_or_load(KernelDensityDetector(bandwidth=1.0), bundle, split, cpu) is False  # refitted
    assert fit_or_load(KernelDensityDetector(bandwidth=1.0), bundle, split, cpu) is True
    assert cache_path(bundle.path, first, "k").parent.name == "gm.pt.detectors"


@pytest.mark.parametrize("name", DETECTORS.names())
def test_every_detector_scores_a_gm_model_with_dropout(name):
    model, _ = make_tiny("gm", dropout=0.3)
    defense = DEFENSES.get("gm")()
    detector = DETECTORS.get(name).for_dataset("mnist", {"passes": 5} if name in ("bu", "kd+bu") else {})
    detector.check_applicable(model, defense)
    detector.fit(model, defense, tiny_split(), torch.device("cpu"))
    forward = Forward.of(model, torch.rand(7, 1, 28, 28))
    if name == "kd+bu":
        features = detector.raw_features(model, defense, forward)
        detector.fit_combiner(features[:4], features[4:] - 1.0)
    score = detector.score(model, defense, forward)
    assert score.shape == (7,) and torch.isfinite(score).all()
    assert detector.higher_is_clean


def test_cache_key_names_the_training_data_actually_used(tmp_path):
    model, meta = make_tiny("gm")
    save_bundle(tmp_path / "gm.pt", model, meta)
    bundle = load_bundle(tmp_path / "gm.pt")
    cpu = torch.device("cpu")
    assert fit_or_load(KernelDensityDetector(), bundle, tiny_split(), cpu, train_name="mnist-5k:0") is False
    assert fit_or_load(KernelDensityDetector(), bundle, tiny_split(seed=1), cpu, train_name="other:0") is False
    assert fit_or_load(KernelDensityDetector(), bundle, tiny_split(), cpu, train_name="mnist-5k:0") is True
