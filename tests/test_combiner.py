"""The KD+BU combiner of a run (robench.scoring.combiner): noisy inputs, raw features, the held-out fit per group."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from robench.core.data import Split
from robench.core.models import Forward
from robench.defenses import DEFENSES
from robench.detectors.combined import KDBUDetector, combiner_scores
from robench.scoring import combiner as C
from robench.scoring import records as R
from robench.scoring.metrics import metric_value
from tiny import make_tiny

D = "kd+bu"


def synthetic(
    n: int = 200,
    seed: int = 0,
    attack: str = "fgsm",
    corruption: bool = False,
    success_p: float = 0.8,
    wrong: int = 10,
    separation: float = 3.0,
) -> pd.DataFrame:
    """One group's records with raw KD+BU features: clean and noisy ~ N((0, 0), 1), adversarial
    ~ N(-separation (1, 1), 1)."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 10
    clean_pred = np.where(np.arange(n) < n - wrong, label, (label + 1) % 10)
    success = rng.random(n) < success_p
    frame = pd.DataFrame(
        {
            R.MODEL: "m", R.THREAT: "t", R.ATTACK: attack, R.CORRUPTION: corruption, R.CRAFTED_ON: "m",
            R.SAMPLE: rng.permutation(1000)[:n], R.LABEL: label, R.TARGET: -1, R.CLEAN_PRED: clean_pred,
            R.ADV_PRED: np.where(success, (label + 1) % 10, clean_pred), R.SUCCESS: success,
            R.DISTORTION: rng.random(n),
        }
    )  # fmt: skip
    centre = {"clean": 0.0, "noisy": 0.0, "adv": -separation}
    for kind in C.KINDS:
        for feature in C.FEATURES:
            frame[C.raw_column(D, kind, feature)] = rng.normal(centre[kind], 1.0, n)
    return frame


