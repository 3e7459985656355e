"""The runner: bundle + dataset + threat model -> attacks in batches -> per-sample records -> summary.

Records are the single source of truth: ``summary.csv`` is ``metrics.summarize(records)``,
and every later table or regression check reads the records or the summary.
Each (attack, batch) draws its randomness (targets, random starts, noise) from
its own generator, seeded from the run seed, the attack's label and the batch
index, so a batch's result does not depend on which other batches or attacks ran.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from robench.attacks.base import Attack, AttackTarget, Bounds
from robench.attacks.targets import choose_targets
from robench.bundle import ModelBundle, load_bundle
from robench.data import Dataset, load_dataset
from robench.detector_report import applicable_detectors, build_detectors
from robench.detectors import Detector, Forward, fit_or_load
from robench.devices import resolve_device
from robench.errors import ConfigError
from robench.metrics import summarize
from robench.provenance import atomic_write_bytes, atomic_write_text, git_revision, package_versions
from robench.threats import THREATS, AttackSpec, ThreatModel, noise_threat

@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers (recorded in run.json)."""

    model: Path
    threat: str
    n: int = 1000
    batch_size: int = 250
    seed: int = 0
    device: str = "auto"
    settings: Mapping[str, Any] = field(default_factory=dict)
    attacks: tuple[str, ...] = ()
    detectors: tuple[str, ...] | None = None
    detector_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    dataset: str | None = None
    data_root: Path | None = None
    model_name: str | None = None
    sigmas: tuple[float, ...] = ()  # the noise threat with one attack per sigma

    def __post_init__(self) -> None:
        if self.n < 1 or self.batch_size < 1:
            raise ConfigError("--n and --batch-size must be at least 1")
        if self.sigmas and self.threat != "noise":
            raise ConfigError(f"--sigma applies to the noise threat, not '{self.threat}'")


@dataclass
class RunResult:
    records: pd.DataFrame
    summary: pd.DataFrame
    info: dict[str, Any]


def derive_seed(seed: int, *parts: object) -> int:
    digest = hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def select_samples(n_test: int, n: int, seed: int) -> torch.Tensor:
    """The first n of a seeded permutation of the test split (all of it if n >= its size)."""
    order = torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))
    return order[: min(n, n_test)]


def _scores(detectors: Mapping[str, Detector], bundle: ModelBundle, forward: Forward) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {name: d.score(bundle.model, bundle.defense, forward).float().cpu().numpy() for name, d in detectors.items()}


@dataclass
class Prepared:
    bundle: ModelBundle
    data: Dataset
    threat: ThreatModel
    device: torch.device
    detectors: dict[str, Detector]
    attacks: list[tuple[AttackSpec, Attack]]


def prepare(config: RunConfig) -> Prepared:
    """Load and validate everything before any attack runs (bad input fails fast, in one line)."""
    device = resolve_device(config.device)
    bundle = load_bundle(config.model, device=device)
    dataset_name = config.dataset or bundle.meta.dataset
    data = load_dataset(dataset_name, data_root=config.data_root, split_seed=bundle.meta.split_seed)
    if tuple(data.input_shape) != tuple(bundle.meta.input_shape):
        raise ConfigError(
            f"model {config.model} expects inputs of shape {tuple(bundle.meta.input_shape)} but dataset '{dataset_name}' has {tuple(data.input_shape)}"
        )
    if data.num_classes != bundle.meta.num_classes:
        raise ConfigError(f"model has {bundle.meta.num_classes} classes but dataset '{dataset_name}' has {data.num_classes}")
    threat = noise_threat(list(config.sigmas)) if config.sigmas else THREATS.get(config.threat)
    threat = threat.with_overrides(config.settings)
    if config.attacks:
        threat = threat.only(list(config.attacks))
    attacks = [(spec, spec.build(data.spec.family)) for spec in threat.attacks]
    names = applicable_detectors(bundle, config.detectors)
    if "kd+bu" in names:
        raise ConfigError("detector 'kd+bu' needs adversarial examples to fit its combiner; the runner does not fit it yet")
    detectors = build_detectors(names, data.spec.family, config.detector_settings)
    for detector in detectors.values():
        detector.check_applicable(bundle.model, bundle.defense)
    return Prepared(bundle, data, threat, device, detectors, attacks)


