"""The attacker's knowledge of the scored detectors: thresholds on held-out clean training inputs, per-detector copies
of the detector-aware attacks, and what a run records of them."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor

from robench.checkpoints.bundle import load_bundle
from robench.core.data import Split
from robench.core.errors import ConfigError
from robench.core.models import Forward
from robench.detectors.combined import KDBUDetector
from robench.detectors.kd import KernelDensityDetector
from robench.detectors.likelihood import MaxProbabilityDetector
from robench.runs import knowledge as K
from robench.runs.runner import RunConfig, run
from robench.scoring import records as R
from robench.specs.threats import THREATS, detector_label
from tiny import make_tiny

# the tiny models' features of random inputs lie ~0.001-0.003 apart (nearest neighbours): a kernel this narrow makes
# a training input's own kernel matter, as it does for a trained model's
WIDTH = 0.001
SEEDS_AT_THE_EDGES = (-1, 2**64 - 1, -(2**63))  # the command line's run seeds span -2**63 .. 2**64 - 1


def _split(n: int = 120, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10)


def _bundle(tmp_path, defense: str = "gm", seed: int = 0, dropout: float = 0.0):
    from robench.checkpoints.bundle import save_bundle

    model, meta = make_tiny(defense, seed=seed, dropout=dropout)
    save_bundle(tmp_path / f"{defense}.pt", model, meta)
    return load_bundle(tmp_path / f"{defense}.pt")


def _kd_bu_bundle(tmp_path):
    """A tiny untrained model with dropout (BU) whose logits are nearly tied, so that PGD-20 fools it on the inputs
    it classifies correctly (the tiny GM model puts every random input in one class by a margin PGD cannot undo)."""
    return _bundle(tmp_path, "softmax", seed=2, dropout=0.5)


def _labelled_by_the_model(bundle, n: int, wrong_every: int = 5, seed: int = 0) -> Split:
    """``n`` random inputs labelled as the (untrained) model classifies them, all but every ``wrong_every``-th one,
    which gets another label, cycling through the other classes: most inputs are clean-correct, some are not, and
    with ``n`` >= 9 * ``wrong_every`` every class has training inputs (the tiny model puts every input in one)."""
    x = _split(n, seed).x
    with torch.no_grad():
        y = Forward.of(bundle.model, x).predicted.clone()
    wrong = torch.arange(0, n, wrong_every)
    y[wrong] = (y[wrong] + 1 + torch.arange(len(wrong)) % 9) % 10
    return Split(x, y)


def _loo_kde(kd: KernelDensityDetector, z: Tensor, classes: Tensor, sources: Tensor, train_y: Tensor) -> Tensor:
    """By hand, in float64: the Gaussian KDE at each ``z[j]`` under class ``classes[j]``, over that class's fitted
    training features without the one of training input ``sources[j]`` (its index in the training split; -1: none),
    which the fit keeps at position "how many of that class come before it" (``per_class`` 0)."""
    state, h = kd.fitted_state(), kd.width
    out = []
    for j in range(len(z)):
        c, i = int(classes[j]), int(sources[j])
        points = state[f"class_{c}"].double()
        if i >= 0 and int(train_y[i]) == c:  # input i's own kernel is in this class: leave it out
            position = int((train_y[:i] == c).sum())
            points = torch.cat([points[:position], points[position + 1 :]])
        sq = (points - z[j].double()).pow(2).sum(1)
        d = points.shape[1]
        out.append(
            torch.logsumexp(-sq / (2 * h * h), 0) - math.log(len(points)) - 0.5 * d * math.log(2 * math.pi * h * h)
        )
    return torch.stack(out)


def _hand_statistics(scores: Tensor, fpr: float = 0.05) -> tuple[float, float, float]:
    """(threshold, level, scale) by their definitions: the floor(fpr * n)-th smallest score, the (lower) median and
    the interquartile range / 1.349."""
    ordered = scores.double().sort().values
    q25, q75 = torch.quantile(ordered, torch.tensor([0.25, 0.75], dtype=torch.float64))
    return (
        float(ordered[math.floor(fpr * len(ordered))]),
        float(ordered[(len(ordered) - 1) // 2]),
        float(q75 - q25) / 1.349,
    )


def _statistics(entry: dict) -> tuple[float, float, float]:
    return entry["threshold"], entry["level"], entry["scale"]


def test_held_out_indices_are_a_seeded_subset_of_the_training_split():
    a, b = K.held_out_indices(5000, 3), K.held_out_indices(5000, 3)
    assert torch.equal(a, b) and len(a) == K.HELD_OUT and len(set(a.tolist())) == K.HELD_OUT
    assert not torch.equal(a, K.held_out_indices(5000, 4))
    assert sorted(K.held_out_indices(10, 0).tolist()) == list(range(10))  # a small split: all of it
    for seed in SEEDS_AT_THE_EDGES:
        assert len(set(K.held_out_indices(5000, seed).tolist())) == K.HELD_OUT


def test_kd_scores_a_training_input_without_its_own_kernel(tmp_path):
    bundle = _bundle(tmp_path)
    train = _labelled_by_the_model(bundle, 300)
    kd = KernelDensityDetector(bandwidth=WIDTH)
    kd.fit(bundle.model, None, train, torch.device("cpu"))
    index = torch.tensor([0, 7, 42, 123, 299])
    got = K.clean_training_scores(bundle, kd, train.x[index], torch.device("cpu"))
    with torch.no_grad():
        forward = Forward.of(bundle.model, train.x[index])
    for j, i in enumerate(index.tolist()):  # the hand rule finds input i's own stored features
        c = int(train.y[i])
        assert torch.allclose(kd.fitted_state()[f"class_{c}"][int((train.y[:i] == c).sum())], forward.z[j], atol=1e-5)
    want = _loo_kde(kd, forward.z, forward.predicted, index, train.y)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-4)
    with_itself = kd.log_density(forward.z, forward.predicted)
    own_class = forward.predicted == train.y[index]
    assert own_class.any() and (got[own_class] < with_itself[own_class] - 0.5).all()  # far denser with itself in
    # a noisy copy of a training input sits close to that input's kernel: it leaves its source's kernel out
    noisy = (
        train.x[index] + 0.01 * torch.randn(train.x[index].shape, generator=torch.Generator().manual_seed(1))
    ).clamp(0, 1)
    with torch.no_grad():
        noisy_forward = Forward.of(bundle.model, noisy)
    got = kd.log_density_leaving_out(noisy_forward.z, noisy_forward.predicted, forward.z)
    want = _loo_kde(kd, noisy_forward.z, noisy_forward.predicted, index, train.y)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-4)
    keeping = _loo_kde(kd, noisy_forward.z, noisy_forward.predicted, torch.full((5,), -1), train.y)
    own_class = noisy_forward.predicted == train.y[index]
    assert own_class.any() and (want[own_class] < keeping[own_class] - 0.5).all()  # its source's kernel matters
    # an input derived from no training input (source -1) keeps every kernel
    with torch.no_grad():
        fresh = Forward.of(bundle.model, torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2)))
    got = kd.log_density_leaving_out(fresh.z, fresh.predicted)
    assert torch.allclose(
        got.double(), _loo_kde(kd, fresh.z, fresh.predicted, torch.full((3,), -1), train.y), atol=1e-4
    )


def test_thresholds_are_set_on_the_run_seeds_held_out_training_inputs(tmp_path):
    bundle = _bundle(tmp_path)
    train = _split(K.HELD_OUT + 200)  # larger than HELD_OUT: the seed picks which inputs
    kd = KernelDensityDetector(bandwidth=WIDTH)
    kd.fit(bundle.model, None, train, torch.device("cpu"))
    detectors = {"max-prob": MaxProbabilityDetector(), "kd": kd}
    found = {}
    for seed in (3, 4):
        knowledge = K.attacker_knowledge(bundle, detectors, train, "mnist", torch.device("cpu"), seed=seed)
        index = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: K.HELD_OUT]
        with torch.no_grad():
            forward = Forward.of(bundle.model, train.x[index])
        hand = {
            "max-prob": torch.softmax(forward.logits.double(), dim=1).max(1).values,
            "kd": _loo_kde(kd, forward.z, forward.predicted, index, train.y),
        }
        for name, scores in hand.items():
            entry = knowledge[name]
            assert entry["held_out"] == entry["calibrated_on"] == K.HELD_OUT
            assert _statistics(entry) == pytest.approx(_hand_statistics(scores), rel=1e-5, abs=1e-5), (seed, name)
        found[seed] = (set(index.tolist()), {name: _statistics(knowledge[name]) for name in detectors})
    assert found[3][0] != found[4][0]  # two seeds, two held-out sets, two sets of thresholds
    assert all(found[3][1][name] != found[4][1][name] for name in detectors)
    known = K.known_detectors(detectors, knowledge, torch.device("cpu"))
    assert [k.name for k in known] == ["max-prob", "kd"] and known[1].detector is kd
    json.dumps(K.knowledge_info(knowledge))  # run.json-ready


def _kd_bu(bundle, train: Split) -> KDBUDetector:
    detector = KDBUDetector(bandwidth=WIDTH, passes=4)
    detector.fit(bundle.model, bundle.defense, train, torch.device("cpu"))
    return detector


def _bu(bundle, detector: KDBUDetector, x: Tensor) -> Tensor:
    """BU's score of one batch, as the attacker computes it (the dropout masks depend on the batch)."""
    return detector.bu.score(bundle.model, bundle.defense, Forward.of(bundle.model, x)).double()


