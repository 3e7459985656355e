"""The task functions of a run: every piece of work, with explicit inputs and outputs, run by any backend.

A run (:class:`robench.runs.plan.RunPlan`) needs, besides its parts, some shared work per model:
the detectors' fits (:func:`fit_task`), the attacker's density for C&W-wb (:func:`density_task`),
the clean pass of each original batch (:func:`clean_task`) and the sanity probes
(:func:`probe_task`). Each part (one attack of one threat on one batch) is :func:`part_task`.
The driver (:mod:`robench.runs.driver`) hands these functions and their inputs to a backend
(:mod:`robench.runs.backend`): the local backend calls them in this process, the Ray backend
(:mod:`robench.runs.ray_backend`) runs the same functions as Ray tasks. A task's first argument is
its :class:`TaskEnv` (the device it runs on), given by the backend.

Inputs that are the same for many tasks (a model, its detectors, the attacks) are rebuilt once
per process from what determines them (:func:`once`); the local backend hands its own process the
models it has already loaded (:func:`adopt_bundle`), so nothing is loaded twice there.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robench.attacks.base import AttackNeeds, AttackTarget, Bounds
from robench.attacks.detector_terms import KnownDetector
from robench.checkpoints.bundle import ModelBundle, load_bundle
from robench.core.errors import ConfigError
from robench.core.execution import as_input, to_memory_format, try_compile, use_channels_last
from robench.detectors import Detector
from robench.detectors.kd import features_of
from robench.runs.attack_batch import CleanBatch
from robench.runs.clean_cache import CleanCache, clean_batch_on, compute_clean
from robench.runs.density import (
    SCORED_KD,
    AttackerDensity,
    DensitySettings,
    estimator,
    resolve_settings,
    scored_settings,
)
from robench.runs.detection import build_detectors
from robench.runs.knowledge import attacker_knowledge, known_detectors
from robench.runs.part_work import PartContext, PartJob, Work, compute_part, derive_seed
from robench.specs.threats import AttackSpec

SANITY_PROBE_SAMPLES = 64


@dataclass(frozen=True)
class TaskEnv:
    """Where a task runs: its device (the run's, or the GPU a Ray worker was given)."""

    device: torch.device


@dataclass(frozen=True)
class BundleRef:
    """A checkpoint: its path (for messages and to load it), the content hash it must have, and how it runs."""

    path: str
    content_hash: str
    channels_last: str = "auto"
    precision: str = "fp32"
    compile: bool = False


@dataclass(frozen=True)
class DetectorSpec:
    """The run's detectors, rebuilt the same way in every process."""

    names: tuple[str, ...]
    family: str
    settings: dict[str, dict[str, Any]]
    key: str  # hashes the detectors' configs, the model and the training split: what the fitted states belong to


@dataclass(frozen=True)
class PairSpec:
    """What a part task needs, besides its other inputs, to compute a run's parts."""

    key: str
    model: BundleRef
    crafting: tuple[BundleRef, ...]  # per threat
    threat_names: tuple[str, ...]
    specs: tuple[
        tuple[AttackSpec, ...], ...
    ]  # per threat: the attacks, rebuilt per process (library attacks are made per process)
    detectors: DetectorSpec
    family: str
    seed: int
    precision: str
    channels_last: str
    model_name: str
    substitute_name: str | None


# ------------------------------------------------------------------------------------------- built once per process

_BUILT: dict[
    tuple[Any, ...], Any
] = {}  # this process's models, detectors, densities and attacks, by what determines them
_BUILT_KEPT = 64


def once(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """``build()`` the first time ``key`` is asked for in this process (the last :data:`_BUILT_KEPT` kept)."""
    if key not in _BUILT:
        _BUILT[key] = build()
        while len(_BUILT) > _BUILT_KEPT:
            _BUILT.pop(next(iter(_BUILT)))
    return _BUILT[key]


def _bundle_key(ref: BundleRef, device: torch.device) -> tuple[Any, ...]:
    return ("bundle", ref, str(device))


_ADOPTED: dict[tuple[Any, ...], ModelBundle] = {}  # bundles the local backend lends its tasks (never evicted mid-run)


def adopt_bundle(ref: BundleRef, device: torch.device, bundle: ModelBundle) -> None:
    """This process holds ``bundle`` already (prepared, in its memory format, compiled): tasks here use it as it is."""
    _ADOPTED[_bundle_key(ref, device)] = bundle


def forget() -> None:
    """Drop everything this process built or was lent for tasks (the local backend, when its run ends)."""
    _ADOPTED.clear()
    _BUILT.clear()


def bundle_of(ref: BundleRef, data: bytes | None, device: torch.device) -> ModelBundle:
    """The checkpoint (from its bytes, or its file), in the memory format and compiled as the run asks (as prepare
    does)."""

    adopted = _ADOPTED.get(_bundle_key(ref, device))
    if adopted is not None:
        return adopted

    def build() -> ModelBundle:
        bundle = load_bundle(ref.path, device=device, data=data)  # the same weights_only load and checks as any bundle
        if bundle.content_hash != ref.content_hash:
            raise ConfigError(
                f"{ref.path}: the model's bytes give content hash {bundle.content_hash[:12]}, "
                f"not {ref.content_hash[:12]}"
            )
        if use_channels_last(ref.channels_last, device, ref.precision):
            to_memory_format(bundle.model, True)
        if ref.compile:
            try_compile(bundle.model, torch.zeros(2, *bundle.meta.input_shape, device=device), lambda _note: None)
        return bundle

    return once(_bundle_key(ref, device), build)


def detectors_of(
    spec: DetectorSpec, bundle: ModelBundle, states: dict[str, dict[str, torch.Tensor]], device: torch.device
) -> dict[str, Detector]:
    """The run's detectors with their fitted states (once per process)."""

    def build() -> dict[str, Detector]:
        detectors = build_detectors(spec.names, spec.family, spec.settings)
        for name, detector in detectors.items():
            detector.check_applicable(bundle.model, bundle.defense)
            if name in states:
                detector.load_fitted_state(states[name], device)
        return detectors

    return once(("detectors", spec.key, str(device)), build)


def cpu_state(detector: Detector) -> dict[str, torch.Tensor]:
    """A fitted detector's state on the CPU (to travel, and for the detector cache)."""
    return {k: v.detach().cpu() for k, v in detector.fitted_state().items()}


# ------------------------------------------------------------------------------------------- the tasks


def fit_task(
    env: TaskEnv,
    ref: BundleRef,
    data: bytes | None,
    spec: DetectorSpec,
    train: Any,
    cached: dict[str, dict[str, torch.Tensor]],
) -> dict[str, Any]:
    """Fit the detectors not in ``cached`` (fitted states by name); every fitted state, the names fitted here and the
    seconds."""
    bundle = bundle_of(ref, data, env.device)
    tic = time.perf_counter()
    states, fitted = dict(cached), []
    for name, detector in build_detectors(spec.names, spec.family, spec.settings).items():
        detector.check_applicable(bundle.model, bundle.defense)
        if detector.needs_fit and name not in states:
            detector.fit(bundle.model, bundle.defense, train, env.device)
            states[name] = cpu_state(detector)
            fitted.append(name)
    return {"states": states, "fitted": fitted, "seconds": time.perf_counter() - tic}


def density_task(
    env: TaskEnv, ref: BundleRef, data: bytes | None, family: str, train: Any, settings: DensitySettings,
    scored: DetectorSpec | None, fits: dict[str, Any] | None, cached: dict[str, torch.Tensor] | None,
) -> dict[str, Any]:  # fmt: skip
    """The attacker density of ``settings`` on the crafting model: its fitted state, eta levels and where the fit
    came from.

    ``scored``: the density is the scored KD detector itself (its fit ``fits`` from :func:`fit_task`);
    ``cached``: the estimator's fit from the detector cache; else it is fitted here.
    """
    crafting = bundle_of(ref, data, env.device)
    if scored is not None:
        assert fits is not None
        kd = detectors_of(scored, crafting, fits["states"], env.device)[SCORED_KD]
        fit, state = "scored detector", None
    else:
        kd = estimator(family, settings)
        if cached is not None:
            kd.load_fitted_state(cached, env.device)
        else:
            kd.fit(crafting.model, crafting.defense, train, env.device)
        fit, state = ("cached" if cached is not None else "fitted"), cpu_state(kd)
    eta, per_class = kd.training_medians(  # type: ignore[union-attr]
        features_of(crafting.model, train.x, env.device), train.y.to(env.device)
    )
    width = kd.width  # type: ignore[union-attr]
    return {"state": state, "eta": eta, "eta_per_class": per_class.detach().cpu(), "fit": fit, "width": width}


def knowledge_task(
    env: TaskEnv, ref: BundleRef, data: bytes | None, spec: DetectorSpec, fits: dict[str, Any], train: Any,
    seed: int,
) -> dict[str, Any]:  # fmt: skip
    """What the attacker knows of the scored detectors: thresholds, scales, levels on held-out clean training inputs
    (:func:`robench.runs.knowledge.attacker_knowledge`), on the CPU, and the seconds it took."""
    bundle = bundle_of(ref, data, env.device)
    detectors = detectors_of(spec, bundle, fits["states"], env.device)
    tic = time.perf_counter()
    knowledge = attacker_knowledge(bundle, detectors, train, spec.family, env.device, seed)
    return {"knowledge": knowledge, "seconds": time.perf_counter() - tic}


def clean_task(
    env: TaskEnv,
    ref: BundleRef,
    data: bytes | None,
    spec: DetectorSpec,
    fits: dict[str, Any],
    samples: np.ndarray,
    x: torch.Tensor,
) -> tuple[np.ndarray, CleanBatch]:
    """One original batch's clean pass and detector scores (on the CPU, to travel)."""
    bundle = bundle_of(ref, data, env.device)
    detectors = detectors_of(spec, bundle, fits["states"], env.device)
    clean = compute_clean(
        bundle, as_input(x.to(env.device), use_channels_last(ref.channels_last, env.device, ref.precision)), detectors
    )
    return samples, clean_batch_on(clean, torch.device("cpu"))


def probe_task(
    env: TaskEnv, ref: BundleRef, data: bytes | None, x: torch.Tensor, y: torch.Tensor, seed: int, model_name: str
) -> list[Any]:
    """The model probes of :mod:`robench.runs.sanity` on ``x``, ``y`` (a 100-step PGD)."""
    from robench.runs.sanity import probe_model

    bundle = bundle_of(ref, data, env.device)
    target = AttackTarget(bundle.model, bundle.defense, Bounds(*bundle.meta.value_range))
    generator = torch.Generator().manual_seed(derive_seed(seed, "sanity"))
    return probe_model(
        target,
        x.to(env.device),
        y.to(env.device),
        generator=generator,
        objective="adaptive",
        model_name=model_name,
        threat="-",
    )


def part_task(
    env: TaskEnv, spec: PairSpec, job: PartJob, x: torch.Tensor, y: torch.Tensor, model: bytes | None,
    crafting: bytes | None, fits: dict[str, Any], density: dict[str, Any] | None, knowledge: dict[str, Any] | None,
    *cleans: tuple[np.ndarray, CleanBatch],
) -> dict[str, Any]:  # fmt: skip
    """One part's records (:func:`robench.runs.part_work.compute_part`), its work and notes, and who computed it."""
    device = env.device
    bundle = bundle_of(spec.model, model, device)
    crafting_ref = spec.crafting[job.threat]
    crafting_bundle = bundle if crafting_ref == spec.model else bundle_of(crafting_ref, crafting, device)
    detectors = detectors_of(spec.detectors, bundle, fits["states"], device)
    attacks = once(
        ("attacks", spec.key), lambda: [[(s, s.build(spec.family)) for s in threat] for threat in spec.specs]
    )
    scored = scored_settings(detectors)

    def density_of(on: ModelBundle, needs: AttackNeeds, label: str) -> AttackerDensity | None:
        if not needs.density:
            return None
        assert density is not None, "the driver passes the density of every attack that needs one"
        settings = resolve_settings(needs, scored, spec.family)

        def build() -> AttackerDensity:
            if density["state"] is None:  # the scored detector itself
                kd = detectors[SCORED_KD]
            else:
                kd = estimator(spec.family, settings)
                kd.load_fitted_state(density["state"], device)
            return AttackerDensity(
                kd,
                density["eta"],
                density["eta_per_class"],
                settings,
                density["fit"] != "fitted",
                density["state"] is None,
            )  # type: ignore[arg-type]

        return once(("density", spec.detectors.key, on.content_hash, settings, str(device)), build)

    def known_of(needs: AttackNeeds) -> tuple[KnownDetector, ...]:
        if needs.detectors is None:
            return ()
        assert knowledge is not None, "the driver passes the attacker's knowledge to attacks that target detectors"
        return once(
            ("known", spec.detectors.key, spec.seed, str(device)),  # the held-out inputs are seeded by the run
            lambda: known_detectors(detectors, knowledge["knowledge"], device),
        )

    ctx = PartContext(
        bundle=bundle, crafting=[bundle if r == spec.model else crafting_bundle for r in spec.crafting],
        threat_names=list(spec.threat_names), attacks=attacks, detectors=detectors, density=density_of,
        known=known_of,
        bounds=Bounds(*bundle.meta.value_range), seed=spec.seed, precision=spec.precision,
        channels_last=use_channels_last(spec.channels_last, device, spec.precision), device=device,
        model_name=spec.model_name, substitute_name=spec.substitute_name,
    )  # fmt: skip
    clean = CleanCache(bundle, detectors)
    for samples, batch in cleans:
        clean.add(samples, clean_batch_on(batch, device))
    notes: list[str] = []
    work = Work()
    part = compute_part(ctx, job, x, y, clean, notes.append, work)
    return {
        "part": part,
        "work": work,
        "notes": notes,
        "worker": (socket.gethostname(), os.getpid()),
        "threads": torch.get_num_threads(),
    }


def samples_digest(samples: np.ndarray) -> str:
    """A stable name of a set of sample ids (what a clean pass or a probe depends on)."""
    return hashlib.sha256(np.asarray(samples).astype(np.int64).tobytes()).hexdigest()
