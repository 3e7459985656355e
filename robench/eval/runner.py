"""The runner: a prepared pair (bundle + dataset + threat models) -> attacks in batches -> per-sample records -> summary.

Records are the single source of truth: ``summary.csv`` is ``metrics.summarize(records)``,
and every later table or regression check reads the records or the summary.
Each (attack, batch) draws its randomness (targets, random starts, noise) from
its own generator, seeded from the run seed, the attack's label and the batch
index, so a batch's result does not depend on which other batches or attacks ran.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from robench.attacks.base import AttackNeeds, AttackTarget, Bounds
from robench.core.bundle import ModelBundle
from robench.core.errors import ConfigError
from robench.core.provenance import git_revision, jsonable, package_versions
from robench.detectors import fit_or_load
from robench.eval import records as R
from robench.core.execution import as_input, is_out_of_memory, use_channels_last
from robench.core.precision import FP32
from robench.eval.attack_batch import BatchResult, attack_batch
from robench.eval.cascade import cascade_order, flag_thresholds, still_in
from robench.eval.clean_cache import CleanCache
from robench.eval.combiner import combine, combined_detectors
from robench.eval.density import SCORED_KD, AttackerDensity, DensitySettings, attacker_density, resolve_settings, scored_settings
from robench.eval.lock import output_lock
from robench.eval.metrics import summarize
from robench.eval.output import format_summary, with_sanity_flags, write_run
from robench.eval.parts import PARTS_DIR, PartStore, part_key
from robench.eval.prepare import Prepared, prepare
from robench.eval.run_config import RunConfig
from robench.eval.threat_files import threat_record

__all__ = ["PARTS_DIR", "RunConfig", "RunResult", "derive_seed", "format_summary", "part_key", "prepare", "run", "select_samples", "with_sanity_flags", "write_run"]


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


class _Densities:
    """The attacker-side densities of a run, built once per (crafting model, estimator settings)."""

    def __init__(self, prepared: Prepared) -> None:
        self.prepared = prepared
        self.scored = scored_settings(prepared.detectors)
        self.built: dict[tuple[str, DensitySettings], AttackerDensity] = {}
        self.used_by: dict[tuple[str, DensitySettings], list[str]] = {}

    def get(self, crafting: ModelBundle, needs: AttackNeeds, label: str) -> AttackerDensity | None:
        if not needs.density:
            return None
        prepared = self.prepared
        settings = resolve_settings(needs, self.scored, prepared.data.spec.family)
        key = (crafting.content_hash, settings)
        if key not in self.built:
            own = crafting is prepared.bundle and settings == self.scored
            scored = prepared.detectors[SCORED_KD] if own else None
            self.built[key] = attacker_density(crafting, prepared.data, settings, prepared.device, scored, prepared.train_name)  # type: ignore[arg-type]
        users = self.used_by.setdefault(key, [])
        if label not in users:
            users.append(label)
        return self.built[key]

    def info(self) -> list[dict[str, Any]]:
        """run.json's ``attacker_density``: each estimator's settings, eta levels and the scored detector's beside them."""
        return [
            {
                "crafted_on": h,
                "attacks": self.used_by.get((h, k), []),
                "bandwidth": k.bandwidth,
                "kd_per_class": k.per_class,
                "seed": k.seed,
                "scored_kd": dataclasses.asdict(self.scored) if self.scored else None,
                "same_as_scored": self.scored == k,
                "eta": d.eta,
                "eta_per_class": [float(v) for v in d.eta_per_class],
                "fit": "scored detector" if d.is_scored else ("cached" if d.reused else "fitted"),
            }
            for (h, k), d in self.built.items()
        ]


