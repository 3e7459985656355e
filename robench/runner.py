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
from robench.detectors.kd import KernelDensityDetector, features_of
from robench.devices import resolve_device
from robench.errors import ConfigError
from robench.metrics import summarize
from robench.provenance import atomic_write_bytes, atomic_write_text, canonical_json, git_revision, package_versions
from robench.threats import ALL, AttackSpec, ThreatModel, distribute, noise_threat, select_threats

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
    substitute: Path | None = None  # the black-box threat's crafting model
    substitute_name: str | None = None  # its name in records [default: the file's stem]
    sanity: bool = True  # run the model probes of robench.sanity

    def __post_init__(self) -> None:
        if self.n < 1 or self.batch_size < 1:
            raise ConfigError("--n and --batch-size must be at least 1")
        if self.sigmas and self.threat not in ("noise", ALL):
            raise ConfigError(f"--sigma applies to the noise threat, not '{self.threat}'")


@dataclass
class RunResult:
    records: pd.DataFrame
    summary: pd.DataFrame
    info: dict[str, Any]
    sanity: pd.DataFrame = field(default_factory=pd.DataFrame)


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
class PreparedThreat:
    threat: ThreatModel
    attacks: list[tuple[AttackSpec, Attack]]


@dataclass
class Prepared:
    bundle: ModelBundle
    data: Dataset
    threats: list[PreparedThreat]
    device: torch.device
    detectors: dict[str, Detector]
    substitute: ModelBundle | None = None

    @property
    def threat(self) -> ThreatModel:  # the single threat of a one-threat run
        return self.threats[0].threat

    @property
    def attacks(self) -> list[tuple[AttackSpec, Attack]]:
        return [pair for t in self.threats for pair in t.attacks]


def _check_compatible(bundle: ModelBundle, data: Dataset, what: str, path: Path) -> None:
    if tuple(data.input_shape) != tuple(bundle.meta.input_shape):
        raise ConfigError(f"{what} {path} expects inputs of shape {tuple(bundle.meta.input_shape)} but dataset '{data.name}' has {tuple(data.input_shape)}")
    if data.num_classes != bundle.meta.num_classes:
        raise ConfigError(f"{what} {path} has {bundle.meta.num_classes} classes but dataset '{data.name}' has {data.num_classes}")


def prepare(config: RunConfig) -> Prepared:
    """Load and validate everything before any attack runs (bad input fails fast, in one line)."""
    device = resolve_device(config.device)
    threats = select_threats(config.threat, substitute=config.substitute is not None)
    if config.sigmas:
        threats = [noise_threat(list(config.sigmas)) if t.name == "noise" else t for t in threats]
    threats = distribute(threats, config.settings, tuple(config.attacks))
    bundle = load_bundle(config.model, device=device)
    dataset_name = config.dataset or bundle.meta.dataset
    data = load_dataset(dataset_name, data_root=config.data_root, split_seed=bundle.meta.split_seed)
    _check_compatible(bundle, data, "model", config.model)
    substitute = None
    if config.substitute is not None:
        substitute = load_bundle(config.substitute, device=device)
        _check_compatible(substitute, data, "substitute", config.substitute)
        if tuple(substitute.meta.value_range) != tuple(bundle.meta.value_range):
            raise ConfigError(f"substitute's input range {tuple(substitute.meta.value_range)} differs from the model's {tuple(bundle.meta.value_range)}")
    family = data.spec.family
    prepared_threats = [PreparedThreat(t, [(spec, spec.build(family)) for spec in t.attacks]) for t in threats]
    names = applicable_detectors(bundle, config.detectors)
    if "kd+bu" in names:
        raise ConfigError("detector 'kd+bu' needs adversarial examples to fit its combiner; the runner does not fit it yet")
    detectors = build_detectors(names, family, config.detector_settings)
    for detector in detectors.values():
        detector.check_applicable(bundle.model, bundle.defense)
    return Prepared(bundle, data, prepared_threats, device, detectors, substitute)


@dataclass
class _AttackerDensity:
    """The KD estimator an attack such as C&W-wb descends on, and its eta (paper 001 Sec. 4.4.2)."""

    detector: KernelDensityDetector
    eta: float
    reused: bool