def by_sample(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [R.ATTACK, R.SAMPLE]
    return frame.sort_values(keys).reset_index(drop=True)[[*keys, R.score_clean(D), R.score_adv(D), C.fitted_column(D)]]


def test_column_names():
    assert C.raw_column(D, "clean", "kd") == "raw_clean:kd+bu:kd"
    assert C.raw_column(D, "noisy", "bu") == "raw_noisy:kd+bu:bu"
    assert C.fitted_column(D) == "fitted_on:kd+bu"
    assert C.KINDS == ("clean", "noisy", "adv")
    assert len(set(C.raw_columns_of(D))) == 6
    with pytest.raises(ValueError, match="kind"):
        C.raw_column(D, "rotated", "kd")
    with pytest.raises(ValueError, match="feature"):
        C.raw_column(D, "clean", "lid")
    assert C.combined_detectors({"kd+bu": KDBUDetector(), "other": object()}).keys() == {"kd+bu"}


def test_noisy_like_has_the_adversarial_l2_stays_in_bounds_and_is_reproducible():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 6, 6, generator=g)
    scale = torch.tensor([0.1, 0.5, 1.0, 0.0, 2.0, 0.01, 3.0, 0.3]).view(-1, 1, 1, 1)
    x_adv = x + scale * torch.randn(x.shape, generator=g)
    l2 = (x_adv - x).flatten(1).double().norm(dim=1)
    noise = C.scaled_noise(x, x_adv, torch.Generator().manual_seed(1))
    torch.testing.assert_close(noise.flatten(1).double().norm(dim=1), l2, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(noise, x_adv - x)  # a random direction, not the adversarial one
    # Wide bounds: nothing is clipped, and the noisy input's distortion is the adversarial one.
    wide = C.noisy_like(x, x_adv, -100.0, 100.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close((wide - x).flatten(1).double().norm(dim=1), l2, rtol=1e-5, atol=1e-6)
    # The model's bounds: the same noise, clipped.
    noisy = C.noisy_like(x, x_adv, 0.0, 1.0, torch.Generator().manual_seed(1))
    assert noisy.shape == x.shape and noisy.dtype == x.dtype
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    torch.testing.assert_close(noisy, (x + noise).clamp(0.0, 1.0))
    assert torch.equal(noisy[3], x[3])  # no adversarial distortion: the clean input back
    assert torch.equal(noisy, C.noisy_like(x, x_adv, 0.0, 1.0, torch.Generator().manual_seed(1)))
    assert not torch.equal(noisy, C.noisy_like(x, x_adv, 0.0, 1.0, torch.Generator().manual_seed(2)))
    tensor_bounds = C.noisy_like(x, x_adv, torch.tensor(0.0), 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(tensor_bounds, noisy)


def test_fit_split_depends_only_on_the_seed_and_the_sample_ids():
    samples = np.random.default_rng(0).permutation(500)[:101]
    mask = C.fit_mask(samples, 0.5, seed=3)
    assert mask.sum() == round(101 * 0.5)
    order = np.random.default_rng(1).permutation(101)
    np.testing.assert_array_equal(C.fit_mask(samples[order], 0.5, seed=3), mask[order])
    assert not np.array_equal(C.fit_mask(samples, 0.5, seed=4), mask)
    assert C.fit_mask(samples, 0.25, seed=3).sum() == round(101 * 0.25)


def test_combine_scores_only_the_held_out_samples_and_separates_them():
    records = synthetic()
    before = records.copy()
    detector = KDBUDetector(seed=0)
    out = C.combine(records, {D: detector})
    pd.testing.assert_frame_equal(records, before)  # pure
    assert detector.combiner == {}  # the detector is not changed either
    assert list(out.columns) == [*records.columns, R.score_clean(D), R.score_adv(D), C.fitted_column(D)]
    assert out.index.equals(records.index) and out[R.SAMPLE].tolist() == records[R.SAMPLE].tolist()
    fitted = out[C.fitted_column(D)].to_numpy()
    assert out[C.fitted_column(D)].dtype == bool and fitted.sum() == 100
    for column in (R.score_clean(D), R.score_adv(D)):
        values = out[column].to_numpy()
        np.testing.assert_array_equal(np.isnan(values), fitted)  # NaN on exactly the fit samples
    np.testing.assert_array_equal(fitted, C.fit_mask(records[R.SAMPLE].to_numpy(), 0.5, 0))
    auc = metric_value("auc_roc", out, D)
    assert auc > 0.95
    # Higher = looks clean: the clean inputs score above the adversarial ones.
    assert np.nanmean(out[R.score_clean(D)]) > np.nanmean(out[R.score_adv(D)])
    assert R.detectors_in(out) == [D]
    pd.testing.assert_frame_equal(C.combine(records, {D: KDBUDetector(seed=0)}), out)  # deterministic


def test_scores_do_not_depend_on_row_order_or_batching():
    records = pd.concat([synthetic(120, seed=0, attack="fgsm"), synthetic(90, seed=1, attack="pgd")], ignore_index=True)
    expected = by_sample(C.combine(records, {D: KDBUDetector(seed=0)}))
    order = np.random.default_rng(5).permutation(len(records))
    shuffled = records.iloc[order]
    # Parts of 7 rows concatenated without a new index: repeated labels, as parts of another batching.
    parts = pd.concat([shuffled.iloc[i : i + 7].reset_index(drop=True) for i in range(0, len(shuffled), 7)])
    assert not parts.index.is_unique
    for frame in (shuffled, parts):
        out = C.combine(frame, {D: KDBUDetector(seed=0)})
        np.testing.assert_array_equal(out[R.SAMPLE].to_numpy(), frame[R.SAMPLE].to_numpy())  # rows keep their order
        pd.testing.assert_frame_equal(by_sample(out), expected)
    assert expected[R.score_clean(D)].notna().sum() == 60 + 45


def test_the_fit_never_sees_the_scored_samples():
    records = synthetic()
    detector = KDBUDetector(seed=0)
    first = C.fit_group(records, D, detector)
    probe = torch.tensor([[0.3, -0.7], [-2.0, 1.0]], dtype=torch.float64)
    scored = ~first.fit
    changed = records.copy()
    rng = np.random.default_rng(9)
    for column in C.raw_columns_of(D):
        changed.loc[scored, column] = rng.normal(5.0, 10.0, scored.sum())
    changed.loc[scored, R.SUCCESS] = ~changed.loc[scored, R.SUCCESS]  # and their populations
    second = C.fit_group(changed, D, detector)
    np.testing.assert_array_equal(second.fit, first.fit)
    assert all(torch.equal(first.combiner[k], second.combiner[k]) for k in first.combiner)
    assert torch.equal(combiner_scores(first.combiner, probe), combiner_scores(second.combiner, probe))
    # The scores of the changed samples are the unchanged combiner's at their new features.
    out = C.combine(changed, {D: detector})
    expected = combiner_scores(first.combiner, torch.from_numpy(C.features(changed, D, "adv"))).numpy()
    np.testing.assert_array_equal(out[R.score_adv(D)].to_numpy()[scored], expected[scored])
    # The test has power: changing the fit samples' features does change the combiner.
    refit = records.copy()
    refit.loc[first.fit, C.raw_column(D, "adv", "kd")] += 1.0
    third = C.fit_group(refit, D, detector)
    assert not torch.equal(combiner_scores(first.combiner, probe), combiner_scores(third.combiner, probe))


def test_a_corruption_group_gets_nan_scores():
    attack, noise = synthetic(100, seed=0), synthetic(100, seed=1, attack="gauss", corruption=True)
    out = C.combine(pd.concat([attack, noise], ignore_index=True), {D: KDBUDetector()})
    rows = out[R.CORRUPTION].to_numpy()
    assert out.loc[rows, [R.score_clean(D), R.score_adv(D)]].isna().all().all()
    assert not out.loc[rows, C.fitted_column(D)].any()
    assert out.loc[~rows, R.score_clean(D)].notna().sum() == 50
    assert math.isnan(metric_value("auc_roc", out[rows], D))
    # Corruption-only records need no raw features at all.
    bare = noise.drop(columns=C.raw_columns_of(D))
    assert C.combine(bare, {D: KDBUDetector()})[R.score_adv(D)].isna().all()


@pytest.mark.parametrize(
    "records",
    [
        synthetic(2, wrong=0, success_p=1.0),  # one fit sample
        synthetic(3, wrong=3),  # no clean-correct sample
        synthetic(60, success_p=0.0),  # no successful attack
        synthetic(60, wrong=59),  # one clean-correct sample
        synthetic(0),  # no records at all
    ],
    ids=["two-samples", "none-correct", "no-success", "one-correct", "empty"],
)
def test_a_group_too_small_to_fit_gets_nan_without_an_exception(records):
    out = C.combine(records, {D: KDBUDetector()})
    assert out[[R.score_clean(D), R.score_adv(D)]].isna().all().all()
    assert not out[C.fitted_column(D)].any() and len(out) == len(records)
    fit = C.fit_group(records, D, KDBUDetector())
    assert fit.combiner is None and "at least 2" in fit.reason
    if len(records):
        assert math.isnan(metric_value("auc_roc", out, D))


def test_the_smallest_group_that_fits():
    records = synthetic(4, wrong=0, success_p=1.0)  # two fit samples, both clean-correct and successful
    out = C.combine(records, {D: KDBUDetector()})
    assert out[C.fitted_column(D)].sum() == 2 and out[R.score_clean(D)].notna().sum() == 2


def test_non_finite_features_are_left_out_of_the_fit_and_unscored():
    records = synthetic()
    records.loc[records.index[:10], C.raw_column(D, "clean", "bu")] = np.nan  # e.g. a part written without them
    out = C.combine(records, {D: KDBUDetector()})
    assert out[R.score_clean(D)].iloc[:10].isna().all()
    assert metric_value("auc_roc", out, D) > 0.95


def test_records_without_the_raw_features_are_refused():
    with pytest.raises(KeyError, match="raw-feature"):
        C.combine(synthetic().drop(columns=[C.raw_column(D, "noisy", "kd")]), {D: KDBUDetector()})


def test_raw_features_of_a_tiny_model():
    model, _ = make_tiny("gm", dropout=0.3)
    defense = DEFENSES.get("gm")()
    detector = KDBUDetector(bandwidth=1.0, passes=5)
    g = torch.Generator().manual_seed(0)
    detector.fit(
        model, defense, Split(torch.rand(60, 1, 28, 28, generator=g), torch.arange(60) % 10), torch.device("cpu")
    )
    x = torch.rand(6, 1, 28, 28, generator=g)
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=g).sign()).clamp(0, 1)
    noisy = C.noisy_like(x, x_adv, 0.0, 1.0, torch.Generator().manual_seed(1))
    forwards = {kind: Forward.of(model, t) for kind, t in zip(C.KINDS, (x, noisy, x_adv))}
    features = C.raw_features(detector, model, defense, forwards["clean"])
    assert list(features) == list(C.FEATURES)
    for values in features.values():
        assert values.shape == (6,) and values.dtype == np.float64 and np.isfinite(values).all()
    np.testing.assert_allclose(
        np.stack([features["kd"], features["bu"]], 1),
        detector.raw_features(model, defense, forwards["clean"]).numpy(),
        rtol=1e-6,
    )
    assert (features["bu"] <= 0).all()  # minus an MC-dropout variance
    columns = C.raw_columns(D, detector, model, defense, forwards)
    assert list(columns) == C.raw_columns_of(D)
    assert all(v.shape == (6,) and np.isfinite(v).all() for v in columns.values())
    assert not np.array_equal(columns[C.raw_column(D, "noisy", "kd")], columns[C.raw_column(D, "clean", "kd")])
    with pytest.raises(KeyError, match="noisy"):
        C.raw_columns(D, detector, model, defense, {"clean": forwards["clean"], "adv": forwards["adv"]})