def run(config: RunConfig, out: Path | None = None, progress: bool = True, echo: Callable[[str], None] = print) -> RunResult:
    """Attack the model under the threat model and return (and, with ``out``, write) records and summary."""
    started = time.perf_counter()
    prepared = prepare(config)
    bundle, data, threat, device, detectors = prepared.bundle, prepared.data, prepared.threat, prepared.device, prepared.detectors
    model_name = config.model_name or Path(config.model).stem
    fit_seconds = time.perf_counter()
    train_name = f"{data.name}:{data.split_seed}"
    reused = {name: fit_or_load(d, bundle, data.train, device, train_name=train_name) for name, d in detectors.items()}
    fit_seconds = time.perf_counter() - fit_seconds
    target = AttackTarget(bundle.model, bundle.defense, Bounds(*bundle.meta.value_range))
    samples = select_samples(len(data.test), config.n, config.seed)
    batches = [samples[i : i + config.batch_size] for i in range(0, len(samples), config.batch_size)]
    attacks = prepared.attacks
    timings = {spec.label: 0.0 for spec in threat.attacks}
    hwc = float(np.prod(bundle.meta.input_shape))
    parts: list[pd.DataFrame] = []
    bar = tqdm(total=len(batches) * len(attacks), desc=f"{model_name}/{threat.name}", unit="batch", disable=None if progress else True, leave=False)
    for b, index in enumerate(batches):
        x = data.test.x[index].to(device)
        y = data.test.y[index].to(device)
        with torch.no_grad():
            clean_forward = Forward.of(bundle.model, x)
        clean_scores = _scores(detectors, bundle, clean_forward)
        clean_pred = clean_forward.predicted.cpu().numpy()
        for spec, attack in attacks:
            generator = torch.Generator().manual_seed(derive_seed(config.seed, spec.label, b))
            tic = time.perf_counter()
            targets = choose_targets(spec.target_mode, clean_forward.logits, y, generator)
            result = attack(target, x, y, targets, generator=generator)
            timings[spec.label] += time.perf_counter() - tic
            adv_scores = _scores(detectors, bundle, result.forward)
            delta = (result.x_adv - x).flatten(1).double()
            l2 = delta.norm(dim=1).cpu().numpy()
            part = {
                "model": model_name,
                "threat": threat.name,
                "attack": spec.label,
                "corruption": attack.norm == "none",
                "sample": index.numpy(),
                "label": y.cpu().numpy(),
                "target": targets.cpu().numpy() if targets is not None else np.full(len(index), -1),
                "clean_pred": clean_pred,
                "adv_pred": result.predicted.cpu().numpy(),
                "success": result.success.cpu().numpy(),
                "l2": l2,
                "linf": delta.abs().max(dim=1).values.cpu().numpy(),
                "distortion": l2 / np.sqrt(hwc),
            }
            for name in detectors:
                part[f"score_clean:{name}"] = clean_scores[name]
                part[f"score_adv:{name}"] = adv_scores[name]
            parts.append(pd.DataFrame(part))
            bar.update(1)
    bar.close()
    records = pd.concat(parts, ignore_index=True)
    summary = summarize(records)
    info = {
        "config": _jsonable(dataclasses.asdict(config)),
        "model": {
            "path": str(config.model),
            "name": model_name,
            "content_hash": bundle.content_hash,
            "defense": bundle.meta.defense,
            "defense_params": bundle.meta.defense_params,
            "arch": bundle.meta.arch,
            "dataset": bundle.meta.dataset,
            "clean_accuracy_at_training": bundle.meta.clean_accuracy,
        },
        "dataset": data.name,
        "threat": {"name": threat.name, "source": threat.source, "attacks": [spec.config(data.spec.family) for spec, _ in attacks]},
        "detectors": {name: {"params": d.params(), "fit": "cached" if reused[name] else "fitted"} for name, d in detectors.items()},
        "samples": len(samples),
        "device": str(device),
        "versions": package_versions(),
        "git_revision": git_revision(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timings_seconds": {"detector_fit": round(fit_seconds, 3), **{k: round(v, 3) for k, v in timings.items()}, "total": round(time.perf_counter() - started, 3)},
    }
    if out is not None:
        write_run(out, records, summary, info)
    return RunResult(records=records, summary=summary, info=info)


def write_run(out: Path, records: pd.DataFrame, summary: pd.DataFrame, info: Mapping[str, Any]) -> None:
    """records.parquet, summary.csv and run.json, each written atomically."""
    import io

    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    records.to_parquet(buffer, index=False)
    atomic_write_bytes(out / "records.parquet", buffer.getvalue())
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "run.json", json.dumps(info, indent=2, sort_keys=True))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a fixed-width table for the terminal."""
    shown = summary.drop(columns=["model", "threat"]) if summary["model"].nunique() == 1 and summary["threat"].nunique() == 1 else summary
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


