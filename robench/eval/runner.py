"""The runner: a prepared pair (bundle + dataset + threat models) -> attacks in batches -> per-sample records -> summary.

Records are the single source of truth: ``summary.csv`` is ``metrics.summarize(records)``,
and every later table or regression check reads the records or the summary.
Each (attack, batch) draws its randomness (targets, random starts, noise) from
its own generator, seeded from the run seed, the attack's label and the batch
index, so a batch's result does not depend on which other batches or attacks ran,
nor on the process that computed it (:mod:`robench.eval.part_work`): the parts can run
here (:meth:`RunPlan.run_local`) or as Ray tasks (:mod:`robench.eval.ray_backend`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from robench.attacks.base import AttackNeeds, AttackTarget, Bounds
from robench.core.bundle import ModelBundle
from robench.core.errors import ConfigError
from robench.core.execution import as_input, use_channels_last
from robench.core.precision import FP32
from robench.core.provenance import git_revision, jsonable, package_versions
from robench.detectors import fit_or_load
from robench.eval import records as R
from robench.eval.cascade import cascade_order, flag_thresholds, still_in
from robench.eval.clean_cache import CleanCache
from robench.eval.combiner import combine, combined_detectors
from robench.eval.density import SCORED_KD, AttackerDensity, DensitySettings, attacker_density, resolve_settings, scored_settings
from robench.eval.lock import output_lock
from robench.eval.metrics import summarize
from robench.eval.output import format_summary, with_sanity_flags, write_run
from robench.eval.part_work import PartContext, PartJob, Work, compute_part, derive_seed
from robench.eval.parts import PARTS_DIR, PartStore, part_key
from robench.eval.prepare import Prepared, prepare
from robench.eval.run_config import RunConfig
from robench.eval.threat_files import threat_record

if TYPE_CHECKING:
    from robench.eval.ray_backend import RayBackend, RaySettings

__all__ = ["PARTS_DIR", "RunConfig", "RunPlan", "RunResult", "derive_seed", "format_summary", "part_key", "prepare", "run", "select_samples", "with_sanity_flags", "write_run"]


@dataclass
class RunResult:
    records: pd.DataFrame
    summary: pd.DataFrame
    info: dict[str, Any]
    sanity: pd.DataFrame = field(default_factory=pd.DataFrame)


def select_samples(n_test: int, n: int, seed: int) -> torch.Tensor:
    """The first n of a seeded permutation of the test split (all of it if n >= its size)."""
    order = torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))
    return order[: min(n, n_test)]


class _Densities:
    """The attacker-side densities of a run, one per (crafting model, estimator settings).

    :meth:`needed` lists them from the plan (every attack that needs one), so run.json and the
    ``attacker-estimator-differs`` check do not depend on which parts this call computed (a
    resumed run reuses parts); :meth:`get` builds one when a computed part first needs it.
    """

    def __init__(self, prepared: Prepared) -> None:
        self.prepared = prepared
        self.scored = scored_settings(prepared.detectors)
        self.built: dict[tuple[str, DensitySettings], AttackerDensity] = {}
        self.remote: dict[tuple[str, DensitySettings], dict[str, Any]] = {}  # built by a Ray task: eta, eta_per_class, fit
        self.used_by: dict[tuple[str, DensitySettings], list[str]] = {}
        family = prepared.data.spec.family
        for pt in prepared.threats:
            crafting = prepared.substitute if pt.threat.needs_substitute else prepared.bundle
            for spec, attack in pt.attacks:
                needs = attack.needs()
                if needs.density and crafting is not None:
                    key = (crafting.content_hash, resolve_settings(needs, self.scored, family))
                    self.used_by.setdefault(key, []).append(f"{pt.threat.name}/{spec.label}")

    def key(self, crafting: ModelBundle, needs: AttackNeeds) -> tuple[str, DensitySettings]:
        return crafting.content_hash, resolve_settings(needs, self.scored, self.prepared.data.spec.family)

    def is_own(self, crafting: ModelBundle, settings: DensitySettings) -> bool:
        """Whether the attacker's estimator is the scored KD detector itself (crafted on the evaluated model, same settings)."""
        return crafting.content_hash == self.prepared.bundle.content_hash and settings == self.scored

    def get(self, crafting: ModelBundle, needs: AttackNeeds, label: str) -> AttackerDensity | None:
        if not needs.density:
            return None
        prepared = self.prepared
        key = self.key(crafting, needs)
        if key not in self.built:
            scored = prepared.detectors[SCORED_KD] if self.is_own(crafting, key[1]) else None
            self.built[key] = attacker_density(crafting, prepared.data, key[1], prepared.device, scored, prepared.train_name)  # type: ignore[arg-type]
        return self.built[key]

    def info(self) -> list[dict[str, Any]]:
        """run.json's ``attacker_density``: each estimator's settings, eta levels and the scored detector's beside them."""
        entries = []
        for (h, k), users in self.used_by.items():
            built = self.built.get((h, k))
            remote = self.remote.get((h, k))
            if built is not None:
                fit = "scored detector" if built.is_scored else ("cached" if built.reused else "fitted")
                eta, per_class = built.eta, [float(v) for v in built.eta_per_class]
            elif remote is not None:
                fit, eta, per_class = remote["fit"], remote["eta"], remote["eta_per_class"]
            else:
                fit, eta, per_class = "not built (every part that uses it was reused)", None, None
            entries.append({
                "crafted_on": h,
                "attacks": list(users),
                "bandwidth": k.bandwidth,
                "kd_per_class": k.per_class,
                "seed": k.seed,
                "scored_kd": dataclasses.asdict(self.scored) if self.scored else None,
                "same_as_scored": self.scored == k,
                "eta": eta,
                "eta_per_class": per_class,
                "fit": fit,
            })
        return entries


