"""One prepared run laid out as parts, and the merge of its parts into records, summary and files.

Records are the single source of truth: ``summary.csv`` is ``metrics.summarize(records)``,
and every later table or regression check reads the records or the summary.
Each (attack, batch) draws its randomness (targets, random starts, noise) from
its own generator, seeded from the run seed, the attack's label and the batch
index, so a batch's result does not depend on which other batches or attacks ran,
nor on the process that computed it (:mod:`robench.runs.part_work`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from robench.attacks.base import AttackNeeds, Bounds
from robench.checkpoints.bundle import ModelBundle
from robench.core.execution import use_channels_last
from robench.core.precision import FP32
from robench.core.provenance import git_revision, jsonable, package_versions
from robench.runs.density import DensitySettings, resolve_settings, scored_settings
from robench.runs.output import with_sanity_flags, write_run
from robench.runs.part_work import PartJob, Work
from robench.runs.parts import PARTS_DIR, PartStore, part_key
from robench.runs.prepare import Prepared
from robench.scoring import records as R
from robench.scoring.budgets import format_budgets
from robench.scoring.cascade import cascade_aims, cascade_order, cell_label, flag_thresholds, still_in
from robench.scoring.combiner import combine, combined_detectors
from robench.scoring.metrics import summarize
from robench.specs.run_config import RunConfig
from robench.specs.threat_files import threat_record

Flow = Generator[list[PartJob], list[pd.DataFrame], list[pd.DataFrame]]


@dataclass
class RunResult:
    records: pd.DataFrame
    summary: pd.DataFrame
    info: dict[str, Any]
    sanity: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class ExecutionReport:
    """What the driver reports of one plan's execution, for :meth:`RunPlan.finish` (run.json and the sanity checks)."""

    work: Work = field(default_factory=Work)
    reused_fit: dict[str, bool] = field(default_factory=dict)  # detector -> its fit came from the detector cache
    fit_seconds: float = 0.0
    densities: dict[tuple[str, DensitySettings], dict[str, Any]] = field(
        default_factory=dict
    )  # built by this call: fit, eta, eta_per_class
    probes: list[Any] = field(default_factory=list)  # the model probes' results (robench.runs.sanity)
    execution: dict[str, Any] = field(default_factory=dict)  # where the parts ran
    # the attacker's thresholds of the scored detectors (robench.runs.knowledge), None when no attack targets them
    knowledge: dict[str, Any] | None = None


def select_samples(n_test: int, n: int, seed: int) -> torch.Tensor:
    """The first n of a seeded permutation of the test split (all of it if n >= its size)."""
    order = torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))
    return order[: min(n, n_test)]


class DensityPlan:
    """The attacker-side densities of a run, one per (crafting model, estimator settings).

    ``used_by`` lists them from the plan (every attack that needs one), so run.json and the
    ``attacker-estimator-differs`` check do not depend on which parts this call computed (a
    resumed run reuses parts); the driver builds one (a density task) when a part first needs it.
    """

    def __init__(self, prepared: Prepared) -> None:
        self.prepared = prepared
        self.scored = scored_settings(prepared.detectors)
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
        """Whether the attacker's estimator is the scored KD detector itself (crafted on the evaluated model,
        same settings)."""
        return crafting.content_hash == self.prepared.bundle.content_hash and settings == self.scored

    def info(self, built: dict[tuple[str, DensitySettings], dict[str, Any]]) -> list[dict[str, Any]]:
        """run.json's ``attacker_density``: each estimator's settings, eta levels (of the densities ``built`` by this
        call) and the scored detector's beside them."""
        entries = []
        for (h, k), users in self.used_by.items():
            result = built.get((h, k))
            if result is not None:
                fit, eta, per_class = result["fit"], result["eta"], result["eta_per_class"]
                width = result.get("width")
            else:
                fit, eta, per_class = "not built (every part that uses it was reused)", None, None
                width = None
            entries.append(
                {
                    "crafted_on": h,
                    "attacks": list(users),
                    "bandwidth": k.bandwidth,
                    "kd_per_class": k.per_class,
                    "kd_subset": k.subset,
                    "width": width,
                    "seed": k.seed,
                    "scored_kd": dataclasses.asdict(self.scored) if self.scored else None,
                    "same_as_scored": self.scored == k,
                    "eta": eta,
                    "eta_per_class": per_class,
                    "fit": fit,
                }
            )
        return entries


