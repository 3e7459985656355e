"""The autoattack threat: AutoAttack's ensemble from torchattacks' components, as a per-sample cascade.

Checked against torchattacks' own ensemble on the same inputs: the fast test shortens every
component on both sides alike (torchattacks' ``MultiAttack`` of the same four classes, which is
what its ``AutoAttack`` runs); the slow one runs the threat at its registered settings against
``torchattacks.AutoAttack(version="standard")`` itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from robench.checkpoints.bundle import load_bundle
from robench.core.data import load_dataset
from robench.runs.runner import run, select_samples
from robench.scoring import records as R
from robench.scoring.metrics import metric_value
from robench.scoring.worst_case import worst_case_records
from robench.specs.run_config import RunConfig
from robench.specs.threats import THREATS

torchattacks = pytest.importorskip("torchattacks")

MODELS = Path(__file__).resolve().parent.parent / "reports" / "regression" / "models"
LABELS = ("APGD-CE", "APGD-T", "FAB-T", "Square")
SLOW = pytest.mark.skipif(not os.environ.get("ROBENCH_SLOW"), reason="slow: set ROBENCH_SLOW=1")


def _ours(model: str, eps: float, n: int, settings: dict[str, object] | None = None):
    config = RunConfig(
        model=MODELS / f"{model}.pt",
        threat="autoattack",
        n=n,
        batch_size=n,
        seed=0,
        device="cpu",
        settings={**{f"{label}.eps": eps for label in LABELS}, **(settings or {})},
        detectors=("max-prob",),
        sanity=False,
    )
    return run(config, progress=False, echo=lambda line: None)


def _theirs(model: str, eps: float, n: int, build) -> tuple[float, float]:
    """torchattacks' robust accuracy over the clean-correct samples of robench's seeded subset, and its 95% bootstrap
    half-width."""
    bundle = load_bundle(MODELS / f"{model}.pt")
    data = load_dataset("mnist-5k")
    index = select_samples(len(data.test), n, 0)
    x, y = data.test.x[index], data.test.y[index]
    with torch.random.fork_rng():  # torchattacks reseeds the global RNG itself
        adv = build(bundle.model)(x, y)
        with torch.no_grad():
            clean = bundle.model(x).argmax(1) == y
            robust = (bundle.model(adv).argmax(1) == y)[clean].float().numpy()
    draws = robust[np.random.default_rng(0).integers(0, len(robust), size=(1000, len(robust)))].mean(1)
    low, high = np.quantile(draws, [0.025, 0.975])
    return float(robust.mean()), float(high - low) / 2


def _worst(result) -> float:
    return metric_value("survival", worst_case_records(result.records))


def test_autoattack_is_registered_as_the_standard_ensemble():
    threat = THREATS.get("autoattack")
    assert threat.labels() == list(LABELS) and threat.default_cascade == "misclassified" and threat.access == "grey-box"
    params = {spec.label: dict(spec.params) for spec in threat.attacks}
    assert (
        params["APGD-CE"]["steps"] == params["APGD-T"]["steps"] == params["FAB-T"]["steps"] == 100
    )  # the paper's, not torchattacks' 10
    assert params["Square"]["n_queries"] == 5000 and params["FAB-T"]["multi_targeted"] is True


def test_autoattack_cascade_agrees_with_torchattacks_ensemble_on_the_same_inputs():
    eps, n = 0.1, 30
    short = {"APGD-CE.steps": 20, "APGD-T.steps": 5, "FAB-T.steps": 5, "Square.n_queries": 150}
    result = _ours("gm", eps, n, short)
    records = result.records
    assert set(records[R.CASCADE]) == {"misclassified"}
    seen = records.groupby(R.ATTACK)[R.SAMPLE].nunique()
    assert seen["APGD-CE"] == n and all(seen[label] <= n for label in LABELS)  # later attacks see the survivors only
    ours = _worst(result)
    first = metric_value("survival", records[records[R.ATTACK] == "APGD-CE"])
    assert ours <= first  # the worst case is never above the first attack, which saw every sample
    assert R.score_adv("max-prob") in records.columns and records[R.score_adv("max-prob")].notna().all()

    def ensemble(model):
        ta = torchattacks
        return ta.MultiAttack(
            [
                ta.APGD(model, eps=eps, steps=20, n_restarts=1, loss="ce", seed=0),
                ta.APGDT(model, eps=eps, steps=5, n_restarts=1, n_classes=10, seed=0),
                ta.FAB(model, eps=eps, steps=5, n_restarts=1, multi_targeted=True, n_classes=10, seed=0),
                ta.Square(model, eps=eps, n_queries=150, n_restarts=1, seed=0),
            ]
        )

    theirs, half = _theirs("gm", eps, n, ensemble)
    assert ours <= theirs + half, (ours, theirs, half)
    assert ours >= theirs - half - 0.1, (ours, theirs, half)  # the same components: not wildly stronger either


@SLOW
@pytest.mark.parametrize("model", ["softmax", "gm"])
def test_autoattack_threat_at_its_settings_matches_torchattacks_autoattack(model):
    eps, n = 0.1, 100
    ours = _worst(_ours(model, eps, n))
    theirs, half = _theirs(
        model,
        eps,
        n,
        lambda m: torchattacks.AutoAttack(m, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0),
    )
    assert ours <= theirs + half, (ours, theirs, half)