def run(
    config: RunConfig,
    out: Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    prepared: Prepared | None = None,
    wait: bool = False,
    ray: RayBackend | RaySettings | None = None,
) -> RunResult:
    """Attack the model under the threat model(s) and return (and, with ``out``, write) records and summary.

    ``prepared`` (from :func:`robench.eval.prepare.prepare` of the same config) skips the
    preparation, so a suite loads and validates each pair once. With ``out``, every (threat,
    attack, batch) part of the records goes through the part store in ``out/parts/`` as soon as it
    is computed (:mod:`robench.eval.parts`): rerunning the same command reuses finished parts.
    The run holds ``out``'s lock (:mod:`robench.eval.lock`) while it writes; a second process
    writing there gets a one-line error, or waits with ``wait=True``.

    ``ray`` (a :class:`~robench.eval.ray_backend.RaySettings`, or a backend from
    :func:`robench.eval.ray_backend.connect`): the parts run as Ray tasks, the driver alone
    writes, and the records equal this process's at the tasks' thread count.
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
        return _run(config, None, progress, echo, prepared, ray)
    with output_lock(out, wait=wait):
        return _run(config, out, progress, echo, prepared, ray)


def _run(config: RunConfig, out: Path | None, progress: bool, echo: Callable[[str], None], prepared: Prepared | None, ray: RayBackend | RaySettings | None) -> RunResult:
    if prepared is None:
        prepared = prepare(config)
    elif prepared.config != config:
        raise ValueError("run() was given a prepared pair of another config")
    plan = RunPlan(config, out, prepared, progress, echo)
    if ray is not None:
        from robench.eval.ray_backend import session

        with session(ray) as backend:
            return backend.run_plans([plan])[0]
    return plan.finish(plan.run_local())


class RunPlan:
    """One prepared run laid out as parts: its samples and batches, its part store, one flow of part jobs per threat.

    A flow (:meth:`flows`) is a generator that yields the part jobs it needs next and receives
    their parts: a threat without a cascade needs all its parts at once, a cascade one stage (an
    attack on the samples still in) after the other. :meth:`run_local` computes the jobs here,
    one after the other; :class:`robench.eval.ray_backend.RayBackend` runs several plans' flows
    at once on Ray. Either way the parts are the same and :meth:`finish` merges them the same way.
    """

    def __init__(self, config: RunConfig, out: Path | None, prepared: Prepared, progress: bool, echo: Callable[[str], None]) -> None:
        self.started = time.perf_counter()
        self.config, self.out, self.prepared, self.echo = config, out, prepared, echo
        bundle, data = prepared.bundle, prepared.data
        self.family = data.spec.family
        self.bounds = Bounds(*bundle.meta.value_range)
        self.samples = select_samples(len(data.test), config.n, config.seed)
        self.batches = list(self.samples.split(config.batch_size))
        self.store = PartStore(out / PARTS_DIR if out is not None else None)
        self.densities = _Densities(prepared)
        self.work = Work()
        self.detector_identity = {name: d.params() for name, d in prepared.detectors.items()}
        self.crafting = [prepared.substitute if t.threat.needs_substitute else bundle for t in prepared.threats]
        self.channels_last = use_channels_last(config.channels_last, prepared.device, config.precision)
        self.live = [name for name in prepared.detectors if name not in combined_detectors(prepared.detectors)]  # scored during the run
        self.orders: dict[str, list[str]] = {}  # threat -> attack labels in cascade order (run.json)
        self.reused_fit: dict[str, bool] = {}
        self.fit_seconds = 0.0
        self.execution: dict[str, Any] = {"backend": "local", "threads": torch.get_num_threads()}
        total = len(self.batches) * sum(len(t.attacks) for t in prepared.threats)
        self.bar = tqdm(total=total, desc=f"{config.name}/{config.threat}", unit="part", disable=None if progress else True, leave=False)
        self._clean: CleanCache | None = None

    # -- the parts -------------------------------------------------------------------------------

    def job(self, t: int, i: int, b: int, index: torch.Tensor) -> PartJob:
        """The part job of threat ``t``'s attack ``i`` on batch ``b`` of samples ``index``, with its part-store key."""
        prepared, config = self.prepared, self.config
        spec = prepared.threats[t].attacks[i][0]
        crafting = self.crafting[t]
        assert crafting is not None
        key = part_key(
            {
                "format": R.FORMAT,
                "model": prepared.bundle.content_hash,
                "crafted_on": crafting.content_hash,
                "dataset": prepared.train_name,
                "threat": prepared.threats[t].threat.name,
                "attack": spec.config(self.family),
                "detectors": self.detector_identity,
                "seed": config.seed,
                "batch": b,
                "samples": hashlib.sha256(index.numpy().tobytes()).hexdigest(),
                **({"precision": config.precision} if config.precision != FP32 else {}),
            }
        )
        return PartJob(key=key, threat=t, attack=i, batch=b, samples=index.numpy())

    def cascade_of(self, t: int) -> str:
        pt = self.prepared.threats[t]
        chosen = self.config.cascade if self.config.cascade is not None else (pt.threat.default_cascade or R.NO_CASCADE)
        return chosen if len(pt.attacks) > 1 and pt.threat.access != "none" else R.NO_CASCADE

    def flows(self) -> list[Generator[list[PartJob], list[pd.DataFrame], list[pd.DataFrame]]]:
        """One flow of part jobs per threat, in the run's threat order."""
        return [self._flow(t) for t in range(len(self.prepared.threats))]

    def _flow(self, t: int) -> Generator[list[PartJob], list[pd.DataFrame], list[pd.DataFrame]]:
        pt = self.prepared.threats[t]
        order = cascade_order([attack for _, attack in pt.attacks])
        self.orders[pt.threat.name] = [pt.attacks[i][0].label for i in order]
        rank = {i: r for r, i in enumerate(order)}
        cascade = self.cascade_of(t)
        if cascade == R.NO_CASCADE:
            jobs = [self.job(t, i, b, index) for b, index in enumerate(self.batches) for i in range(len(pt.attacks))]
            parts = yield jobs
            return [part.assign(**{R.ORDER: rank[job.attack], R.CASCADE: cascade}) for part, job in zip(parts, jobs)]
        threat_parts: list[pd.DataFrame] = []
        thresholds: dict[str, float] | None = None
        for r, i in enumerate(order):
            chunks = self.batches
            if r > 0:  # the samples still in, re-packed into batches of the run's size
                so_far = pd.concat(threat_parts, ignore_index=True)
                thresholds = thresholds if thresholds is not None else flag_thresholds(so_far, self.live)
                keep = torch.from_numpy(still_in(so_far, self.samples.numpy(), cascade, self.live, thresholds))
                chunks = list(self.samples[keep].split(self.config.batch_size))
                self.bar.update(len(self.batches) - len(chunks))
            parts = yield [self.job(t, i, b, index) for b, index in enumerate(chunks)]
            threat_parts.extend(part.assign(**{R.ORDER: rank[i], R.CASCADE: cascade}) for part in parts)
        return threat_parts

    def reuse(self, job: PartJob) -> pd.DataFrame | None:
        """The finished part of ``job`` from the part store, or None: then it must be computed (and :meth:`keep` it)."""
        part = self.store.get(job.key, job.samples, R.SAMPLE)
        if part is not None:
            self.bar.update(1)
        return part

    def keep(self, job: PartJob, part: pd.DataFrame) -> None:
        """A computed part into the part store (the driver alone writes)."""
        self.store.put(job.key, part, job.samples)
        self.bar.update(1)

    def inputs(self, samples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The test inputs and labels of ``samples`` (on the CPU)."""
        index = torch.from_numpy(np.asarray(samples, dtype=np.int64))
        return self.prepared.data.test.x[index], self.prepared.data.test.y[index]

    # -- in this process ---------------------------------------------------------------------------

    def context(self) -> PartContext:
        prepared = self.prepared
        return PartContext(
            bundle=prepared.bundle, crafting=self.crafting, threat_names=[t.threat.name for t in prepared.threats],  # type: ignore[arg-type]
            attacks=[t.attacks for t in prepared.threats], detectors=prepared.detectors, density=self.densities.get, bounds=self.bounds,
            seed=self.config.seed, precision=self.config.precision, channels_last=self.channels_last, device=prepared.device,
            model_name=self.config.name, substitute_name=self.config.crafting_name,
        )

    def run_local(self) -> list[list[pd.DataFrame]]:
        """Fit (or load) the detectors, then compute every flow's jobs here, one after the other; each threat's parts."""
        prepared = self.prepared
        tic = time.perf_counter()
        self.reused_fit = {
            name: fit_or_load(d, prepared.bundle, prepared.data.train, prepared.device, train_name=prepared.train_name) for name, d in prepared.detectors.items()
        }
        self.fit_seconds = time.perf_counter() - tic
        device, channels_last = prepared.device, self.channels_last
        clean = CleanCache(
            prepared.bundle, prepared.detectors, [b.numpy() for b in self.batches],
            inputs=lambda samples: as_input(self.inputs(samples)[0].to(device), channels_last),
        )
        ctx = self.context()

        def resolve(job: PartJob) -> pd.DataFrame:
            part = self.reuse(job)
            if part is None:
                x, y = self.inputs(job.samples)
                part = compute_part(ctx, job, x, y, clean, self.echo, self.work)
                self.keep(job, part)
            return part

        return [drive(flow, resolve) for flow in self.flows()]

    # -- records -> summary -> files -------------------------------------------------------------

    def finish(self, threat_parts: list[list[pd.DataFrame]]) -> RunResult:
        """Merge the threats' parts into records, score, check and write (the same whatever computed the parts)."""
        config, prepared, store, echo, out = self.config, self.prepared, self.store, self.echo, self.out
        bundle, data, detectors = prepared.bundle, prepared.data, prepared.detectors
        model_name, substitute_name = config.name, config.crafting_name
        family = self.family
        work = self.work
        self.bar.close()
        if store.rejected:
            echo(f"{model_name}/{config.threat}: recomputed {len(store.rejected)} finished part(s) that did not prove to be this run's ({'; '.join(store.rejected[:3])}{'; ...' if len(store.rejected) > 3 else ''})")
        if store.reused:
            echo(f"{model_name}/{config.threat}: reused {store.reused} of {store.reused + store.computed} finished parts (threat x attack x batch) from {store.root}")
        records = pd.concat([part for parts in threat_parts for part in parts], ignore_index=True)
        combined = combined_detectors(detectors)
        if combined:  # fitted on a held-out split of each group's samples, scored on the rest
            records = combine(records, combined)
        sanity = _sanity(prepared, records, model_name, self.samples, self.bounds, self.densities.info()) if config.sanity else pd.DataFrame()
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
            "detectors": {name: {"params": d.params(), "fit": _fit_word(self.reused_fit.get(name))} for name, d in detectors.items()},
            "attacker_density": self.densities.info(),
            "samples": len(self.samples),
            "parts": {"reused": store.reused, "computed": store.computed},
            "sanity": sanity.to_dict(orient="records") if len(sanity) else [],
            "device": str(prepared.device),
            "versions": package_versions(),
            "git_revision": git_revision(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timings_seconds": {"detector_fit": round(self.fit_seconds, 3), **{k: round(v, 3) for k, v in work.seconds.items()}, "total": round(time.perf_counter() - self.started, 3)},
            # images forwarded through the crafting model by each attack (its image-steps), in the parts computed by this call
            "image_passes": dict(work.images),
            "execution": {
                "precision": config.precision,
                "cascade_order": self.orders,
                "channels_last": self.channels_last,
                "compiled": prepared.compiled,
                "out_of_memory_splits": work.splits,
                **self.execution,
            },
        }
        if len(prepared.threats) == 1:  # the one-threat layout of earlier runs
            info["threat"] = info["threats"][0]
        if out is not None:
            write_run(out, records, summary, info, sanity)
            store.prune()
        return RunResult(records=records, summary=summary, info=info, sanity=sanity)


def _fit_word(reused: bool | None) -> str:
    return "cached" if reused else ("fitted" if reused is not None else "none needed")


def drive(
    flow: Generator[list[PartJob], list[pd.DataFrame], list[pd.DataFrame]], resolve: Callable[[PartJob], pd.DataFrame]
) -> list[pd.DataFrame]:
    """Run one flow to its end, resolving its jobs one after the other; the flow's parts."""
    try:
        jobs = next(flow)
        while True:
            jobs = flow.send([resolve(job) for job in jobs])
    except StopIteration as stop:
        return stop.value


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
        "num_classes": bundle.meta.num_classes,
        "clean_accuracy_at_training": bundle.meta.clean_accuracy,
    }