class RunPlan:
    """One prepared run laid out as parts: its samples and batches, its part store, one flow of part jobs per threat.

    A flow (:meth:`flows`) is a generator that yields the part jobs it needs next and receives
    their parts: a threat without a cascade needs all its parts at once, a cascade one stage (an
    attack on the samples still in) after the other. The driver (:mod:`robench.runs.driver`) runs
    the flows of one or many plans on a backend, and :meth:`finish` merges the parts into records,
    whatever backend computed them.
    """

    def __init__(
        self, config: RunConfig, out: Path | None, prepared: Prepared, progress: bool, echo: Callable[[str], None]
    ) -> None:
        self.started = time.perf_counter()
        self.config, self.out, self.prepared, self.echo = config, out, prepared, echo
        bundle, data = prepared.bundle, prepared.data
        self.family = data.spec.family
        self.bounds = Bounds(*bundle.meta.value_range)
        self.samples = select_samples(len(data.test), config.n, config.seed)
        self.batches = list(self.samples.split(config.batch_size))
        self.store = PartStore(out / PARTS_DIR if out is not None else None)
        self.densities = DensityPlan(prepared)
        self.detector_identity = {name: d.params() for name, d in prepared.detectors.items()}
        self.crafting = [prepared.substitute if t.threat.needs_substitute else bundle for t in prepared.threats]
        self.channels_last = use_channels_last(config.channels_last, prepared.device, config.precision)
        self.live = [
            name for name in prepared.detectors if name not in combined_detectors(prepared.detectors)
        ]  # scored during the run
        self.orders: dict[str, list[str]] = {}  # threat -> attack labels in cascade order (run.json)
        # threat -> attack label -> the worst-case cells a cascade runs it for (run.json; cascaded threats only)
        self.aims: dict[str, dict[str, list[str]]] = {}
        # per threat: the budgets its worst case is stated at (robench.specs.budgets), carried by every record
        self.budgets = [t.threat.budgets_for(self.family, config.budgets) for t in prepared.threats]
        total = len(self.batches) * sum(len(t.attacks) for t in prepared.threats)
        self.bar = tqdm(
            total=total,
            desc=f"{config.name}/{config.threat}",
            unit="part",
            disable=None if progress else True,
            leave=False,
        )

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
                # the names the records carry: a part of another name (the same bytes, renamed) is not this run's
                "names": [config.name, config.crafting_name],
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

    def flows(self) -> list[Flow]:
        """One flow of part jobs per threat, in the run's threat order."""
        return [self._flow(t) for t in range(len(self.prepared.threats))]

    def _flow(self, t: int) -> Flow:
        pt = self.prepared.threats[t]
        order = cascade_order([attack for _, attack in pt.attacks])
        self.orders[pt.threat.name] = [pt.attacks[i][0].label for i in order]
        rank = {i: r for r, i in enumerate(order)}
        cascade = self.cascade_of(t)
        budgets = format_budgets(self.budgets[t])
        if cascade == R.NO_CASCADE:
            jobs = [self.job(t, i, b, index) for b, index in enumerate(self.batches) for i in range(len(pt.attacks))]
            parts = yield jobs
            return [
                part.assign(**{R.ORDER: rank[job.attack], R.CASCADE: cascade, R.BUDGETS: budgets})
                for part, job in zip(parts, jobs)
            ]
        # a transfer threat's attacks know the substitute's detectors, not the evaluated model's: none counts
        known = [] if pt.threat.needs_substitute else list(self.prepared.detectors)
        aims = cascade_aims([attack for _, attack in pt.attacks], cascade, self.budgets[t], self.live, known)
        self.aims[pt.threat.name] = {
            pt.attacks[i][0].label: [cell_label(c) for c in aims[i].cells]
            + [f"{d} (every sample)" for d in aims[i].untracked]
            for i in order[1:]
        }
        threat_parts: list[pd.DataFrame] = []
        thresholds: dict[str, float] | None = None
        for r, i in enumerate(order):
            chunks = self.batches
            if r > 0:  # the samples still in for this attack's cells, re-packed into batches of the run's size
                so_far = pd.concat(threat_parts, ignore_index=True)
                thresholds = thresholds if thresholds is not None else flag_thresholds(so_far, self.live)
                keep = torch.from_numpy(still_in(so_far, self.samples.numpy(), aims[i], thresholds))
                chunks = [
                    c for c in self.samples[keep].split(self.config.batch_size) if len(c)
                ]  # none when no sample is left
                self.bar.update(len(self.batches) - len(chunks))
            parts = yield [self.job(t, i, b, index) for b, index in enumerate(chunks)]
            threat_parts.extend(
                part.assign(**{R.ORDER: rank[i], R.CASCADE: cascade, R.BUDGETS: budgets}) for part in parts
            )
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

    # -- records -> summary -> files -------------------------------------------------------------

    def finish(self, threat_parts: list[list[pd.DataFrame]], report: ExecutionReport) -> RunResult:
        """Merge the threats' parts into records, score, check and write
        (the same whatever backend computed the parts)."""
        config, prepared, store, echo, out = self.config, self.prepared, self.store, self.echo, self.out
        bundle, data, detectors = prepared.bundle, prepared.data, prepared.detectors
        model_name, substitute_name = config.name, config.crafting_name
        family = self.family
        work = report.work
        self.bar.close()
        if store.rejected:
            echo(
                f"{model_name}/{config.threat}: recomputed {len(store.rejected)} finished part(s) that did not prove "
                f"to be this run's ({'; '.join(store.rejected[:3])}{'; ...' if len(store.rejected) > 3 else ''})"
            )
        if store.reused:
            echo(
                f"{model_name}/{config.threat}: reused {store.reused} of {store.reused + store.computed} "
                f"finished parts (threat x attack x batch) from {store.root}"
            )
        records = pd.concat([part for parts in threat_parts for part in parts], ignore_index=True)
        combined = combined_detectors(detectors)
        if combined:  # fitted on a held-out split of each group's samples, scored on the rest
            records = combine(records, combined)
        # --no-sanity skips the probes (model passes) only: the checks that read the records cost nothing, and a
        # detector-aware figure must carry its flag however the run was called (a suite runs them always too)
        probes = report.probes if config.sanity else []
        sanity = _sanity(prepared, records, model_name, probes, self.densities.info(report.densities))
        summary = with_sanity_flags(summarize(records), sanity)
        info = {
            "config": jsonable(dataclasses.asdict(config)),
            "model": _model_info(config.model, model_name, bundle),
            "substitute": _model_info(config.substitute, substitute_name, prepared.substitute)
            if prepared.substitute is not None
            else None,
            "dataset": data.name,
            "threats": [
                # what the attacker knows, the threat's defaults and, for a TOML-defined threat, its file and SHA-256
                {
                    **threat_record(t.threat),
                    "attacks": [spec.config(family) for spec, _ in t.attacks],
                    "run_budgets": [b.spec for b in budgets],  # the budgets its worst case is stated at
                }
                for t, budgets in zip(prepared.threats, self.budgets)
            ],
            "detectors": {
                name: {"params": d.params(), "fit": _fit_word(report.reused_fit.get(name)), "fitted": d.fitted_info()}
                for name, d in detectors.items()
            },
            "attacker_density": self.densities.info(report.densities),
            "attacker_detectors": report.knowledge,
            "samples": len(self.samples),
            "parts": {"reused": store.reused, "computed": store.computed},
            "sanity": sanity.to_dict(orient="records") if len(sanity) else [],
            "device": str(prepared.device),
            "versions": package_versions(),
            "git_revision": git_revision(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timings_seconds": {
                "detector_fit": round(report.fit_seconds, 3),
                **{k: round(v, 3) for k, v in work.seconds.items()},
                "total": round(time.perf_counter() - self.started, 3),
            },
            # images forwarded through the crafting model by each attack (its image-steps),
            # in the parts computed by this call
            "image_passes": dict(work.images),
            "execution": {
                "precision": config.precision,
                "cascade_order": self.orders,
                "cascade_aims": self.aims,
                "channels_last": self.channels_last,
                "compiled": prepared.compiled,
                "out_of_memory_splits": work.splits,
                **report.execution,
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


def _sanity(
    prepared: Prepared, records: pd.DataFrame, model_name: str, probes: list[Any], densities: list[dict[str, Any]]
) -> pd.DataFrame:
    """The model probes (run by the driver), the checks that read the records, and the attacker-estimator check
    (robench.runs.sanity)."""
    from robench.runs.record_checks import record_check_results
    from robench.runs.sanity import estimator_flags, sanity_table

    names = {(t.threat.name, spec.label): spec.attack for t in prepared.threats for spec, _ in t.attacks}
    results = list(probes) + record_check_results(records, names)
    white_box = [t.threat.name for t in prepared.threats if t.threat.access == "white-box"]
    results += estimator_flags(model_name, densities, white_box)
    return sanity_table(results)
