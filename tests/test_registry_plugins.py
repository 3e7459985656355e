"""A new attack, defense or detector is one class plus its registration.

Throwaway plugins are registered in the real registries for one test at a time
(``Registry.registered`` removes them again), then found by name, listed,
validated through their field metadata, and used like the built-ins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.attacks import ATTACKS, Attack, AttackTarget, Bounds
from robench.core.config import finite, positive_int
from robench.core.errors import ConfigError, UnknownNameError
from robench.core.models import Classifier, Forward
from robench.defenses import DEFENSES, Defense
from robench.defenses.base import LinearHead, LossTerms, mean_terms
from robench.detectors import DETECTORS, Detector
from tiny import make_tiny


@dataclass(frozen=True)
class UniformNoise(Attack):
    """x + U(-scale, scale) * width per pixel, clipped; ``repeats`` draws, the last one kept."""

    scale: float = finite(0.25, low=0, low_open=True)
    repeats: int = positive_int(1)

    name: ClassVar[str] = "test-uniform-noise"
    description: ClassVar[str] = "uniform noise (test plugin)"
    budget_param: ClassVar[str | None] = "scale"

    def run(
        self, target: AttackTarget, x: Tensor, y: Tensor, targets: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        for _ in range(self.repeats):
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
            x_adv = target.bounds.clip(x + self.scale * target.bounds.width * noise)
        return x_adv


@dataclass(frozen=True)
class TemperatureDefense(Defense):
    """Cross-entropy on logits divided by a temperature (test plugin); a plain linear head."""

    temperature: float = finite(2.0, low=0, low_open=True)

    name: ClassVar[str] = "test-temperature"
    description: ClassVar[str] = "softmax with a temperature (test plugin)"
    label: ClassVar[str] = "Temperature"
    table_rank: ClassVar[int] = 50

    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        return LinearHead(feature_dim, num_classes)

    def loss(self, head: nn.Module, z: Tensor, y: Tensor) -> LossTerms:
        return mean_terms(self.attack_loss(head, z, y), "ce")

    def attack_loss(self, head: nn.Module, z: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(head(z) / self.temperature, labels, reduction="none")


@dataclass
class LogitGapDetector(Detector):
    """The gap between the two largest logits (test plugin), higher = more confident = looks clean."""

    floor: float = finite(0.0, low=0)

    name: ClassVar[str] = "test-logit-gap"
    description: ClassVar[str] = "top-2 logit gap (test plugin)"

    def score(self, model: Classifier, defense: Defense, forward: Forward) -> Tensor:
        top = forward.logits.topk(2, dim=1).values
        return (top[:, 0] - top[:, 1]).clamp_min(self.floor)


@pytest.fixture
def plugins():
    with (
        ATTACKS.registered(UniformNoise),
        DEFENSES.registered(TemperatureDefense),
        DETECTORS.registered(LogitGapDetector),
    ):
        yield
    assert (
        "test-uniform-noise" not in ATTACKS and "test-temperature" not in DEFENSES and "test-logit-gap" not in DETECTORS
    )


@pytest.mark.parametrize(
    ("registry", "cls"), [(ATTACKS, UniformNoise), (DEFENSES, TemperatureDefense), (DETECTORS, LogitGapDetector)]
)
def test_found_by_name_listed_and_suggested(plugins, registry, cls):
    assert registry.get(cls.name) is cls
    assert cls.name in registry.names() and (cls.name, cls) in registry.items()
    with pytest.raises(UnknownNameError, match=f"did you mean '{cls.name}'"):
        registry.get(cls.name.replace("test-", "tset-"))


def test_validated_through_field_metadata(plugins):
    assert ATTACKS.get("test-uniform-noise").for_dataset("mnist", {"scale": "0.1"}).scale == 0.1
    with pytest.raises(ConfigError, match="attack 'test-uniform-noise': scale must be a finite number > 0, got nan"):
        ATTACKS.get("test-uniform-noise").for_dataset("mnist", {"scale": "nan"})
    with pytest.raises(ConfigError, match="repeats must be an integer >= 1, got 0"):
        UniformNoise(repeats=0)
    with pytest.raises(ConfigError, match="did you mean 'scale'"):
        UniformNoise.for_dataset("mnist", {"sclae": "0.1"})
    with pytest.raises(
        ConfigError, match="defense 'test-temperature': temperature must be a finite number > 0, got 0.0"
    ):
        DEFENSES.get("test-temperature")(temperature=0.0)
    with pytest.raises(ConfigError, match="detector 'test-logit-gap': floor must be a finite number >= 0, got inf"):
        DETECTORS.get("test-logit-gap").from_params({"floor": "inf"})
    assert (
        TemperatureDefense.label == "Temperature" and LogitGapDetector.label == "test-logit-gap"
    )  # label defaults to the name


def test_the_real_registries_refuse_the_wrong_kind(plugins):
    with pytest.raises(ConfigError, match="must be a subclass of Attack"):
        ATTACKS.register(LogitGapDetector)
    with pytest.raises(ConfigError, match="already registered"):
        ATTACKS.register(UniformNoise)
    with pytest.raises(ConfigError, match="its name is 'test-uniform-noise'"):
        ATTACKS.register("uniform-noise", UniformNoise)


def test_the_plugins_work_together_through_the_final_call(plugins):
    model, _ = make_tiny("test-temperature", seed=0)  # built by the defense plugin through the registry
    assert model.num_classes == 10
    defense = DEFENSES.get("test-temperature").for_dataset("mnist")
    target = AttackTarget(model, defense, Bounds(0.0, 1.0))
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 1, 28, 28, generator=generator), torch.randint(0, 10, (6,), generator=generator)

    attack = ATTACKS.get("test-uniform-noise")(scale=0.5)
    result = attack(target, x, y, generator=torch.Generator().manual_seed(1))
    again = attack(target, x, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(result.x_adv, again.x_adv) and not torch.equal(result.x_adv, x)
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    with torch.no_grad():
        predicted = model(result.x_adv).argmax(1)
    assert torch.equal(result.predicted, predicted) and torch.equal(
        result.success, predicted != y
    )  # judged by the model

    with pytest.raises(ConfigError, match="labels must lie in 0..9"):  # the final __call__'s checks apply to plugins
        attack(target, x, y + 10, generator=torch.Generator())

    detector = DETECTORS.get("test-logit-gap").for_dataset("mnist")
    scores = detector.score(model, defense, result.forward)
    assert scores.shape == (6,) and (scores >= 0).all()

    # a built-in attack uses the plugin defense's own loss as its adaptive objective
    pgd = ATTACKS.get("pgd").for_dataset("mnist", {"objective": "adaptive", "steps": 2})
    assert pgd(target, x, y, generator=torch.Generator()).x_adv.shape == x.shape


def test_a_new_metric_is_one_object_and_its_registration(tmp_path):
    """A throwaway metric (median L2 of the successful attacks) reaches the summary, the intervals and the gate."""
    import numpy as np

    from robench.report.bootstrap import bootstrap_intervals
    from robench.report.regression import metric_rows
    from robench.scoring import records as R
    from robench.scoring.metrics import METRICS, Metric, Weighted, summarize
    from test_rundir import synthetic_records

    def mean_linf(w: Weighted, detector: str | None) -> np.ndarray:
        values = R.linf(w.records)
        return w.mean(values, R.successful(w.records))

    metric = Metric("mean_linf", "L-inf", True, False, False, "mean L-inf of successful perturbations", mean_linf)
    records = synthetic_records(n=40)
    with METRICS.registered(metric):
        summary = summarize(records)
        assert "mean_linf" in summary.columns and summary.columns[-1] == "mean_linf"
        first = records[records[R.ATTACK] == "FGSM"]
        assert summary.loc[summary[R.ATTACK] == "FGSM", "mean_linf"].iloc[0] == float(
            R.linf(first)[R.successful(first)].mean()
        )
        assert {"mean_linf_low", "mean_linf_high"} <= set(bootstrap_intervals(records, n_resamples=20).columns)
        assert "mean_linf" in set(metric_rows(summary)["metric"])
    assert "mean_linf" not in summarize(records).columns


def test_the_readme_plugin_example_registers_and_runs(trained_tiny):
    """The README's example attack, executed as written, is found, validated and run through the final __call__."""
    import re
    from pathlib import Path

    import pytest
    import torch

    from robench.attacks import ATTACKS, AttackTarget, Bounds
    from robench.core.errors import ConfigError

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "UniformNoise" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    try:
        cls = ATTACKS.get("uniform-noise")
        with pytest.raises(ConfigError, match="eps"):
            cls(eps=float("nan"))
        bundle, data = trained_tiny["softmax"], trained_tiny["data"]
        x, y = data.test.x[:8], data.test.y[:8]
        result = cls(eps=0.2)(
            AttackTarget(bundle.model, bundle.defense, Bounds(0.0, 1.0)),
            x,
            y,
            generator=torch.Generator().manual_seed(0),
        )
        assert result.x_adv.shape == x.shape and float((result.x_adv - x).abs().max()) <= 0.2 + 1e-6
    finally:
        ATTACKS.unregister("uniform-noise")