SANITY_PROBE_SAMPLES = 64
_PROBES: dict[tuple[str, str, str, int, str, str], list[Any]] = {}  # model probes already run in this process (a 100-step PGD each)
_PROBES_KEPT = 32


def probe_key(prepared: Prepared, samples: torch.Tensor, model_name: str) -> tuple[str, str, str, int, str, str]:
    """What the model probes depend on: the model, the probed samples and the seed (a suite's pairs of one model share them)."""
    index = samples[:SANITY_PROBE_SAMPLES]
    return (prepared.bundle.content_hash, prepared.train_name, hashlib.sha256(index.numpy().tobytes()).hexdigest(), prepared.config.seed, str(prepared.device), model_name)


def run_probes(bundle: ModelBundle, x: torch.Tensor, y: torch.Tensor, seed: int, model_name: str) -> list[Any]:
    """The model probes of :mod:`robench.eval.sanity` on ``x``, ``y`` (a 100-step PGD; here or in a Ray worker)."""
    from robench.eval.sanity import probe_model

    target = AttackTarget(bundle.model, bundle.defense, Bounds(*bundle.meta.value_range))
    generator = torch.Generator().manual_seed(derive_seed(seed, "sanity"))
    return probe_model(target, x, y, generator=generator, objective="adaptive", model_name=model_name, threat="-")