def test_kd_bu_thresholds_come_from_the_half_the_regression_did_not_see(tmp_path):
    bundle = _kd_bu_bundle(tmp_path)
    train = _labelled_by_the_model(bundle, 160)
    detector = _kd_bu(bundle, train)
    seed = 5
    entry = K.attacker_knowledge(bundle, {"kd+bu": detector}, train, "mnist", torch.device("cpu"), seed)["kd+bu"]
    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: K.HELD_OUT]
    second = index[80:]  # the regression is fitted on index[:80]
    with torch.no_grad():
        forward = Forward.of(bundle.model, train.x[second])
        kd = _loo_kde(detector.kd, forward.z, forward.predicted, second, train.y)
        features = torch.stack([kd, _bu(bundle, detector, train.x[second])], dim=1)
    c = entry["combiner"]
    scores = -(((features - c["mean"]) / c["std"]) @ c["coef"] + c["intercept"])
    assert entry["calibrated_on"] == 80 and entry["held_out"] == 160
    assert _statistics(entry) == pytest.approx(_hand_statistics(scores), rel=1e-4, abs=1e-4)


def test_the_attacker_fits_its_kd_bu_regression_on_the_first_half_only(tmp_path):
    from sklearn.linear_model import LogisticRegression

    from robench.attacks.base import AttackTarget, Bounds
    from robench.attacks.linf import PGD
    from robench.scoring.combiner import noisy_like

    bundle = _kd_bu_bundle(tmp_path)
    train = _labelled_by_the_model(bundle, 160)
    detector = _kd_bu(bundle, train)
    seed = 2**64 - 1
    knowledge = K.attacker_knowledge(bundle, {"kd+bu": detector}, train, "mnist", torch.device("cpu"), seed)
    entry = knowledge["kd+bu"]
    # by hand: the first half's clean-correct inputs, clean and noisy, against PGD-20 outputs that fool the model
    first = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:80]
    x, y = train.x[first], train.y[first]
    bounds = Bounds(*bundle.meta.value_range)
    attack = PGD.for_dataset("mnist", K.COMBINER_PGD)
    pgd = torch.Generator().manual_seed(K.knowledge_seed(seed, "kdbu-pgd"))
    result = attack(AttackTarget(bundle.model, bundle.defense, bounds), x, y, None, generator=pgd)
    noise = torch.Generator().manual_seed(K.knowledge_seed(seed, "kdbu-noise"))
    noisy_x = noisy_like(x, result.x_adv, bounds.low, bounds.high, noise)
    rows = {}
    with torch.no_grad():
        for kind, inputs in (("clean", x), ("noisy", noisy_x), ("adversarial", result.x_adv)):
            forward = Forward.of(bundle.model, inputs)
            kd = _loo_kde(detector.kd, forward.z, forward.predicted, first, train.y)  # each leaves its source out
            rows[kind] = torch.stack([kd, _bu(bundle, detector, inputs)], dim=1)
        correct = Forward.of(bundle.model, x).predicted == y
    fooled = correct & result.success
    assert (~correct).any() and (result.success & ~correct).any()  # inputs misclassified clean "succeed" too ...
    negatives = torch.cat([rows["clean"][correct], rows["noisy"][correct]]).numpy()
    positives = rows["adversarial"][fooled].numpy()  # ... but are no adversarial examples
    assert entry["combiner_fit"] == {
        "clean": int(correct.sum()),
        "noisy": int(correct.sum()),
        "adversarial": len(positives),
    }
    features = np.concatenate([negatives, positives])
    labels = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
    mean, std = features.mean(0), features.std(0)
    regression = LogisticRegression().fit((features - mean) / std, labels)
    c = entry["combiner"]
    assert np.allclose(c["mean"].numpy(), mean, rtol=1e-4) and np.allclose(c["std"].numpy(), std, rtol=1e-4)
    assert np.allclose(c["coef"].numpy(), regression.coef_[0], rtol=1e-3, atol=1e-4)
    assert float(c["intercept"]) == pytest.approx(float(regression.intercept_[0]), rel=1e-3, abs=1e-4)
    # the attacker's regression, as an attack sees it: differentiable through KD and BU (EOT)
    (known,) = K.known_detectors({"kd+bu": detector}, knowledge, torch.device("cpu"))
    x = train.x[:6].clone().requires_grad_(True)
    score = known.score(
        type("T", (), {"model": bundle.model, "defense": bundle.defense})(),
        Forward.of(bundle.model, x),
        torch.Generator().manual_seed(0),
        passes=3,
    )
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert score.shape == (6,) and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("seed", SEEDS_AT_THE_EDGES)
def test_every_run_seed_sets_the_attackers_knowledge(tmp_path, seed):
    for purpose in ("kdbu-pgd", "kdbu-noise", "kdbu-fit"):
        assert 0 <= K.knowledge_seed(seed, purpose) < 2**63
    bundle = _kd_bu_bundle(tmp_path)
    train = _labelled_by_the_model(bundle, 120)
    detectors = {"kd+bu": _kd_bu(bundle, train), "max-prob": MaxProbabilityDetector()}
    knowledge = K.attacker_knowledge(bundle, detectors, train, "mnist", torch.device("cpu"), seed)
    assert all(math.isfinite(entry["threshold"]) and entry["scale"] > 0 for entry in knowledge.values())
    assert knowledge["kd+bu"]["combiner_fit"]["adversarial"] >= K.MIN_FIT_ROWS