def run(
    config: RunConfig,
    out: Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    prepared: Prepared | None = None,
    wait: bool = False,
) -> RunResult:
    """Attack the model under the threat model(s) and return (and, with ``out``, write) records and summary.

    ``prepared`` (from :func:`robench.eval.prepare.prepare` of the same config) skips the
    preparation, so a suite loads and validates each pair once. With ``out``, every (threat,
    attack, batch) part of the records goes through the part store in ``out/parts/`` as soon as it
    is computed (:mod:`robench.eval.parts`): rerunning the same command reuses finished parts.
    The run holds ``out``'s lock (:mod:`robench.eval.lock`) while it writes; a second process
    writing there gets a one-line error, or waits with ``wait=True``.
    """
    if not isinstance(config, RunConfig):
        raise ConfigError(f"run() takes a RunConfig (robench.RunConfig(model=..., threat=...)), got {type(config).__name__}")
    if out is not None and not isinstance(out, (str, Path)):
        raise ConfigError(f"run()'s out must be a folder path (str or Path), got {type(out).__name__}")
    if prepared is not None and not isinstance(prepared, Prepared):
        raise ConfigError(f"run()'s prepared must come from robench.eval.prepare.prepare, got {type(prepared).__name__}")
    if out is not None:
        out = Path(out)
    if out is None:
        return _run(config, None, progress, echo, prepared)
    with output_lock(out, wait=wait):
        return _run(config, out, progress, echo, prepared)