def remember_probes(key: tuple[str, str, str, int, str, str], results: list[Any]) -> None:
    """Keep probe results for this process's later runs of the same model (at most :data:`_PROBES_KEPT`)."""
    _PROBES[key] = results
    while len(_PROBES) > _PROBES_KEPT:
        _PROBES.pop(next(iter(_PROBES)))


def _sanity(prepared: Prepared, records: pd.DataFrame, model_name: str, samples: torch.Tensor, bounds: Bounds, densities: list[dict[str, Any]]) -> pd.DataFrame:
    """Model probes on the first samples, the checks that read the records, and the attacker-estimator check (robench.eval.sanity)."""
    from robench.eval.sanity import estimator_flags, record_flags, sanity_table

    data, device = prepared.data, prepared.device
    key = probe_key(prepared, samples, model_name)
    if key not in _PROBES:
        index = samples[:SANITY_PROBE_SAMPLES]
        remember_probes(key, run_probes(prepared.bundle, data.test.x[index].to(device), data.test.y[index].to(device), prepared.config.seed, model_name))
    results = list(_PROBES[key])
    results += record_flags(records, attack_names={(t.threat.name, spec.label): spec.attack for t in prepared.threats for spec, _ in t.attacks})
    white_box = [t.threat.name for t in prepared.threats if t.threat.access == "white-box"]
    results += estimator_flags(model_name, densities, white_box)
    return sanity_table(results)