def test_too_few_adversarial_inputs_for_the_attackers_regression_is_a_config_error(tmp_path, monkeypatch):
    bundle = _kd_bu_bundle(tmp_path)
    train = _labelled_by_the_model(bundle, 60)
    detector = _kd_bu(bundle, train)
    monkeypatch.setitem(K.COMBINER_PGD, "eps", 1e-9)  # too small to fool the model on any input
    with pytest.raises(ConfigError, match=r"detector 'mine': the attacker cannot fit its own KD\+BU regression") as e:
        K.attacker_knowledge(bundle, {"mine": detector}, train, "mnist", torch.device("cpu"), seed=0)
    assert "\n" not in str(e.value) and "fooled the model on 0 of them" in str(e.value)
    wrong = Split(train.x, (train.y + 1) % 10)  # nothing classified correctly: no clean or adversarial rows
    monkeypatch.setitem(K.COMBINER_PGD, "eps", 0.3)
    with pytest.raises(ConfigError, match=r"training inputs it fits on, 0 are classified correctly"):
        K.attacker_knowledge(bundle, {"kd+bu": detector}, wrong, "mnist", torch.device("cpu"), seed=0)


def test_the_evaluated_samples_are_never_among_the_attackers_held_out_inputs(bundles, tmp_path, monkeypatch):
    from robench.runs import tasks
    from robench.runs.prepare import prepare

    seen, scored = [], []

    def spy(bundle, detectors, train, family, device, seed):
        seen.append((train, seed))
        return K.attacker_knowledge(bundle, detectors, train, family, device, seed)

    original = K.clean_training_scores

    def scoring(bundle, detector, x, device):  # the inputs the attacker sets its thresholds on
        scored.append(x)
        return original(bundle, detector, x, device)

    monkeypatch.setattr(tasks, "attacker_knowledge", spy)
    monkeypatch.setattr(K, "clean_training_scores", scoring)
    config = RunConfig(
        model=bundles["gm"],
        threat="white-box",
        attacks=("SPGD",),
        settings={"SPGD.steps": 2},
        n=8,
        batch_size=8,
        device="cpu",
        detectors=("max-prob",),
        seed=11,
        sanity=False,
    )
    run(config, tmp_path / "out", progress=False, echo=lambda _line: None)
    ((train, seed),) = seen
    assert seed == 11 and len(train) > K.HELD_OUT
    evaluated = pd.read_parquet(tmp_path / "out" / "records.parquet")[R.SAMPLE].unique()
    test = prepare(config).data.test
    marked = {test.x[int(i)].numpy().tobytes() for i in evaluated}  # the evaluated test inputs, by content
    assert len(marked) == len(evaluated) == 8
    ((held_out,),) = [scored]
    assert len(held_out) == K.HELD_OUT and not any(x.numpy().tobytes() in marked for x in held_out)
    # the check can fail: had the attacker calibrated on the test split, every evaluated input would be among them
    assert marked <= {x.numpy().tobytes() for x in test.x[K.held_out_indices(len(test), seed)]}


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