def _run(config: RunConfig, out: Path | None, progress: bool, echo: Callable[[str], None], prepared: Prepared | None) -> RunResult:
    started = time.perf_counter()
    if prepared is None:
        prepared = prepare(config)
    elif prepared.config != config:
        raise ValueError("run() was given a prepared pair of another config")
    bundle, data, device, detectors = prepared.bundle, prepared.data, prepared.device, prepared.detectors
    model_name, substitute_name = config.name, config.crafting_name
    family = data.spec.family
    tic = time.perf_counter()
    reused_fit = {name: fit_or_load(d, bundle, data.train, device, train_name=prepared.train_name) for name, d in detectors.items()}
    fit_seconds = time.perf_counter() - tic
    bounds = Bounds(*bundle.meta.value_range)
    samples = select_samples(len(data.test), config.n, config.seed)
    batches = list(samples.split(config.batch_size))
    store = PartStore(out / PARTS_DIR if out is not None else None)
    densities = _Densities(prepared)
    work = _Work()
    parts: list[pd.DataFrame] = []
    detector_identity = {name: d.params() for name, d in detectors.items()}
    total = len(batches) * sum(len(t.attacks) for t in prepared.threats)
    bar = tqdm(total=total, desc=f"{model_name}/{config.threat}", unit="part", disable=None if progress else True, leave=False)
    clean = CleanCache(bundle, detectors)
    channels_last = use_channels_last(config.channels_last, device, config.precision)
    live = [name for name in detectors if name not in combined_detectors(detectors)]  # scored during the run
    orders: dict[str, list[str]] = {}  # threat -> attack labels in cascade order (run.json)
    for pt in prepared.threats:
        threat = pt.threat
        crafting = prepared.substitute if threat.needs_substitute else bundle
        assert crafting is not None
        order = cascade_order([attack for _, attack in pt.attacks])
        orders[threat.name] = [pt.attacks[i][0].label for i in order]
        rank = {i: r for r, i in enumerate(order)}
        chosen = config.cascade if config.cascade is not None else (threat.default_cascade or R.NO_CASCADE)
        cascade = chosen if len(pt.attacks) > 1 and threat.access != "none" else R.NO_CASCADE

        def one(i: int, b: int, index: torch.Tensor) -> pd.DataFrame:
            spec, attack = pt.attacks[i]
            key = part_key(
                {
                    "format": R.FORMAT,
                    "model": bundle.content_hash,
                    "crafted_on": crafting.content_hash,
                    "dataset": prepared.train_name,
                    "threat": threat.name,
                    "attack": spec.config(family),
                    "detectors": detector_identity,
                    "seed": config.seed,
                    "batch": b,
                    "samples": hashlib.sha256(index.numpy().tobytes()).hexdigest(),
                    **({"precision": config.precision} if config.precision != FP32 else {}),
                }
            )
            part = store.get(key, index.numpy(), R.SAMPLE)
            if part is None:
                x = as_input(data.test.x[index].to(device), channels_last)
                y = data.test.y[index].to(device)
                label = f"{threat.name}/{spec.label}"
                tic = time.perf_counter()
                result = _attack_splitting(
                    lambda x_, y_, index_, seeds: attack_batch(
                        bundle, crafting, attack, spec, bounds, densities.get(crafting, attack.needs(), label), x_, y_,
                        torch.Generator().manual_seed(derive_seed(config.seed, spec.label, b, *seeds)), clean.batch(index_.numpy(), x_), detectors,
                        torch.Generator().manual_seed(derive_seed(config.seed, spec.label, b, *seeds, "noisy")), config.precision,
                    ),
                    x, y, index, (), echo, work,
                )
                work.add(label, time.perf_counter() - tic, result.images)
                part = R.part(
                    model=model_name,
                    threat=threat.name,
                    attack=spec.label,
                    corruption=attack.norm == "none",
                    crafted_on=model_name if crafting is bundle else substitute_name,
                    samples=index.numpy(),
                    columns=result.columns,
                    scores_clean=result.scores_clean,
                    scores_adv=result.scores_adv,
                )
                if result.raw:
                    part = part.assign(**result.raw)
                store.put(key, part, index.numpy())
            bar.update(1)
            return part.assign(**{R.ORDER: rank[i], R.CASCADE: cascade})

        if cascade == R.NO_CASCADE:
            for b, index in enumerate(batches):
                for i in range(len(pt.attacks)):
                    parts.append(one(i, b, index))
            continue
        threat_parts: list[pd.DataFrame] = []
        thresholds: dict[str, float] | None = None
        for r, i in enumerate(order):
            chunks = batches
            if r > 0:  # the samples still in, re-packed into batches of the run's size
                so_far = pd.concat(threat_parts, ignore_index=True)
                thresholds = thresholds if thresholds is not None else flag_thresholds(so_far, live)
                keep = torch.from_numpy(still_in(so_far, samples.numpy(), cascade, live, thresholds))
                active = samples[keep]
                chunks = list(active.split(config.batch_size))
                bar.update(len(batches) - len(chunks))
            for b, index in enumerate(chunks):
                threat_parts.append(one(i, b, index))
        parts.extend(threat_parts)
    bar.close()
    if store.rejected:
        echo(f"{model_name}/{config.threat}: recomputed {len(store.rejected)} finished part(s) that did not prove to be this run's ({'; '.join(store.rejected[:3])}{'; ...' if len(store.rejected) > 3 else ''})")
    if store.reused:
        echo(f"{model_name}/{config.threat}: reused {store.reused} of {store.reused + store.computed} finished parts (threat x attack x batch) from {store.root}")
    records = pd.concat(parts, ignore_index=True)
    combined = combined_detectors(detectors)
    if combined:  # fitted on a held-out split of each group's samples, scored on the rest
        records = combine(records, combined)
    sanity = _sanity(prepared, records, model_name, samples, bounds, densities.info()) if config.sanity else pd.DataFrame()
    summary = with_sanity_flags(summarize(records), sanity)
    info = {
        "config": jsonable(dataclasses.asdict(config)),
        "model": _model_info(config.model, model_name, bundle),
        "substitute": _model_info(config.substitute, substitute_name, prepared.substitute) if prepared.substitute is not None else None,
        "dataset": data.name,
        "threats": [
            # what the attacker knows, the threat's defaults and, for a TOML-defined threat, its file and SHA-256
            {**threat_record(t.threat), "attacks": [spec.config(family) for spec, _ in t.attacks]} for t in prepared.threats
        ],
        "detectors": {name: {"params": d.params(), "fit": "cached" if reused_fit[name] else "fitted"} for name, d in detectors.items()},
        "attacker_density": densities.info(),
        "samples": len(samples),
        "parts": {"reused": store.reused, "computed": store.computed},
        "sanity": sanity.to_dict(orient="records") if len(sanity) else [],
        "device": str(device),
        "versions": package_versions(),
        "git_revision": git_revision(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timings_seconds": {"detector_fit": round(fit_seconds, 3), **{k: round(v, 3) for k, v in work.seconds.items()}, "total": round(time.perf_counter() - started, 3)},
        # images forwarded through the crafting model by each attack (its image-steps), in the parts computed by this call
        "image_passes": dict(work.images),
        "execution": {
            "precision": config.precision,
            "cascade_order": orders,
            "channels_last": channels_last,
            "compiled": prepared.compiled,
            "threads": torch.get_num_threads(),
            "out_of_memory_splits": work.splits,
        },
    }
    if len(prepared.threats) == 1:  # the one-threat layout of earlier runs
        info["threat"] = info["threats"][0]
    if out is not None:
        write_run(out, records, summary, info, sanity)
        store.prune()
    return RunResult(records=records, summary=summary, info=info, sanity=sanity)


@dataclass
class _Work:
    """Seconds and image passes per attack label, and how often a batch was split after running out of memory."""

    seconds: dict[str, float] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    splits: int = 0

    def add(self, label: str, seconds: float, images: int) -> None:
        self.seconds[label] = self.seconds.get(label, 0.0) + seconds
        self.images[label] = self.images.get(label, 0) + images


def _attack_splitting(
    attack: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, tuple[object, ...]], BatchResult],
    x: torch.Tensor,
    y: torch.Tensor,
    index: torch.Tensor,
    seeds: tuple[object, ...],
    echo: Callable[[str], None],
    work: _Work,
) -> BatchResult:
    """``attack(x, y, index, seeds)``; on an out-of-memory error, the two halves one after the other (recursively).

    Each half draws from generators seeded with the half's place (``seeds``), so a split batch's
    result depends only on where the split fell; the first split of a run is logged once.
    """
    try:
        return attack(x, y, index, seeds)
    except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
        if not is_out_of_memory(exc):
            raise
        if len(index) <= 1:
            raise ConfigError(f"out of memory attacking a single input on {x.device}: use a smaller model or another device") from None
    if x.device.type == "cuda":
        torch.cuda.empty_cache()
    if work.splits == 0:
        echo(f"note: out of memory on a batch of {len(index)} on {x.device}: halving the batch and retrying (logged once; run.json counts the splits)")
    work.splits += 1
    half = len(index) // 2
    return BatchResult.joined(
        [
            _attack_splitting(attack, x[:half], y[:half], index[:half], (*seeds, "half0"), echo, work),
            _attack_splitting(attack, x[half:], y[half:], index[half:], (*seeds, "half1"), echo, work),
        ]
    )


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
_PROBES: dict[tuple[str, str, str, int, str, str], list[Any]] = {}  # model probes already run in this process (a 100-step PGD each)
_PROBES_KEPT = 32


