"""KD's bandwidth selected per model on held-out training features, recorded in the fit; the reference-copy attacker
of 001 Table 10 and its per-attack sanity flag."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from robench.attacks.base import AttackNeeds
from robench.attacks.cw_wb import CARLINI_REFERENCE, REFERENCE_COPY_LABEL, CarliniWagnerWhiteBox
from robench.checkpoints.bundle import load_bundle, save_bundle
from robench.core.data import Split
from robench.core.errors import ConfigError
from robench.defenses import DEFENSES
from robench.detectors import fit_or_load
from robench.detectors.kd import BANDWIDTH_GRID, SELECT, KernelDensityDetector, select_bandwidth
from robench.report.tables import layouts
from robench.runs.density import DensitySettings, resolve_settings, scored_settings
from robench.runs.output import with_sanity_flags
from robench.runs.sanity import estimator_flags, sanity_table
from tiny import make_tiny


def synthetic_features(scale: float, seed: int = 0) -> list[torch.Tensor]:
    """Ten classes of 120 points in 8 dimensions, unit spread around well-separated means, times ``scale``."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(120, 8, generator=g) + 6.0 * k) * scale for k in range(10)]


def test_the_selected_width_scales_with_the_features():
    base, curve = select_bandwidth(synthetic_features(1.0), seed=0)
    assert 0.1 < base < 10 and curve.shape == (len(BANDWIDTH_GRID),)
    index = BANDWIDTH_GRID.index(base)
    assert 0 < index < len(BANDWIDTH_GRID) - 1  # an interior maximum, not the grid's edge
    for scale, steps in ((10.0, 8), (0.1, -8), (100.0, 16)):  # a decade is 8 grid steps
        width, _ = select_bandwidth(synthetic_features(scale), seed=0)
        assert width == pytest.approx(BANDWIDTH_GRID[index + steps])
        assert width / base == pytest.approx(scale, rel=1e-9)


def test_selection_is_deterministic_and_seeded():
    features = synthetic_features(1.0)
    a, curve_a = select_bandwidth(features, seed=3)
    b, curve_b = select_bandwidth(features, seed=3)
    assert a == b and torch.equal(curve_a, curve_b)
    _, curve_c = select_bandwidth(features, seed=4)
    assert not torch.equal(curve_a, curve_c)  # another held-out split


def tiny_split(n: int = 200, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10)


def test_the_detector_selects_by_default_and_records_the_width(tmp_path):
    model, meta = make_tiny("gm")
    save_bundle(tmp_path / "gm.pt", model, meta)
    bundle = load_bundle(tmp_path / "gm.pt")
    cpu = torch.device("cpu")
    kd = KernelDensityDetector.for_dataset("mnist")
    assert kd.bandwidth == SELECT and kd.selects
    with pytest.raises(ConfigError, match="not fitted"):
        _ = kd.width
    assert fit_or_load(kd, bundle, tiny_split(), cpu) is False
    assert kd.width in BANDWIDTH_GRID
    state = kd.fitted_state()
    assert float(state["bandwidth"]) == kd.width and state["bandwidth_curve"].shape == (len(BANDWIDTH_GRID),)
    info = kd.fitted_info()
    assert info["bandwidth"] == kd.width and info["bandwidth_selected"] is True
    # the cached fit carries the width: a fresh detector loads it instead of selecting again
    again = KernelDensityDetector.for_dataset("mnist")
    assert fit_or_load(again, bundle, tiny_split(), cpu) is True and again.width == kd.width
    z = torch.randn(4, state["class_0"].shape[1])
    torch.testing.assert_close(again.class_log_density(z), kd.class_log_density(z))
    # a fixed width is an explicit option, given as text on the command line too
    fixed = KernelDensityDetector.for_dataset("mnist", {"bandwidth": "1.2"})
    assert fixed.bandwidth == 1.2 and not fixed.selects and fixed.width == 1.2
    fixed.fit(model, DEFENSES.get("gm")(), tiny_split(), cpu)
    assert fixed.fitted_info() == {"bandwidth": 1.2, "bandwidth_selected": False}
    for bad in ("wide", 0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="bandwidth"):
            KernelDensityDetector.for_dataset("mnist", {"bandwidth": bad})


