"""Preparation: load and validate everything a run needs before any attack runs (bad input fails fast, in one line).

A suite prepares each of its pairs once, through one :class:`Loader` that loads every bundle
and dataset once however many pairs use it, and hands the prepared pair to the runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from robench.attacks.base import Attack
from robench.checkpoints.bundle import ModelBundle, load_bundle
from robench.core.data import Dataset, load_dataset
from robench.core.devices import resolve_device
from robench.core.errors import ConfigError
from robench.core.execution import to_memory_format, try_compile, use_channels_last
from robench.detectors import Detector
from robench.runs.detection import applicable_detectors, build_detectors
from robench.specs.run_config import RunConfig
from robench.specs.threat_files import select_threats
from robench.specs.threats import AttackSpec, ThreatModel, distribute, noise_threat


def threat_detectors(threats: list[ThreatModel]) -> tuple[str, ...] | None:
    """The detectors the selected threats declare (their union), or None (every one that applies) when one declares
    none."""
    if not threats or any(t.detectors is None for t in threats):
        return None
    return tuple(dict.fromkeys(name for t in threats for name in t.detectors))


@dataclass
class Loader:
    """Loads each bundle and dataset once (a suite's pairs share them)."""

    bundles: dict[tuple[str, str], ModelBundle] = field(default_factory=dict)
    datasets: dict[tuple[str, str, int], Dataset] = field(default_factory=dict)

    def bundle(self, path: Path, device: torch.device) -> ModelBundle:
        key = (str(Path(path).resolve()), str(device))
        if key not in self.bundles:
            self.bundles[key] = load_bundle(path, device=device)
        return self.bundles[key]

    def dataset(self, name: str, data_root: Path | None, split_seed: int) -> Dataset:
        key = (name, str(data_root), split_seed)
        if key not in self.datasets:
            self.datasets[key] = load_dataset(name, data_root=data_root, split_seed=split_seed)
        return self.datasets[key]


@dataclass
class PreparedThreat:
    threat: ThreatModel
    attacks: list[tuple[AttackSpec, Attack]]


@dataclass
class Prepared:
    """A validated run: its config, the loaded bundle(s) and dataset, the built threats, attacks and detectors."""

    config: RunConfig
    bundle: ModelBundle
    data: Dataset
    threats: list[PreparedThreat]
    device: torch.device
    detectors: dict[str, Detector]
    substitute: ModelBundle | None = None
    notes: list[str] = field(default_factory=list)  # one-line remarks for the user (e.g. fewer samples than requested)
    compiled: bool = False  # the model's backbone runs under torch.compile (config.compile, and compiling worked)

    @property
    def threat(self) -> ThreatModel:  # the single threat of a one-threat run
        return self.threats[0].threat

    @property
    def attacks(self) -> list[tuple[AttackSpec, Attack]]:
        return [pair for t in self.threats for pair in t.attacks]

    @property
    def train_name(self) -> str:
        """The training split's identity, for detector caches and part keys."""
        return f"{self.data.name}:{self.data.split_seed}"


def _check_compatible(bundle: ModelBundle, data: Dataset, what: str, path: Path) -> None:
    if tuple(data.input_shape) != tuple(bundle.meta.input_shape):
        raise ConfigError(
            f"{what} {path} expects inputs of shape {tuple(bundle.meta.input_shape)} but dataset '{data.name}' has "
            f"{tuple(data.input_shape)}"
        )
    if data.num_classes != bundle.meta.num_classes:
        raise ConfigError(
            f"{what} {path} has {bundle.meta.num_classes} classes but dataset '{data.name}' has {data.num_classes}"
        )


def _check_knows(threat: ThreatModel, label: str, attack: Attack) -> None:
    """A one-line error when attack ``label`` descends on a detector its threat's attacker does not know."""
    needs = attack.needs()
    if (needs.density or needs.detectors) and not threat.knows_detector:
        raise ConfigError(
            f"threat '{threat.name}': attack '{label}' attacks the detector, which a {threat.access} attacker does "
            "not know"
        )
    if needs.detectors and threat.needs_substitute:
        raise ConfigError(
            f"threat '{threat.name}': attack '{label}' attacks the evaluated model's detectors, which an attacker "
            "crafting on a substitute does not know"
        )


def config_threats(config: RunConfig) -> list[ThreatModel]:
    """The config's threat models with its sigmas, added attacks, attack subset and settings applied (nothing
    loaded)."""
    threats = select_threats(config.threat, substitute=config.substitute is not None)
    if config.sigmas:
        threats = [noise_threat(list(config.sigmas)) if t.name == "noise" else t for t in threats]
    if config.extra_attacks:
        threats = [t.with_added(list(config.extra_attacks)) for t in threats]
    return distribute(threats, config.settings, tuple(config.attacks))


def prepare(config: RunConfig, loader: Loader | None = None) -> Prepared:
    """Load and validate everything before any attack runs."""
    loader = loader or Loader()
    device = resolve_device(config.device)
    threats = config_threats(config)
    bundle = loader.bundle(config.model, device)
    data = loader.dataset(config.dataset or bundle.meta.dataset, config.data_root, bundle.meta.split_seed)
    _check_compatible(bundle, data, "model", config.model)
    substitute = None
    if config.substitute is not None:
        substitute = loader.bundle(config.substitute, device)
        _check_compatible(substitute, data, "substitute", config.substitute)
        if tuple(substitute.meta.value_range) != tuple(bundle.meta.value_range):
            raise ConfigError(
                f"substitute's input range {tuple(substitute.meta.value_range)} differs from the model's "
                f"{tuple(bundle.meta.value_range)}"
            )
    family = data.spec.family
    names = applicable_detectors(
        bundle, config.detectors if config.detectors is not None else threat_detectors(threats)
    )
    # the per-detector copies of the detector-aware attacks, then the per-budget copies of bounded attacks (of them too)
    threats = [t.at_detectors(tuple(names)).at_budgets(family, config.budgets) for t in threats]
    prepared_threats = [PreparedThreat(t, [(spec, spec.build(family)) for spec in t.attacks]) for t in threats]
    for t in prepared_threats:  # after --set and added attacks too: what an attack descends on, its attacker knows
        for spec, attack in t.attacks:
            _check_knows(t.threat, spec.label, attack)
    detectors = build_detectors(names, family, config.detector_settings)
    for detector in detectors.values():
        detector.check_applicable(bundle.model, bundle.defense)
    notes: list[str] = []
    if use_channels_last(config.channels_last, device, config.precision):
        for model in (bundle.model, substitute.model if substitute is not None else None):
            if model is not None:
                to_memory_format(model, True)
    compiled = False
    if config.compile:
        example = data.test.x[:2].to(device)
        compiled = try_compile(bundle.model, example, notes.append)
        if substitute is not None and compiled:
            compiled = try_compile(substitute.model, example, notes.append)
    if config.n > len(data.test):
        notes.append(
            f"--n {config.n} is more than the {len(data.test)} test samples of '{data.name}': "
            f"running on all {len(data.test)} (run.json records samples = {len(data.test)})"
        )
    return Prepared(config, bundle, data, prepared_threats, device, detectors, substitute, notes, compiled)