def _sanity(prepared: Prepared, records: pd.DataFrame, model_name: str, samples: torch.Tensor, bounds: Bounds, densities: list[dict[str, Any]]) -> pd.DataFrame:
    """Model probes on the first samples, the checks that read the records, and the attacker-estimator check (robench.eval.sanity)."""
    from robench.eval.sanity import estimator_flags, probe_model, record_flags, sanity_table

    bundle, data, device = prepared.bundle, prepared.data, prepared.device
    index = samples[:SANITY_PROBE_SAMPLES]
    x, y = data.test.x[index].to(device), data.test.y[index].to(device)
    # The probes depend only on the model, the probed samples and the seed: a suite's pairs of one model share them.
    key = (bundle.content_hash, prepared.train_name, hashlib.sha256(index.numpy().tobytes()).hexdigest(), prepared.config.seed, str(device), model_name)
    if key not in _PROBES:
        target = AttackTarget(bundle.model, bundle.defense, bounds)
        generator = torch.Generator().manual_seed(derive_seed(prepared.config.seed, "sanity"))
        _PROBES[key] = probe_model(target, x, y, generator=generator, objective="adaptive", model_name=model_name, threat="-")
        while len(_PROBES) > _PROBES_KEPT:
            _PROBES.pop(next(iter(_PROBES)))
    results = list(_PROBES[key])
    results += record_flags(records, attack_names={(t.threat.name, spec.label): spec.attack for t in prepared.threats for spec, _ in t.attacks})
    white_box = [t.threat.name for t in prepared.threats if t.threat.access == "white-box"]
    results += estimator_flags(model_name, densities, white_box)
    return sanity_table(results)