def test_a_selecting_fit_without_a_width_is_refitted(tmp_path):
    model, meta = make_tiny("softmax")
    save_bundle(tmp_path / "s.pt", model, meta)
    bundle = load_bundle(tmp_path / "s.pt")
    kd = KernelDensityDetector()
    with pytest.raises(ConfigError, match="lacks the selected bandwidth"):
        kd.load_fitted_state({"class_0": torch.zeros(2, 3)}, torch.device("cpu"))
    assert fit_or_load(kd, bundle, tiny_split(), torch.device("cpu")) is False


def test_the_first_points_per_class_in_split_order():
    model, _ = make_tiny("softmax")
    split = tiny_split()
    kd = KernelDensityDetector(bandwidth=1.0, per_class=3, subset="first")
    kd.fit(model, DEFENSES.get("softmax")(), split, torch.device("cpu"))
    with torch.no_grad():
        z = model.features(split.x)
    for k in range(10):
        torch.testing.assert_close(kd.fitted_state()[f"class_{k}"], z[split.y == k][:3])


def test_the_reference_copy_attacker_is_a_parameter_set():
    attack = CarliniWagnerWhiteBox(**CARLINI_REFERENCE)
    assert attack.first_initial_const == 1.0 and CarliniWagnerWhiteBox().first_initial_const == 1.0
    needs = attack.needs()
    assert needs == AttackNeeds(density=True, kd_per_class=100, kd_bandwidth=math.sqrt(10), kd_subset="first")
    scored = scored_settings({"kd": KernelDensityDetector()})
    assert scored == DensitySettings(SELECT, 0, 0, "random")
    # exp(-d^2 / 20) is the Gaussian kernel of width sqrt(10), its own estimator
    assert resolve_settings(needs, scored, "mnist") == DensitySettings(math.sqrt(10), 100, 0, "first")
    # the default attacker follows the scored detector, a selected width included
    assert resolve_settings(CarliniWagnerWhiteBox().needs(), scored, "mnist") == scored
    assert resolve_settings(CarliniWagnerWhiteBox().needs(), None, "mnist") == scored
    assert layouts.REFERENCE_COPY_LABEL == REFERENCE_COPY_LABEL


def test_only_the_attack_whose_estimator_differs_is_flagged():
    scored = {"bandwidth": SELECT, "per_class": 0, "seed": 0, "subset": "random"}
    densities = [
        {"attacks": ["white-box/C&W-wb"], "same_as_scored": True, "bandwidth": SELECT, "kd_per_class": 0,
         "kd_subset": "random", "width": 0.42, "scored_kd": scored},
        {"attacks": [f"white-box/{REFERENCE_COPY_LABEL}"], "same_as_scored": False, "bandwidth": math.sqrt(10),
         "kd_per_class": 100, "kd_subset": "first", "width": math.sqrt(10), "scored_kd": scored},
    ]  # fmt: skip
    results = estimator_flags("gm", densities, ["white-box"])
    assert [(r.threat, r.flagged) for r in results] == [
        ("white-box/C&W-wb", False),
        (f"white-box/{REFERENCE_COPY_LABEL}", True),
    ]
    assert "100 per class (first)" in results[1].detail and "3.162" in results[1].detail
    summary = pd.DataFrame(
        {"model": ["gm", "gm"], "threat": ["white-box"] * 2, "attack": ["C&W-wb", REFERENCE_COPY_LABEL]}
    )
    flags = with_sanity_flags(summary, sanity_table(results))["sanity_flags"].tolist()
    assert flags == ["", "attacker-estimator-differs"]
