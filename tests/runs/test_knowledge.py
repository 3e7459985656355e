"""The attacker's knowledge of the scored detectors: thresholds on held-out clean training inputs, per-detector copies
of the detector-aware attacks, and what a run records of them."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from robench.checkpoints.bundle import load_bundle
from robench.core.data import Split
from robench.core.models import Forward
from robench.detectors.base import threshold_at_fpr
from robench.detectors.combined import KDBUDetector
from robench.detectors.kd import KernelDensityDetector, gaussian_kde_log_density
from robench.detectors.likelihood import MaxProbabilityDetector
from robench.runs import knowledge as K
from robench.runs.runner import RunConfig, run
from robench.scoring import records as R
from robench.specs.threats import THREATS, detector_label
from tiny import make_tiny


def _split(n: int = 120, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10)


def test_held_out_indices_are_a_seeded_subset_of_the_training_split():
    a, b = K.held_out_indices(5000, 3), K.held_out_indices(5000, 3)
    assert torch.equal(a, b) and len(a) == K.HELD_OUT and len(set(a.tolist())) == K.HELD_OUT
    assert not torch.equal(a, K.held_out_indices(5000, 4))
    assert sorted(K.held_out_indices(10, 0).tolist()) == list(range(10))  # a small split: all of it


def test_kd_leaves_a_training_inputs_own_kernel_out():
    model, _ = make_tiny("gm")
    train = _split()
    kd = KernelDensityDetector(bandwidth=1.0)
    kd.fit(model, None, train, torch.device("cpu"))
    with torch.no_grad():
        z = model.features(train.x[:5])
    classes = train.y[:5]
    got = kd.log_density_leaving_out(z, classes)
    for i in range(5):  # the KDE of the class's other points, by hand
        points = kd._points[int(classes[i])]
        others = points[(points - z[i]).norm(dim=1) > 1e-4]
        want = gaussian_kde_log_density(z[i : i + 1], others, 1.0)
        assert torch.allclose(got[i : i + 1].float(), want.float(), atol=1e-4)
    assert (got < kd.log_density(z, classes)).all()  # with itself in, every training input looks denser
    fresh = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        zf = model.features(fresh)
    assert torch.allclose(kd.log_density_leaving_out(zf, classes[:3]).float(), kd.log_density(zf, classes[:3]).float())


def _bundle(tmp_path, dropout: float = 0.0):
    from robench.checkpoints.bundle import save_bundle

    model, meta = make_tiny("gm", dropout=dropout)
    save_bundle(tmp_path / "gm.pt", model, meta)
    return load_bundle(tmp_path / "gm.pt")


def test_thresholds_are_set_on_held_out_clean_scores(tmp_path):
    bundle = _bundle(tmp_path)
    train = _split(200)
    detectors = {"max-prob": MaxProbabilityDetector(), "kd": KernelDensityDetector(bandwidth=1.0)}
    detectors["kd"].fit(bundle.model, bundle.defense, train, torch.device("cpu"))
    knowledge = K.attacker_knowledge(bundle, detectors, train, "mnist", torch.device("cpu"), seed=0)
    index = K.held_out_indices(len(train), 0)
    for name, detector in detectors.items():
        scores = K.clean_training_scores(bundle, detector, train.x[index], torch.device("cpu"))
        entry = knowledge[name]
        assert entry["threshold"] == threshold_at_fpr(scores, 0.05)
        assert float((scores < entry["threshold"]).double().mean()) <= 0.05
        assert entry["level"] == pytest.approx(float(scores.median()))
        assert entry["scale"] > 0 and entry["held_out"] == len(index) == 200
    known = K.known_detectors(detectors, knowledge, torch.device("cpu"))
    assert [k.name for k in known] == ["max-prob", "kd"] and known[1].detector is detectors["kd"]
    info = K.knowledge_info(knowledge)
    json.dumps(info)  # run.json-ready


def test_the_attacker_fits_its_own_kd_bu_regression(tmp_path):
    bundle = _bundle(tmp_path, dropout=0.5)
    train = _split(160)
    detector = KDBUDetector(bandwidth=1.0, passes=4)
    detector.fit(bundle.model, bundle.defense, train, torch.device("cpu"))
    knowledge = K.attacker_knowledge(bundle, {"kd+bu": detector}, train, "mnist", torch.device("cpu"), seed=1)
    entry = knowledge["kd+bu"]
    assert set(entry["combiner"]) == {"mean", "std", "coef", "intercept"}
    assert entry["calibrated_on"] == 80 and entry["combiner_fit"]["adversarial"] >= 2
    (known,) = K.known_detectors({"kd+bu": detector}, knowledge, torch.device("cpu"))
    x = train.x[:6].clone().requires_grad_(True)
    score = known.score(
        type("T", (), {"model": bundle.model, "defense": bundle.defense})(),
        Forward.of(bundle.model, x),
        torch.Generator().manual_seed(0),
        passes=3,
    )
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert score.shape == (6,) and torch.isfinite(grad).all() and grad.abs().sum() > 0  # through KD and BU (EOT)


def test_detector_aware_attacks_run_once_per_scored_detector_and_budget():
    white = THREATS.get("white-box")
    expanded = white.at_detectors(("kd", "max-prob")).at_budgets("mnist")
    labels = expanded.labels()
    for base in ("SPGD", "SPGD-L2"):
        assert base not in labels
        for name in ("kd", "max-prob"):
            assert detector_label(base, name) in labels
    assert "SPGD[kd]@Linf 0.1" in labels and "SPGD-L2[max-prob]@L2 1" in labels
    spec = {s.label: s for s in expanded.attacks}["SPGD[kd]@Linf 0.1"]
    assert spec.params["detector"] == "kd" and spec.build("mnist").eps == 0.1
    assert spec.build("mnist").attacked_detectors(["kd", "max-prob"]) == ("kd",)
    bare = white.at_detectors(())  # nothing scored: nothing to attack
    assert not any(label.startswith("SPGD") for label in bare.labels())
    assert THREATS.get("semi-white-box").at_detectors(("kd",)) == THREATS.get("semi-white-box")


def test_a_run_records_which_detectors_each_attack_targeted(bundles, tmp_path):
    out = tmp_path / "out"
    config = RunConfig(
        model=bundles["gm"],
        threat="white-box",
        attacks=("SPGD", "PGD-10-un"),
        settings={"SPGD.steps": 3},
        n=6,
        batch_size=6,
        device="cpu",
        detectors=("max-prob", "gm-likelihood"),
        sanity=False,
    )
    run(config, out, progress=False, echo=lambda _line: None)
    records = pd.read_parquet(out / "records.parquet")
    by_attack = records.groupby(R.ATTACK)[R.ATTACK_DETECTORS].first()
    assert by_attack["SPGD[max-prob]"] == "max-prob" and by_attack["SPGD[gm-likelihood]"] == "gm-likelihood"
    assert by_attack["PGD-10-un"] == ""
    info = json.loads((out / "run.json").read_text())["attacker_detectors"]
    assert set(info["detectors"]) == {"max-prob", "gm-likelihood"}
    assert all(math.isfinite(d["threshold"]) for d in info["detectors"].values())
    # resumed with every part reused: the same knowledge is recorded
    run(config, out, progress=False, echo=lambda _line: None)
    again = json.loads((out / "run.json").read_text())["attacker_detectors"]
    assert again["detectors"] == info["detectors"]
    assert np.isfinite(records[R.score_adv("max-prob")]).all()


def test_an_added_detector_aware_attack_needs_an_attacker_that_knows_the_detector(bundles):
    from robench.core.errors import ConfigError
    from robench.runs.prepare import prepare

    added = ({"label": "J", "attack": "orthogonal-pgd", "params": {"detector": "max-prob"}, "target_mode": "none"},)
    config = RunConfig(
        model=bundles["gm"], threat="semi-white-box", extra_attacks=added, n=4, device="cpu", detectors=("max-prob",)
    )
    with pytest.raises(ConfigError, match="grey-box attacker does not know"):
        prepare(config)
    swapped = RunConfig(
        model=bundles["gm"],
        threat="black-box",
        substitute=bundles["softmax"],
        settings={"C&W-wb.detector": "max-prob"},
        n=4,
        device="cpu",
        detectors=("max-prob",),
    )
    with pytest.raises(ConfigError, match="crafting on a substitute does not know"):
        prepare(swapped)