def _attacker_density(crafting: ModelBundle, data: Dataset, per_class: int, device: torch.device) -> _AttackerDensity:
    kd = KernelDensityDetector.for_dataset(data.spec.family, {"per_class": per_class})
    reused = fit_or_load(kd, crafting, data.train, device, train_name=f"{data.name}:{data.split_seed}")
    eta = kd.median_training_nll(features_of(crafting.model, data.train.x, device), data.train.y.to(device))
    return _AttackerDensity(kd, eta, reused)


def part_key(identity: Mapping[str, Any]) -> str:
    """The cache key of one (threat, attack, batch) part of the records."""
    return hashlib.sha256(canonical_json(_jsonable(identity)).encode()).hexdigest()[:32]


def _read_part(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - a torn or foreign file is recomputed, never trusted
        return None


def _write_part(path: Path, part: pd.DataFrame) -> None:
    import io

    buffer = io.BytesIO()
    part.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


PARTS_DIR = "parts"
RECORDS_FORMAT = 2  # bump when the records' columns or meaning change: old parts are then never reused


def run(config: RunConfig, out: Path | None = None, progress: bool = True, echo: Callable[[str], None] = print) -> RunResult:
    """Attack the model under the threat model(s) and return (and, with ``out``, write) records and summary.

    With ``out``, every (threat, attack, batch) part of the records is written to ``out/parts/`` as
    soon as it is computed, keyed by everything that determines it (model and substitute content
    hashes, dataset, threat, attack config, detector configs, seed, the batch's samples). Rerunning
    the same command reuses finished parts, so an interrupted run resumes where it stopped and a
    changed config never reuses a stale part.
    """
    started = time.perf_counter()
    prepared = prepare(config)
    bundle, data, device, detectors = prepared.bundle, prepared.data, prepared.device, prepared.detectors
    model_name = config.model_name or Path(config.model).stem
    substitute_name = (config.substitute_name or Path(config.substitute).stem) if config.substitute is not None else None
    family = data.spec.family
    train_name = f"{data.name}:{data.split_seed}"
    tic = time.perf_counter()
    reused_fit = {name: fit_or_load(d, bundle, data.train, device, train_name=train_name) for name, d in detectors.items()}
    fit_seconds = time.perf_counter() - tic
    bounds = Bounds(*bundle.meta.value_range)
    samples = select_samples(len(data.test), config.n, config.seed)
    batches = [samples[i : i + config.batch_size] for i in range(0, len(samples), config.batch_size)]
    parts_dir = out / PARTS_DIR if out is not None else None
    densities: dict[tuple[str, int], _AttackerDensity] = {}
    timings: dict[str, float] = {}
    used_keys: set[str] = set()
    parts: list[pd.DataFrame] = []
    reused_parts = computed_parts = 0
    detector_identity = {name: d.params() for name, d in detectors.items()}
    total = len(batches) * sum(len(t.attacks) for t in prepared.threats)
    bar = tqdm(total=total, desc=f"{model_name}/{config.threat}", unit="part", disable=None if progress else True, leave=False)
    clean_cache: dict[int, tuple[Forward, dict[str, np.ndarray]]] = {}
    for pt in prepared.threats:
        threat = pt.threat
        crafting = prepared.substitute if threat.needs_substitute else bundle
        assert crafting is not None
        for b, index in enumerate(batches):
            x = data.test.x[index].to(device)
            y = data.test.y[index].to(device)
            for spec, attack in pt.attacks:
                identity = {
                    "format": RECORDS_FORMAT,
                    "model": bundle.content_hash,
                    "crafted_on": crafting.content_hash,
                    "dataset": train_name,
                    "threat": threat.name,
                    "attack": spec.config(family),
                    "detectors": detector_identity,
                    "seed": config.seed,
                    "batch": b,
                    "samples": hashlib.sha256(index.numpy().tobytes()).hexdigest(),
                }
                key = part_key(identity)
                used_keys.add(key)
                path = parts_dir / f"{key}.parquet" if parts_dir is not None else None
                cached = _read_part(path) if path is not None and path.exists() else None
                if cached is not None:
                    parts.append(cached)
                    reused_parts += 1
                    bar.update(1)
                    continue
                if b not in clean_cache:
                    with torch.no_grad():
                        clean_forward = Forward.of(bundle.model, x)
                    clean_cache = {b: (clean_forward, _scores(detectors, bundle, clean_forward))}
                density = None
                if getattr(attack, "needs_density", False):
                    density_key = (crafting.content_hash, int(attack.kd_per_class))  # type: ignore[attr-defined]
                    if density_key not in densities:
                        densities[density_key] = _attacker_density(crafting, data, int(attack.kd_per_class), device)  # type: ignore[attr-defined]
                    density = densities[density_key]
                generator = torch.Generator().manual_seed(derive_seed(config.seed, spec.label, b))
                tic = time.perf_counter()
                columns = _attack_batch(
                    bundle, crafting, attack, spec, bounds, density, x, y, generator, clean_cache[b], detectors
                )
                timings[f"{threat.name}/{spec.label}"] = timings.get(f"{threat.name}/{spec.label}", 0.0) + time.perf_counter() - tic
                part = pd.DataFrame(
                    {
                        "model": model_name,
                        "threat": threat.name,
                        "attack": spec.label,
                        "corruption": attack.norm == "none",
                        "crafted_on": model_name if crafting is bundle else substitute_name,
                        "sample": index.numpy(),
                        **columns,
                    }
                )
                if path is not None:
                    _write_part(path, part)
                parts.append(part)
                computed_parts += 1
                bar.update(1)
    bar.close()
    if reused_parts:
        echo(f"{model_name}/{config.threat}: reused {reused_parts} of {reused_parts + computed_parts} finished parts (threat x attack x batch) from {parts_dir}")
    records = pd.concat(parts, ignore_index=True)
    sanity = _sanity(config, prepared, records, model_name, samples, bounds) if config.sanity else pd.DataFrame()
    summary = with_sanity_flags(summarize(records), sanity)
    info = {
        "config": _jsonable(dataclasses.asdict(config)),
        "model": _model_info(config.model, model_name, bundle),
        "substitute": _model_info(config.substitute, substitute_name, prepared.substitute) if prepared.substitute is not None else None,
        "dataset": data.name,
        "threats": [
            {"name": t.threat.name, "source": t.threat.source, "attacks": [spec.config(family) for spec, _ in t.attacks]} for t in prepared.threats
        ],
        "detectors": {name: {"params": d.params(), "fit": "cached" if reused_fit[name] else "fitted"} for name, d in detectors.items()},
        "attacker_density": [
            {"crafted_on": h, "kd_per_class": k, "eta": d.eta, "bandwidth": d.detector.bandwidth, "fit": "cached" if d.reused else "fitted"}
            for (h, k), d in densities.items()
        ],
        "samples": len(samples),
        "parts": {"reused": reused_parts, "computed": computed_parts},
        "sanity": sanity.to_dict(orient="records") if len(sanity) else [],
        "device": str(device),
        "versions": package_versions(),
        "git_revision": git_revision(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timings_seconds": {"detector_fit": round(fit_seconds, 3), **{k: round(v, 3) for k, v in timings.items()}, "total": round(time.perf_counter() - started, 3)},
    }
    if len(prepared.threats) == 1:  # the one-threat layout of earlier runs
        info["threat"] = info["threats"][0]
    if out is not None:
        write_run(out, records, summary, info, sanity)
        _prune_parts(parts_dir, used_keys)
    return RunResult(records=records, summary=summary, info=info, sanity=sanity)


def _attack_batch(
    bundle: ModelBundle,
    crafting: ModelBundle,
    attack: Attack,
    spec: AttackSpec,
    bounds: Bounds,
    density: _AttackerDensity | None,
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    clean: tuple[Forward, dict[str, np.ndarray]],
    detectors: Mapping[str, Detector],
) -> dict[str, np.ndarray]:
    """One attack on one batch, crafted on ``crafting`` and judged and scored on ``bundle``: the per-sample columns.

    Transfer (``crafting`` is not ``bundle``): success is misclassification by the target model,
    whatever target the attack aimed at on the substitute (001 Sec. 4.4.3; 004 Sec. 4.4).
    """
    clean_forward, clean_scores = clean
    target = AttackTarget(
        crafting.model,
        crafting.defense,
        bounds,
        detector=density.detector if density else None,
        detector_eta=density.eta if density else None,
    )
    if crafting is bundle:
        crafting_logits = clean_forward.logits
    else:
        with torch.no_grad():
            crafting_logits = Forward.of(crafting.model, x).logits
    targets = choose_targets(spec.target_mode, crafting_logits, y, generator)
    result = attack(target, x, y, targets, generator=generator)
    if crafting is bundle:
        adv_forward, adv_pred, success = result.forward, result.predicted, result.success
    else:
        with torch.no_grad():
            adv_forward = Forward.of(bundle.model, result.x_adv)
        adv_pred = adv_forward.predicted
        success = adv_pred != y
    adv_scores = _scores(detectors, bundle, adv_forward)
    delta = (result.x_adv - x).flatten(1).double()
    l2 = delta.norm(dim=1).cpu().numpy()
    columns = {
        "label": y.cpu().numpy(),
        "target": targets.cpu().numpy() if targets is not None else np.full(len(y), -1),
        "clean_pred": clean_forward.predicted.cpu().numpy(),
        "adv_pred": adv_pred.cpu().numpy(),
        "success": success.cpu().numpy(),
        "crafted_success": result.success.cpu().numpy(),
        "l2": l2,
        "linf": delta.abs().max(dim=1).values.cpu().numpy(),
        "distortion": l2 / np.sqrt(float(np.prod(bundle.meta.input_shape))),
    }
    for name in detectors:
        columns[f"score_clean:{name}"] = clean_scores[name]
        columns[f"score_adv:{name}"] = adv_scores[name]
    return columns


def _model_info(path: Path | None, name: str | None, bundle: ModelBundle) -> dict[str, Any]:
    return {
        "path": str(path),
        "name": name,
        "content_hash": bundle.content_hash,
        "defense": bundle.meta.defense,
        "defense_params": bundle.meta.defense_params,
        "arch": bundle.meta.arch,
        "dataset": bundle.meta.dataset,
        "feature_dim": bundle.meta.feature_dim,
        "clean_accuracy_at_training": bundle.meta.clean_accuracy,
    }


SANITY_PROBE_SAMPLES = 64


def _sanity(config: RunConfig, prepared: Prepared, records: pd.DataFrame, model_name: str, samples: torch.Tensor, bounds: Bounds) -> pd.DataFrame:
    """Model probes on the first samples plus the checks that read the records (robench.sanity)."""
    from robench.sanity import probe_model, record_flags, sanity_table

    bundle, data, device = prepared.bundle, prepared.data, prepared.device
    index = samples[:SANITY_PROBE_SAMPLES]
    x, y = data.test.x[index].to(device), data.test.y[index].to(device)
    target = AttackTarget(bundle.model, bundle.defense, bounds)
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "sanity"))
    results = probe_model(target, x, y, generator=generator, objective="adaptive", model_name=model_name, threat="-")
    results += record_flags(records)
    return sanity_table(results)


