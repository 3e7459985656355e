"""The driver: runs the plans of a run or a suite on a backend, whichever it is, and merges each plan's parts.

For every plan (:class:`robench.runs.plan.RunPlan`) the driver lays out the shared work as task
calls (:mod:`robench.runs.tasks`): one detector fit per (model, detectors, training split) for the
fits the detector cache lacks, one attacker density per (crafting model, estimator settings), one
clean pass per original batch, one sanity probe per model and probed samples. Each is submitted
once for every plan that needs it and passed to the part tasks by handle. The driver looks every
part up in the plan's part store first, submits the missing ones (the costliest first), writes
each part the moment it is back (the driver alone writes: the part store, the detector cache), and
feeds a flow its next cascade stage once its stage is complete.

The backend (:mod:`robench.runs.backend`) decides only where the tasks run: in this process, or as
Ray tasks (:mod:`robench.runs.ray_backend`). The records are the same either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from robench.checkpoints.bundle import ModelBundle
from robench.core.provenance import canonical_json, jsonable
from robench.detectors.cache import load_cached, save_cached
from robench.runs.backend import Backend
from robench.runs.density import DensitySettings, estimator
from robench.runs.knowledge import knowledge_info
from robench.runs.part_work import PartJob
from robench.runs.plan import ExecutionReport, Flow, RunPlan, RunResult
from robench.runs.tasks import (
    SANITY_PROBE_SAMPLES,
    BundleRef,
    DetectorSpec,
    PairSpec,
    clean_task,
    cpu_state,
    density_task,
    fit_task,
    knowledge_task,
    part_task,
    probe_task,
    samples_digest,
)

_PROBES: dict[tuple[Any, ...], list[Any]] = {}  # model probes already run in this process (a 100-step PGD each)
_PROBES_KEPT = 32


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(jsonable(value)).encode()).hexdigest()[:24]


def run_plans(backend: Backend, plans: list[RunPlan]) -> list[RunResult]:
    """Every plan's parts on ``backend``, all plans at once; each plan's :class:`~robench.runs.plan.RunResult`,
    in order."""
    return _Driver(backend, plans).run()


@dataclass
class _Flow:
    plan: _PlanWork
    flow: Flow
    jobs: list[PartJob] = field(default_factory=list)
    results: list[pd.DataFrame | None] = field(default_factory=list)
    left: int = 0
    parts: list[pd.DataFrame] | None = None  # the flow's parts once it ended


class _Driver:
    def __init__(self, backend: Backend, plans: list[RunPlan]) -> None:
        self.backend = backend
        self.objects: dict[
            tuple[Any, ...], Any
        ] = {}  # handles shared by every plan (models, fits, densities, clean passes, probes)
        self.pending: dict[
            Any, Callable[[Any], None]
        ] = {}  # a submitted task's handle -> what the driver does with its result
        self.fit_results: dict[str, dict[str, Any]] = {}  # detector key -> which fits were cached, the fit seconds
        self.density_results: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.knowledge_results: dict[tuple[Any, ...], dict[str, Any]] = {}  # the attacker's view of the detectors
        self.probes: dict[tuple[Any, ...], list[Any]] = {}  # probe results of this run, by probe key
        self.queued: list[tuple[float, int, _Flow, int]] = []  # parts to submit: (cost, order, flow, job index)
        if len(plans) > 1:  # one bar for every plan's parts (their own bars would overwrite each other)
            shown = any(not plan.bar.disable for plan in plans)
            bar = tqdm(
                total=sum(plan.bar.total for plan in plans),
                desc=f"{len(plans)} pairs",
                unit="part",
                disable=None if shown else True,
                leave=False,
            )
            for plan in plans:
                plan.bar.close()
                plan.bar = bar
        self.plans = [_PlanWork(self, plan) for plan in plans]

    def shared(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """The handle of ``key``, made once for every plan."""
        if key not in self.objects:
            self.objects[key] = make()
        return self.objects[key]

    def submit(
        self,
        fn: Callable[..., Any],
        args: list[Any],
        plan: _PlanWork,
        what: str,
        done: Callable[[Any], None] | None = None,
    ) -> Any:
        handle = self.backend.submit(fn, args, device=plan.plan.prepared.device, gpus=plan.gpus, what=what)
        if done is not None:
            self.pending[handle] = done
        return handle

    def run(self) -> list[RunResult]:
        flows = [_Flow(work, flow) for work in self.plans for flow in work.plan.flows()]
        for work in self.plans:
            work.start()
        for f in flows:
            self.advance(f, None)
        self.submit_queued()
        while self.pending:
            for handle in self.backend.wait(list(self.pending)):
                done = self.pending.pop(handle)
                done(self.backend.get(handle))
            self.submit_queued()
        return [
            work.plan.finish([f.parts for f in flows if f.plan is work], work.report())  # type: ignore[misc]
            for work in self.plans
        ]

    def advance(self, f: _Flow, parts: list[pd.DataFrame] | None) -> None:
        """Feed flow ``f`` its finished stage and queue the next stage's missing parts (reused parts need no task)."""
        plan = f.plan.plan
        while True:
            try:
                jobs = next(f.flow) if parts is None else f.flow.send(parts)
            except StopIteration as stop:
                f.parts = stop.value
                return
            f.jobs, f.results = jobs, [plan.reuse(job) for job in jobs]
            missing = [k for k, part in enumerate(f.results) if part is None]
            f.left = len(missing)
            if not missing:
                parts = f.results  # type: ignore[assignment]
                continue
            for k in missing:
                self.queued.append((f.plan.part_cost(jobs[k]), len(self.queued), f, k))
            return

    def submit_queued(self) -> None:
        """Submit the parts queued since the last call, the costliest first (estimated model passes x images).

        A backend that runs tasks in parallel starts them roughly in submission order, so the longest
        parts start first and the last workers to finish are not left with a long part each (the
        makespan of a greedy longest-first schedule); the order changes no record.
        """
        queued, self.queued = sorted(self.queued, key=lambda item: (-item[0], item[1])), []
        for _, _, f, k in queued:
            f.plan.submit_part(f.jobs[k], lambda out, f=f, k=k: self.finished(f, k, out))

    def finished(self, f: _Flow, k: int, out: dict[str, Any]) -> None:
        work, job = f.plan, f.jobs[k]
        plan = work.plan
        for note in out["notes"]:
            plan.echo(f"{plan.config.name}/{plan.config.threat}: {note}")
        work.work.merge(out["work"])
        work.workers.add(tuple(out["worker"]))
        work.threads.add(int(out["threads"]))
        plan.keep(job, out["part"])  # the driver alone writes, as soon as the part is back
        f.results[k] = out["part"]
        f.left -= 1
        if f.left == 0:
            self.advance(f, f.results)  # type: ignore[arg-type]


class _PlanWork:
    """One plan's shared work as task calls (shared with other plans where equal), and what its execution reports."""

    def __init__(self, driver: _Driver, plan: RunPlan) -> None:
        self.driver, self.plan = driver, plan
        prepared, config = plan.prepared, plan.config
        self.gpus = driver.backend.gpus_for(config.device)
        self.model = self._model(prepared.bundle, str(config.model))
        self.substitute = (
            self._model(prepared.substitute, str(config.substitute)) if prepared.substitute is not None else None
        )
        detector_key = _digest(
            {"model": prepared.bundle.content_hash, "train": prepared.train_name, "detectors": plan.detector_identity}
        )
        self.detectors = DetectorSpec(
            tuple(prepared.detectors),
            plan.family,
            {k: dict(v) for k, v in config.detector_settings.items()},
            detector_key,
        )
        crafting = tuple(
            self.model[0] if c is prepared.bundle else self.substitute[0]  # type: ignore[index]
            for c in plan.crafting
        )
        specs = tuple(tuple(spec for spec, _ in t.attacks) for t in prepared.threats)
        self.spec = PairSpec(
            key=_digest({"detectors": detector_key, "crafting": [c.content_hash for c in crafting],
                         "specs": [[s.config(plan.family) for s in t] for t in specs]}),
            model=self.model[0], crafting=crafting, threat_names=tuple(t.threat.name for t in prepared.threats),
            specs=specs, detectors=self.detectors, family=plan.family, seed=config.seed, precision=config.precision,
            channels_last=config.channels_last,
            model_name=config.name, substitute_name=config.crafting_name,
        )  # fmt: skip
        self.batch_of = {int(s): b for b, batch in enumerate(plan.batches) for s in batch.numpy().tolist()}
        self.density_keys: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # the plan's density key -> the driver's
        self.knowledge_key: tuple[Any, ...] | None = None  # the driver's key of the attacker's knowledge, once asked
        self.probe_key: tuple[Any, ...] | None = None
        self.work = ExecutionReport().work
        self.workers: set[tuple[str, int]] = set()
        self.threads: set[int] = set()

    def _model(self, bundle: ModelBundle, path: str) -> tuple[BundleRef, Any]:
        config, device = self.plan.config, self.plan.prepared.device
        ref = BundleRef(path, bundle.content_hash, config.channels_last, config.precision, config.compile)
        return ref, self.driver.shared(
            ("model", ref, str(device)), lambda: self.driver.backend.put_model(ref, bundle, device)
        )

    def _train(self) -> Any:
        data = self.plan.prepared.data
        return self.driver.shared(
            ("train", data.name, data.split_seed, id(data)), lambda: self.driver.backend.put(data.train)
        )

    def start(self) -> None:
        """Submit what the plan needs whatever its parts: the attacker's detector thresholds (when an attack targets
        detectors) and the sanity probes (once per model and probed samples)."""
        plan = self.plan
        # the attacker's knowledge: run.json records it even when every part is reused (computed once, shared)
        for t, threat in enumerate(plan.prepared.threats):
            for i in range(len(threat.attacks)):
                self.knowledge(t, i)
        if not plan.config.sanity:
            return
        index = plan.samples[:SANITY_PROBE_SAMPLES].numpy()
        prepared = plan.prepared
        self.probe_key = (
            prepared.bundle.content_hash,
            prepared.train_name,
            samples_digest(index),
            plan.config.seed,
            str(prepared.device),
            plan.config.name,
        )
        if self.probe_key in _PROBES:
            return
        x, y = plan.inputs(index)
        key = self.probe_key
        self.driver.shared(("probe", key), lambda: self.driver.submit(
            probe_task, [*self.model, x, y, plan.config.seed, plan.config.name], self, "sanity probes",
            lambda out: self._probed(key, out),
        ))  # fmt: skip

    def _probed(self, key: tuple[Any, ...], out: list[Any]) -> None:
        self.driver.probes[key] = out  # this run's own copy: the process cache below may evict it before the run ends
        _remember_probes(key, out)

    def fits(self) -> Any:
        """The fitted detectors' states (a handle): the detector cache's, else fitted by one task
        (the driver writes the cache)."""
        driver, prepared = self.driver, self.plan.prepared

        def make() -> Any:
            cached, reused = {}, {}
            for name, detector in prepared.detectors.items():  # prepare checked that each applies
                reused[name] = bool(
                    detector.needs_fit and load_cached(detector, prepared.bundle, prepared.device, prepared.train_name)
                )
                if reused[name]:
                    cached[name] = cpu_state(detector)
            if not any(d.needs_fit and not reused[n] for n, d in prepared.detectors.items()):
                driver.fit_results[self.detectors.key] = {"reused": reused, "seconds": 0.0}
                return driver.backend.put({"states": cached, "fitted": [], "seconds": 0.0})
            args = [*self.model, self.detectors, self._train(), cached]
            return driver.submit(fit_task, args, self, "detector fits", lambda out: self._fitted(out, reused))

        return driver.shared(("fits", self.detectors.key), make)

    def _fitted(self, out: dict[str, Any], reused: dict[str, bool]) -> None:
        prepared = self.plan.prepared
        for name in out["fitted"]:  # the driver alone writes: the detector cache next to the bundle
            detector = prepared.detectors[name]
            detector.load_fitted_state(out["states"][name], prepared.device)
            save_cached(detector, prepared.bundle, prepared.train_name)
        self.driver.fit_results[self.detectors.key] = {"reused": reused, "seconds": out["seconds"]}

    def report(self) -> ExecutionReport:
        """The plan's execution: detector fits and densities (from the tasks, or the cache when no part was computed),
        probes, where it ran."""
        prepared, driver = self.plan.prepared, self.driver
        result = driver.fit_results.get(self.detectors.key)
        if result is None:
            reused = {
                name: bool(d.needs_fit and load_cached(d, prepared.bundle, prepared.device, prepared.train_name))
                for name, d in prepared.detectors.items()
            }
            seconds = 0.0
        else:
            reused, seconds = dict(result["reused"]), float(result["seconds"])
        densities = {
            key: driver.density_results[shared]
            for key, shared in self.density_keys.items()
            if shared in driver.density_results
        }
        execution = driver.backend.execution(self.gpus)
        if (
            "ray" in execution
        ):  # which workers computed this plan's parts, and the torch threads they ran with (each task's CPUs)
            execution["ray"].update(workers=len(self.workers), worker_threads=sorted(self.threads))
        probes = list(driver.probes.get(self.probe_key, _PROBES.get(self.probe_key, []))) if self.probe_key else []
        knowledge = driver.knowledge_results.get(self.knowledge_key) if self.knowledge_key else None
        return ExecutionReport(
            knowledge=knowledge,
            work=self.work,
            reused_fit=reused,
            fit_seconds=seconds,
            densities=densities,
            probes=probes,
            execution=execution,
        )

    def density(self, t: int, i: int) -> Any | None:
        """The density handle attack ``i`` of threat ``t`` needs (None if it needs none)."""
        plan, prepared = self.plan, self.plan.prepared
        needs = prepared.threats[t].attacks[i][1].needs()
        if not needs.density:
            return None
        crafting = plan.crafting[t]
        assert crafting is not None
        key = plan.densities.key(crafting, needs)
        settings = key[1]
        own = plan.densities.is_own(crafting, settings)
        shared_key = ("density", self.detectors.key if own else "", key[0], settings, prepared.train_name)
        self.density_keys[key] = shared_key
        ref, data = self.model if crafting is prepared.bundle else self.substitute  # type: ignore[misc]

        def make() -> Any:
            cached = None
            if not own:
                kd = estimator(plan.family, settings)
                if load_cached(kd, crafting, prepared.device, prepared.train_name):
                    cached = cpu_state(kd)
            args = [
                ref,
                data,
                plan.family,
                self._train(),
                settings,
                self.detectors if own else None,
                self.fits() if own else None,
                cached,
            ]
            return self.driver.submit(
                density_task,
                args,
                self,
                "attacker density",
                lambda out: self._density_built(out, crafting, settings, shared_key),
            )

        return self.driver.shared(shared_key, make)

    def _density_built(
        self, out: dict[str, Any], crafting: ModelBundle, settings: DensitySettings, shared_key: tuple[Any, ...]
    ) -> None:
        prepared = self.plan.prepared
        if out["fit"] == "fitted":  # the driver caches the attacker's own estimator
            kd = estimator(self.plan.family, settings)
            kd.load_fitted_state(out["state"], prepared.device)
            save_cached(kd, crafting, prepared.train_name)
        self.driver.density_results[shared_key] = {
            "fit": out["fit"],
            "eta": out["eta"],
            "eta_per_class": [float(v) for v in out["eta_per_class"]],
            "width": out.get("width"),  # the kernel width in use (the selected one under bandwidth "select")
        }

    def knowledge(self, t: int, i: int) -> Any | None:
        """The handle of the attacker's knowledge of the scored detectors, if attack ``i`` of threat ``t`` targets
        detectors (None otherwise); computed once per model, detectors, training split and seed."""
        plan, prepared = self.plan, self.plan.prepared
        if prepared.threats[t].attacks[i][1].needs().detectors is None:
            return None
        key = ("knowledge", self.detectors.key, prepared.train_name, plan.config.seed)
        self.knowledge_key = key

        def make() -> Any:
            args = [*self.model, self.detectors, self.fits(), self._train(), plan.config.seed]
            return self.driver.submit(
                knowledge_task, args, self, "attacker's detector thresholds", lambda out: self._known(key, out)
            )

        return self.driver.shared(key, make)

    def _known(self, key: tuple[Any, ...], out: dict[str, Any]) -> None:
        self.driver.knowledge_results[key] = {"detectors": knowledge_info(out["knowledge"]), "seconds": out["seconds"]}

    def cleans(self, samples: np.ndarray) -> list[Any]:
        """Handles of the clean passes of the original batches that hold ``samples`` (each computed once)."""
        plan = self.plan
        handles = []
        for b in sorted({self.batch_of[int(s)] for s in np.asarray(samples).tolist()}):
            original = plan.batches[b].numpy()
            key = ("clean", self.detectors.key, self.model[0], samples_digest(original))

            def make(original: np.ndarray = original) -> Any:
                args = [*self.model, self.detectors, self.fits(), original, plan.inputs(original)[0]]
                return self.driver.submit(clean_task, args, self, "clean pass")

            handles.append(self.driver.shared(key, make))
        return handles

    def part_cost(self, job: PartJob) -> float:
        """The part's estimated model passes (:meth:`robench.attacks.base.Attack.cost` x its images):
        the submission order."""
        return float(self.plan.prepared.threats[job.threat].attacks[job.attack][1].cost()) * len(job.samples)

    def submit_part(self, job: PartJob, done: Callable[[Any], None]) -> Any:
        x, y = self.plan.inputs(job.samples)
        crafting = self.spec.crafting[job.threat]
        crafting_data = self.substitute[1] if self.substitute is not None and crafting == self.substitute[0] else None
        args = [
            self.spec,
            job,
            x,
            y,
            self.model[1],
            crafting_data,
            self.fits(),
            self.density(job.threat, job.attack),
            self.knowledge(job.threat, job.attack),
            *self.cleans(job.samples),
        ]
        return self.driver.submit(part_task, args, self, f"part {job.key[:12]}", done)


def _remember_probes(key: tuple[Any, ...], results: list[Any]) -> None:
    """Keep probe results for this process's later runs of the same model (at most :data:`_PROBES_KEPT`)."""
    _PROBES[key] = results
    while len(_PROBES) > _PROBES_KEPT:
        _PROBES.pop(next(iter(_PROBES)))