def with_sanity_flags(summary: pd.DataFrame, sanity: pd.DataFrame) -> pd.DataFrame:
    """The summary plus a ``sanity_flags`` column: the flagged checks of its model (and threat)."""
    from robench.sanity import flags_by_model_threat

    summary = summary.copy()
    if sanity is None or not len(sanity):
        summary["sanity_flags"] = ""
        return summary
    flags = flags_by_model_threat(sanity)
    def flagged(row: pd.Series) -> str:
        names = [n for key in ((row["model"], "-"), (row["model"], row["threat"])) for n in flags.get(key, "").split(",") if n]
        return ",".join(dict.fromkeys(names))
    summary["sanity_flags"] = summary.apply(flagged, axis=1) if len(summary) else ""
    return summary


def _prune_parts(parts_dir: Path | None, keep: set[str]) -> None:
    """Drop parts no longer part of this run's config (a finished run's folder holds only its own)."""
    if parts_dir is None or not parts_dir.exists():
        return
    for path in parts_dir.glob("*.parquet"):
        if path.stem not in keep:
            path.unlink(missing_ok=True)


def write_run(out: Path, records: pd.DataFrame, summary: pd.DataFrame, info: Mapping[str, Any], sanity: pd.DataFrame | None = None) -> None:
    """records.parquet, summary.csv, run.json (and sanity.csv), each written atomically."""
    import io

    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    records.to_parquet(buffer, index=False)
    atomic_write_bytes(out / "records.parquet", buffer.getvalue())
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    if sanity is not None and len(sanity):
        atomic_write_text(out / "sanity.csv", sanity.to_csv(index=False))
    atomic_write_text(out / "run.json", json.dumps(_jsonable(info), indent=2, sort_keys=True))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a fixed-width table for the terminal (sanity flags are printed separately)."""
    shown = summary.drop(columns=["sanity_flags"], errors="ignore")
    shown = shown.drop(columns=["model", "threat"]) if shown["model"].nunique() == 1 and shown["threat"].nunique() == 1 else shown
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


