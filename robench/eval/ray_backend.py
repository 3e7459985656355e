"""Ray execution: a run's or a suite's parts as Ray tasks, with records identical to one process.

``robench run ... --ray`` and ``robench suite ... --ray`` hand every (threat, attack, batch)
part to Ray as a task that declares its resources (``num_cpus`` = torch threads per worker,
``num_gpus`` when the cluster has GPUs). Nothing else changes:

- **Per-model work runs once and travels by reference.** The driver reads each checkpoint's
  bytes once into Ray's object store; one task per (model, detectors, training split) fits the
  detectors that are not in the detector cache, one per (crafting model, estimator settings)
  builds the attacker's density, one per original batch computes the clean pass, one per model
  the sanity probes. Part tasks take those objects' references; Ray runs a part once its inputs
  exist, and each worker rebuilds a model, its detectors and densities once (:data:`_BUILT`).
- **The same parts, the same keys.** A part's key, seeds and inputs are those of a local run
  (:mod:`robench.eval.part_work`): the driver looks every job up in the part store first, and
  writes each part there as soon as its task returns. A run killed on Ray resumes locally or on
  Ray, and a local run's parts are reused by a Ray run. Workers never write: the driver alone
  does, so ``--out`` need not be on a filesystem the workers share.
- **Faults.** A worker that dies mid-task (killed, out of memory) is retried by Ray
  (``max_retries``); a part's result depends only on its inputs, so the retried part equals the
  one that was lost, and the driver writes each key once.
- **Threads.** Each task sets torch's threads to the CPUs Ray assigned it, so N one-CPU workers
  on N cores do not oversubscribe; the driver uses the same count, and the records equal a
  one-process run at that thread count, byte for byte (``summary.csv`` included).
- **Files.** A private Ray (``--ray local``) keeps everything it writes (sessions, sockets, logs, spilled
  objects, its auth token) in one folder of mode 0700, ``<RAY_TMPDIR, TMPDIR or /tmp>/robench-ray-XXXXXXXX``
  (:class:`PrivateRay`), removed when it stops; nothing goes into the home folder. Joining a cluster
  (``auto``, an address) leaves Ray's own defaults as they are.

Without ``--ray`` this module is not imported, and neither is Ray.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from robench.attacks.base import Bounds
from robench.core.bundle import ModelBundle, load_bundle
from robench.core.errors import ConfigError, RobenchError
from robench.core.execution import as_input, to_memory_format, try_compile, use_channels_last
from robench.core.provenance import canonical_json, jsonable
from robench.detectors import Detector
from robench.detectors.cache import load_cached, save_cached
from robench.detectors.kd import features_of
from robench.eval.attack_batch import CleanBatch
from robench.eval.clean_cache import CleanCache, clean_batch_on, compute_clean
from robench.eval.density import SCORED_KD, AttackerDensity, DensitySettings, estimator, resolve_settings, scored_settings
from robench.eval.detection import build_detectors
from robench.eval.part_work import PartContext, PartJob, Work, compute_part
from robench.eval.threats import AttackSpec

RAY_HINT = "pip install 'robench[ray]'"
LOCAL = "local"  # --ray local (and a bare --ray): a private Ray on this machine, for this command only
DEFAULT_RETRIES = 3
_LOCAL_OBJECT_STORE = 512 * 1024 * 1024  # a private Ray's object store (Ray spills to disk beyond it)


@dataclass(frozen=True)
class RaySettings:
    """Where and how the parts run on Ray.

    ``address``: ``local`` (start a private Ray on this machine with ``cpus`` CPUs), ``auto``
    (the cluster already running on this machine, ``ray start --head``), or a cluster's
    ``HOST:PORT`` / ``ray://HOST:PORT``. ``threads``: CPUs per task, which each task gives
    torch as threads. ``gpus``: GPUs per task (None: 1 when the cluster has GPUs and the run's
    device is not ``cpu``, else 0). ``retries``: Ray's retries of a task whose worker died.
    """

    address: str = LOCAL
    cpus: int | None = None
    threads: int = 1
    gpus: float | None = None
    retries: int = DEFAULT_RETRIES

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip():
            raise ConfigError(f"--ray takes local, auto or a cluster address HOST:PORT, got {self.address!r}")
        for name, value, low in (("--ray-cpus", self.cpus, 1), ("--threads", self.threads, 1), ("--ray-retries", self.retries, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
        if self.gpus is not None and (isinstance(self.gpus, bool) or not isinstance(self.gpus, (int, float)) or not 0 <= self.gpus <= 64):
            raise ConfigError(f"--ray-gpus must be a number of GPUs per task between 0 and 64 (0.5 shares one GPU between two tasks), got {self.gpus!r}")
        if self.cpus is not None and self.address != LOCAL:
            raise ConfigError(f"--ray-cpus sizes a local Ray (--ray local); a cluster at {self.address} has the CPUs its nodes were started with")


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error that names the extra to install."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine (rule: no network at run time)
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, which is not installed here: {RAY_HINT}") from None
    return ray


def _reachable(address: str) -> None:
    """A one-line error unless ``HOST:PORT`` (of ``address``, ``ray://`` allowed) accepts a TCP connection within 5 s."""
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--ray {address}: not a cluster address; use HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:10001, auto or local")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot reach a Ray cluster at {address} ({reason}): start one there with 'ray start --head', check the address, or use --ray local"
        ) from None


# ------------------------------------------------------------------------------------------- a private Ray's files

PRIVATE_PREFIX = "robench-ray-"  # <RAY_TMPDIR, TMPDIR or /tmp>/robench-ray-XXXXXXXX: everything a private Ray writes
TOKEN_FILE = "auth_token"
_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")  # what Ray (or robench) sets in this process for a private Ray
# Ray's longest socket path below its temp dir: /robench-ray-XXXXXXXX/r/session_<date>_<time>_<us>_<pid>/sockets/plasma_store
_SOCKET_TAIL = 90  # 88 bytes with a 7-digit pid
_AF_UNIX_MAX = 107


def _private_base() -> str:
    """Where a private Ray's folder goes: Ray's own default place (``RAY_TMPDIR``, else ``TMPDIR``, else /tmp), or /tmp when
    that path is too long for Ray's socket files (AF_UNIX paths are at most 107 bytes)."""
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    if len(os.fsencode(base)) + _SOCKET_TAIL > _AF_UNIX_MAX and os.path.isdir("/tmp"):
        return "/tmp"
    return base


def _refresh_ray_auth() -> None:
    """Make this process's Ray re-read RAY_AUTH_MODE and the token (Ray caches both; best effort, Ray's private API)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # noqa: BLE001 - another Ray version: nothing cached to refresh
        pass


@dataclass
class PrivateRay:
    """The folder (mode 0700) that a private Ray (``--ray local``) keeps all its files in, removed when it stops.

    Ray's session folders (sockets, logs, spilled objects) go in ``folder/r`` (Ray makes its temp dir and sessions
    world-writable, mode 0777, but nobody else can enter ``folder``), and, unless ``RAY_AUTH_MODE`` says otherwise,
    the token of Ray's token authentication is ``folder/auth_token`` (mode 0600, named to Ray by
    ``RAY_AUTH_TOKEN_PATH``) instead of ``~/.ray/auth_token``, which Ray would write with the umask's mode and
    leave behind. The process's Ray environment variables are restored when it stops.
    """

    folder: Path
    saved_env: dict[str, str | None]

    @classmethod
    def create(cls) -> PrivateRay:
        import secrets
        import tempfile

        base = _private_base()
        try:
            folder = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX, dir=base))  # created with mode 0700
        except OSError as exc:
            raise ConfigError(f"--ray local: cannot create a private folder for Ray in {base} ({exc.strerror or exc})") from None
        os.chmod(folder, 0o700)
        private = cls(folder, {name: os.environ.get(name) for name in _AUTH_ENV})
        try:
            if os.environ.get("RAY_AUTH_MODE", "token").strip().lower() == "token":  # Ray's default for a new local cluster
                token = folder / TOKEN_FILE
                fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32))
                os.chmod(token, 0o600)  # whatever the umask
                os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
                _refresh_ray_auth()
        except BaseException:
            private.remove()
            raise
        return private

    @property
    def temp_dir(self) -> str:
        """Ray's ``_temp_dir`` (Ray chmods it 0777; ``folder`` around it keeps others out)."""
        return str(self.folder / "r")

    def remove(self) -> None:
        """Restore the environment and delete the folder (after Ray stopped; its last processes may still be exiting)."""
        changed = any(os.environ.get(name) != value for name, value in self.saved_env.items())
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if changed:
            _refresh_ray_auth()
        for attempt in range(20):
            shutil.rmtree(self.folder, ignore_errors=True)
            if not os.path.lexists(self.folder):
                return
            time.sleep(0.1 * (attempt + 1))


def connect(settings: RaySettings) -> RayBackend:
    """Start or join Ray as ``settings`` say; every failure is a one-line :class:`ConfigError`.

    ``local`` starts a private Ray whose files all live in a :class:`PrivateRay` folder, removed when it stops;
    joining a cluster (``auto`` or an address) uses Ray's own defaults, untouched.
    """
    ray = import_ray()
    if settings.address not in (LOCAL, "auto"):
        _reachable(settings.address)
    if ray.is_initialized():  # the caller (a test, a notebook) connected already: use that cluster as it is
        return RayBackend(ray, settings, started=False)
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    private: PrivateRay | None = None
    try:
        if settings.address == LOCAL:
            from robench.core.threads import available_cores

            private = PrivateRay.create()
            ray.init(
                num_cpus=settings.cpus or available_cores(), object_store_memory=_LOCAL_OBJECT_STORE,
                _node_ip_address="127.0.0.1", _temp_dir=private.temp_dir, **quiet,  # a private Ray listens on loopback only
            )
        else:
            ray.init(address=settings.address, **quiet)
    except BaseException as exc:
        if private is not None:
            with suppress(Exception):
                ray.shutdown()
            private.remove()
        if isinstance(exc, RobenchError) or not isinstance(exc, Exception):
            raise
        _raise_init_error(settings, exc)
    return RayBackend(ray, settings, started=True, private=private)


def _raise_init_error(settings: RaySettings, exc: Exception) -> None:
    """Ray's failure to start or join (ConnectionError, RuntimeError, ValueError, ...) as one line."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if settings.address == "auto":
        why = "" if "could not find any running ray instance" in text.lower() else f" ({text})"
        raise ConfigError(f"--ray auto found no Ray cluster running on this machine{why}: start one with 'ray start --head', or use --ray local") from None
    hint = ""
    if settings.address != LOCAL and os.environ.get("RAY_AUTH_MODE") != "token":
        hint = (
            "; if the cluster uses Ray's token authentication (the default of 'ray start' in Ray 2.60), "
            "set RAY_AUTH_MODE=token here and give this machine the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN)"
        )
    raise ConfigError(f"could not start or join Ray at {settings.address}: {text}{hint}") from None


@contextmanager
def session(ray: RayBackend | RaySettings) -> Iterator[RayBackend]:
    """``ray`` itself (a backend stays open), or a backend connected for the block from settings (closed after)."""
    if isinstance(ray, RayBackend):
        yield ray
        return
    if not isinstance(ray, RaySettings):
        raise ConfigError(f"ray= takes RaySettings(...) or a backend from robench.eval.ray_backend.connect, got {type(ray).__name__}")
    with connect(ray) as backend:
        yield backend


# ------------------------------------------------------------------------------------------- the workers


@dataclass(frozen=True)
class BundleRef:
    """A checkpoint in the object store: its name (for messages), the content hash its bytes must give, and how it runs."""

    path: str
    content_hash: str
    channels_last: str = "auto"
    precision: str = "fp32"
    compile: bool = False


@dataclass(frozen=True)
class DetectorSpec:
    """The run's detectors, rebuilt the same way on every worker."""

    names: tuple[str, ...]
    family: str
    settings: dict[str, dict[str, Any]]
    key: str  # hashes the detectors' configs, the model and the training split: what the fitted states belong to


@dataclass(frozen=True)
class PairSpec:
    """What a worker needs, besides the objects passed by reference, to compute a pair's parts."""

    key: str
    model: BundleRef
    crafting: tuple[BundleRef, ...]  # per threat
    threat_names: tuple[str, ...]
    specs: tuple[tuple[AttackSpec, ...], ...]  # per threat: the attacks, rebuilt on the worker (library attacks are made per process)
    detectors: DetectorSpec
    family: str
    seed: int
    precision: str
    channels_last: str
    model_name: str
    substitute_name: str | None


_BUILT: dict[tuple[Any, ...], Any] = {}  # this worker's rebuilt models, detectors, densities and attacks, by what determines them
_BUILT_KEPT = 64


def _once(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    if key not in _BUILT:
        _BUILT[key] = build()
        while len(_BUILT) > _BUILT_KEPT:
            _BUILT.pop(next(iter(_BUILT)))
    return _BUILT[key]


def _worker_setup() -> torch.device:
    """Torch threads from the CPUs Ray assigned this task, and the task's device (a GPU when Ray assigned one)."""
    import ray

    resources = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(resources.get("CPU", 1) or 1)))
    return torch.device("cuda") if resources.get("GPU", 0) and torch.cuda.is_available() else torch.device("cpu")


def _bundle(ref: BundleRef, data: bytes, device: torch.device) -> ModelBundle:
    """The checkpoint rebuilt from its bytes (once per worker), in the memory format and compiled as the run asks (as prepare does)."""

    def build() -> ModelBundle:
        bundle = load_bundle(ref.path, device=device, data=data)  # the same weights_only load and checks as from the file
        if bundle.content_hash != ref.content_hash:
            raise ConfigError(f"{ref.path}: the bytes a Ray worker received give content hash {bundle.content_hash[:12]}, not {ref.content_hash[:12]}")
        if use_channels_last(ref.channels_last, device, ref.precision):
            to_memory_format(bundle.model, True)
        if ref.compile:
            try_compile(bundle.model, torch.zeros(2, *bundle.meta.input_shape, device=device), lambda _note: None)
        return bundle

    return _once(("bundle", ref, str(device)), build)


def _detectors(spec: DetectorSpec, bundle: ModelBundle, states: dict[str, dict[str, torch.Tensor]], device: torch.device) -> dict[str, Detector]:
    def build() -> dict[str, Detector]:
        detectors = build_detectors(spec.names, spec.family, spec.settings)
        for name, detector in detectors.items():
            detector.check_applicable(bundle.model, bundle.defense)
            if name in states:
                detector.load_fitted_state(states[name], device)
        return detectors

    return _once(("detectors", spec.key, str(device)), build)


def _cpu_state(detector: Detector) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in detector.fitted_state().items()}


def fit_task(ref: BundleRef, data: bytes, spec: DetectorSpec, train: Any, cached: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Fit the detectors not in ``cached`` (fitted states by name); every fitted state, the names fitted here and the seconds."""
    device = _worker_setup()
    bundle = _bundle(ref, data, device)
    tic = time.perf_counter()
    states, fitted = dict(cached), []
    for name, detector in build_detectors(spec.names, spec.family, spec.settings).items():
        detector.check_applicable(bundle.model, bundle.defense)
        if detector.needs_fit and name not in states:
            detector.fit(bundle.model, bundle.defense, train, device)
            states[name] = _cpu_state(detector)
            fitted.append(name)
    return {"states": states, "fitted": fitted, "seconds": time.perf_counter() - tic}


def density_task(
    ref: BundleRef, data: bytes, family: str, train: Any, settings: DensitySettings,
    scored: DetectorSpec | None, fits: dict[str, Any] | None, cached: dict[str, torch.Tensor] | None,
) -> dict[str, Any]:
    """The attacker density of ``settings`` on the crafting model, as :func:`robench.eval.density.attacker_density` builds it.

    ``scored``: the density is the scored KD detector itself (its fit ``fits`` from the fit task);
    ``cached``: the estimator's fit from the detector cache; else it is fitted here.
    """
    device = _worker_setup()
    crafting = _bundle(ref, data, device)
    if scored is not None:
        assert fits is not None
        kd = _detectors(scored, crafting, fits["states"], device)[SCORED_KD]
        fit, state = "scored detector", None
    else:
        kd = estimator(family, settings)
        if cached is not None:
            kd.load_fitted_state(cached, device)
        else:
            kd.fit(crafting.model, crafting.defense, train, device)
        fit, state = ("cached" if cached is not None else "fitted"), _cpu_state(kd)
    eta, per_class = kd.training_medians(features_of(crafting.model, train.x, device), train.y.to(device))  # type: ignore[union-attr]
    return {"state": state, "eta": eta, "eta_per_class": per_class.detach().cpu(), "fit": fit}


def clean_task(ref: BundleRef, data: bytes, spec: DetectorSpec, fits: dict[str, Any], samples: np.ndarray, x: torch.Tensor) -> tuple[np.ndarray, CleanBatch]:
    """One original batch's clean pass and detector scores (on the CPU, to travel)."""
    device = _worker_setup()
    bundle = _bundle(ref, data, device)
    detectors = _detectors(spec, bundle, fits["states"], device)
    clean = compute_clean(bundle, as_input(x.to(device), use_channels_last(ref.channels_last, device, ref.precision)), detectors)
    return samples, clean_batch_on(clean, torch.device("cpu"))


def probe_task(ref: BundleRef, data: bytes, x: torch.Tensor, y: torch.Tensor, seed: int, model_name: str) -> list[Any]:
    """The sanity probes of the model (:func:`robench.eval.runner.run_probes`)."""
    from robench.eval.runner import run_probes

    device = _worker_setup()
    return run_probes(_bundle(ref, data, device), x.to(device), y.to(device), seed, model_name)


def part_task(
    spec: PairSpec, job: PartJob, x: torch.Tensor, y: torch.Tensor, model: bytes, crafting: bytes | None, fits: dict[str, Any],
    density: dict[str, Any] | None, *cleans: tuple[np.ndarray, CleanBatch],
) -> dict[str, Any]:
    """One part's records, computed exactly as :meth:`robench.eval.runner.RunPlan.run_local` computes it."""
    device = _worker_setup()
    bundle = _bundle(spec.model, model, device)
    crafting_ref = spec.crafting[job.threat]
    crafting_bundle = bundle if crafting_ref == spec.model else _bundle(crafting_ref, crafting or b"", device)
    detectors = _detectors(spec.detectors, bundle, fits["states"], device)
    attacks = _once(("attacks", spec.key), lambda: [[(s, s.build(spec.family)) for s in threat] for threat in spec.specs])
    scored = scored_settings(detectors)

    def density_of(on: ModelBundle, needs: Any, label: str) -> AttackerDensity | None:
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
            return AttackerDensity(kd, density["eta"], density["eta_per_class"], settings, density["fit"] != "fitted", density["state"] is None)  # type: ignore[arg-type]

        return _once(("density", spec.detectors.key, on.content_hash, settings, str(device)), build)

    ctx = PartContext(
        bundle=bundle, crafting=[bundle if r == spec.model else crafting_bundle for r in spec.crafting], threat_names=list(spec.threat_names),
        attacks=attacks, detectors=detectors, density=density_of, bounds=Bounds(*bundle.meta.value_range), seed=spec.seed,
        precision=spec.precision, channels_last=use_channels_last(spec.channels_last, device, spec.precision), device=device,
        model_name=spec.model_name, substitute_name=spec.substitute_name,
    )
    clean = CleanCache(bundle, detectors)
    for samples, batch in cleans:
        clean.add(samples, clean_batch_on(batch, device))
    notes: list[str] = []
    work = Work()
    part = compute_part(ctx, job, x, y, clean, notes.append, work)
    return {"part": part, "work": work, "notes": notes, "worker": (socket.gethostname(), os.getpid()), "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------------- the driver


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(jsonable(value)).encode()).hexdigest()[:24]


@dataclass
class _Flow:
    pair: _PairObjects
    flow: Any  # a RunPlan flow (generator)
    jobs: list[PartJob] = field(default_factory=list)
    results: list[pd.DataFrame | None] = field(default_factory=list)
    left: int = 0
    parts: list[pd.DataFrame] | None = None  # the flow's parts once it ended


class RayBackend:
    """Runs :class:`robench.eval.runner.RunPlan` s on Ray (:meth:`run_plans`); made by :func:`connect`."""

    def __init__(self, ray: Any, settings: RaySettings, started: bool, private: PrivateRay | None = None) -> None:
        self.ray, self.settings, self.started, self.private = ray, settings, started, private
        try:
            resources = ray.cluster_resources()
        except BaseException:
            self.close()
            raise
        self.cluster_cpus = float(resources.get("CPU", 0))
        self.cluster_gpus = float(resources.get("GPU", 0))
        if self.cluster_cpus < settings.threads:
            self.close()
            raise ConfigError(f"--threads {settings.threads} asks each Ray task for more CPUs than the cluster has ({self.cluster_cpus:g})")
        self._remote: dict[str, Any] = {}
        self.objects: dict[tuple[Any, ...], Any] = {}  # references shared by every plan (bytes, fits, densities, clean passes, probes)
        self.pending: dict[Any, tuple[Callable[[Any], None], str]] = {}  # submitted task -> (what the driver does with its result, what it is)
        self.fit_results: dict[str, dict[str, Any]] = {}  # detector key -> which fits were cached, the fit seconds
        self.density_results: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.workers: set[tuple[str, int]] = set()  # (host, pid) of the workers that computed parts
        self.tasks = 0
        self._queued: list[tuple[float, int, _Flow, int]] = []  # parts to submit: (cost, order, flow, job index)

    def describe(self) -> str:
        """One line: where the tasks run and what each takes."""
        gpus = f", {self.cluster_gpus:g} GPUs" if self.cluster_gpus else ""
        return f"{self.settings.address}: {self.cluster_cpus:g} CPUs{gpus}, {self.settings.threads} CPU(s) and torch thread(s) per task"

    def close(self) -> None:
        """Shut down a Ray this backend started (a joined cluster stays up), and remove a private Ray's folder."""
        try:
            if self.started and self.ray.is_initialized():
                self.ray.shutdown()
        finally:
            private, self.private = self.private, None
            if private is not None:
                private.remove()

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def gpus_for(self, device: str) -> float:
        """GPUs per task for a run on ``device``."""
        if self.settings.gpus is not None:
            if self.settings.gpus > 0 and self.cluster_gpus == 0:
                raise ConfigError(f"--ray-gpus {self.settings.gpus:g} but the Ray cluster has no GPUs")
            return float(self.settings.gpus)
        if device.startswith("cuda") and self.cluster_gpus == 0:
            raise ConfigError(f"--device {device} but the Ray cluster has no GPUs (use --device auto or cpu)")
        return 1.0 if self.cluster_gpus > 0 and device != "cpu" else 0.0

    def submit(self, fn: Callable[..., Any], gpus: float, done: Callable[[Any], None] | None, what: str, *args: Any) -> Any:
        """Submit ``fn(*args)`` as a task of ``--threads`` CPUs and ``gpus`` GPUs, retried if its worker dies; ``done`` gets its result."""
        name = fn.__name__
        if name not in self._remote:
            self._remote[name] = self.ray.remote(fn)
        self.tasks += 1
        ref = self._remote[name].options(
            num_cpus=self.settings.threads, num_gpus=gpus, max_retries=self.settings.retries, retry_exceptions=False, name=f"robench.{name}"
        ).remote(*args)
        if done is not None:
            self.pending[ref] = (done, what)
        return ref

    def shared(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """The reference of ``key``, made once for every plan of this backend."""
        if key not in self.objects:
            self.objects[key] = make()
        return self.objects[key]

    def run_plans(self, plans: list[Any]) -> list[Any]:
        """Every plan's parts as Ray tasks, all plans at once; each plan's :class:`~robench.eval.runner.RunResult`, in order.

        The driver looks each job up in the plan's part store, submits the missing ones, writes
        each part as its task returns, and feeds a flow its next stage once its stage is complete.
        """
        pairs = [_PairObjects(self, plan) for plan in plans]
        if len(plans) > 1:  # one bar for every plan's parts (their own bars would overwrite each other)
            from tqdm import tqdm

            shown = any(not plan.bar.disable for plan in plans)
            bar = tqdm(total=sum(plan.bar.total for plan in plans), desc=f"{len(plans)} pairs on Ray", unit="part", disable=None if shown else True, leave=False)
            for plan in plans:
                plan.bar.close()
                plan.bar = bar
        flows = [_Flow(pair, flow) for pair in pairs for flow in pair.plan.flows()]
        for pair in pairs:
            pair.start()
        for f in flows:
            self._advance(f, None)
        self._submit_queued()
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1)
            for ref in ready:
                done, what = self.pending.pop(ref)
                done(self._result(ref, what))
            self._submit_queued()
        results = []
        for pair in pairs:
            pair.record_fits()
            results.append(pair.plan.finish([f.parts for f in flows if f.pair is pair]))
        return results

    def _advance(self, f: _Flow, parts: list[pd.DataFrame] | None) -> None:
        """Feed flow ``f`` its finished stage and submit the next stage's missing parts (reused parts need no task)."""
        plan = f.pair.plan
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
                self._queued.append((f.pair.part_cost(jobs[k]), len(self._queued), f, k))
            return

    def _submit_queued(self) -> None:
        """Submit the parts queued since the last call, the costliest first (estimated model passes x images).

        Ray starts ready tasks roughly in submission order, so the longest parts start first and the
        last workers to finish are not left with a long part each (the makespan of a greedy
        longest-first schedule); the order changes no record, each part depends only on its inputs.
        """
        for _, _, f, k in sorted(self._queued, key=lambda item: (-item[0], item[1])):
            f.pair.submit_part(f.jobs[k], lambda out, f=f, k=k: self._finished(f, k, out))
        self._queued.clear()

    def _finished(self, f: _Flow, k: int, out: dict[str, Any]) -> None:
        plan, job = f.pair.plan, f.jobs[k]
        for note in out["notes"]:
            plan.echo(f"{plan.config.name}/{plan.config.threat}: {note}")
        plan.work.merge(out["work"])
        self.workers.add(tuple(out["worker"]))
        f.pair.workers.add(tuple(out["worker"]))
        f.pair.threads.add(int(out["threads"]))
        plan.keep(job, out["part"])  # the driver alone writes, as soon as the part is back
        f.results[k] = out["part"]
        f.left -= 1
        if f.left == 0:
            self._advance(f, f.results)  # type: ignore[arg-type]

    def _result(self, ref: Any, what: str) -> Any:
        """A task's result; its failure as the original one-line error (or one naming the task and Ray's reason)."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, RobenchError):
                raise cause from None
            text = (str(cause if isinstance(cause, BaseException) else exc).strip().splitlines() or [""])[0][:200]
            kind = f"{type(cause).__name__}: " if isinstance(cause, BaseException) else ""
            raise ConfigError(f"a Ray task ({what}) failed: {kind}{text}") from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError, ray.exceptions.OutOfMemoryError) as exc:
            raise ConfigError(
                f"a Ray task ({what}) was lost after {self.settings.retries} retries ({type(exc).__name__}); rerun the command: finished parts are kept"
            ) from None


class _PairObjects:
    """One plan's objects on Ray: its checkpoints' bytes, detector fits, densities, clean passes and probes (shared across plans where equal)."""

    def __init__(self, backend: RayBackend, plan: Any) -> None:
        self.backend, self.plan = backend, plan
        prepared, config = plan.prepared, plan.config
        self.gpus = backend.gpus_for(config.device)
        self.model = self._bundle_ref(prepared.bundle, config.model)
        self.substitute = self._bundle_ref(prepared.substitute, config.substitute) if prepared.substitute is not None else None
        detector_key = _digest({"model": prepared.bundle.content_hash, "train": prepared.train_name, "detectors": plan.detector_identity})
        self.detectors = DetectorSpec(tuple(prepared.detectors), plan.family, {k: dict(v) for k, v in config.detector_settings.items()}, detector_key)
        crafting = tuple(self.model[0] if c is prepared.bundle else self.substitute[0] for c in plan.crafting)  # type: ignore[index]
        specs = tuple(tuple(spec for spec, _ in t.attacks) for t in prepared.threats)
        self.spec = PairSpec(
            key=_digest({"detectors": detector_key, "crafting": [c.content_hash for c in crafting], "specs": [[s.config(plan.family) for s in t] for t in specs]}),
            model=self.model[0], crafting=crafting, threat_names=tuple(t.threat.name for t in prepared.threats), specs=specs,
            detectors=self.detectors, family=plan.family, seed=config.seed, precision=config.precision, channels_last=config.channels_last,
            model_name=config.name, substitute_name=config.crafting_name,
        )
        self.batch_of = {int(s): b for b, batch in enumerate(plan.batches) for s in batch.numpy().tolist()}
        self.density_keys: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # the plan's density key -> the backend's
        self.workers: set[tuple[str, int]] = set()
        self.threads: set[int] = set()
        settings = backend.settings
        plan.execution = {
            "backend": "ray", "threads": settings.threads,
            "ray": {
                "address": settings.address, "cluster_cpus": backend.cluster_cpus, "cluster_gpus": backend.cluster_gpus,
                "cpus_per_task": settings.threads, "gpus_per_task": self.gpus, "max_retries": settings.retries,
            },
        }

    def _bundle_ref(self, bundle: ModelBundle, path: Path | None) -> tuple[BundleRef, Any]:
        if path is None:
            raise ConfigError("a Ray run needs its models as bundle files (RunConfig.model)")
        config = self.plan.config
        ref = BundleRef(str(path), bundle.content_hash, config.channels_last, config.precision, config.compile)
        return ref, self.backend.shared(("bytes", bundle.content_hash), lambda: self.backend.ray.put(Path(path).read_bytes()))

    def _train(self) -> Any:
        data = self.plan.prepared.data
        return self.backend.shared(("train", data.name, data.split_seed, id(data)), lambda: self.backend.ray.put(data.train))

    def start(self) -> None:
        """Submit what the plan needs whatever its parts: the sanity probes (once per model and probed samples)."""
        plan = self.plan
        if not plan.config.sanity:
            return
        from robench.eval.runner import _PROBES, SANITY_PROBE_SAMPLES, probe_key, remember_probes

        key = probe_key(plan.prepared, plan.samples, plan.config.name)
        if key in _PROBES:
            return
        x, y = plan.inputs(plan.samples[:SANITY_PROBE_SAMPLES].numpy())
        self.backend.shared(
            ("probe", key),
            lambda: self.backend.submit(probe_task, self.gpus, lambda out: remember_probes(key, out), "sanity probes", *self.model, x, y, plan.config.seed, plan.config.name),
        )

    def fits(self) -> Any:
        """The fitted detectors' states (a reference): the detector cache's, else fitted by one task (the driver writes the cache)."""
        backend, prepared = self.backend, self.plan.prepared

        def make() -> Any:
            cached, reused = {}, {}
            for name, detector in prepared.detectors.items():  # prepare checked that each applies
                reused[name] = bool(detector.needs_fit and load_cached(detector, prepared.bundle, prepared.device, prepared.train_name))
                if reused[name]:
                    cached[name] = _cpu_state(detector)
            if not any(d.needs_fit and not reused[n] for n, d in prepared.detectors.items()):
                backend.fit_results[self.detectors.key] = {"reused": reused, "seconds": 0.0}
                return backend.ray.put({"states": cached, "fitted": [], "seconds": 0.0})
            return backend.submit(fit_task, self.gpus, lambda out: self._fitted(out, reused), "detector fits", *self.model, self.detectors, self._train(), cached)

        return backend.shared(("fits", self.detectors.key), make)

    def _fitted(self, out: dict[str, Any], reused: dict[str, bool]) -> None:
        prepared = self.plan.prepared
        for name in out["fitted"]:  # the driver alone writes: the detector cache next to the bundle
            detector = prepared.detectors[name]
            detector.load_fitted_state(out["states"][name], prepared.device)
            save_cached(detector, prepared.bundle, prepared.train_name)
        self.backend.fit_results[self.detectors.key] = {"reused": reused, "seconds": out["seconds"]}

    def record_fits(self) -> None:
        """The plan's detector-fit and density records for run.json (from the tasks, or from the cache when no part was computed)."""
        plan, prepared = self.plan, self.plan.prepared
        result = self.backend.fit_results.get(self.detectors.key)
        if result is None:
            plan.reused_fit = {name: bool(d.needs_fit and load_cached(d, prepared.bundle, prepared.device, prepared.train_name)) for name, d in prepared.detectors.items()}
        else:
            plan.reused_fit, plan.fit_seconds = dict(result["reused"]), float(result["seconds"])
        for key, shared_key in self.density_keys.items():
            if shared_key in self.backend.density_results:
                plan.densities.remote[key] = self.backend.density_results[shared_key]
        # which workers computed this plan's parts, and the torch threads they ran with (each task's num_cpus)
        plan.execution["ray"].update(workers=len(self.workers), worker_threads=sorted(self.threads))

    def density(self, t: int, i: int) -> Any | None:
        """The density reference attack ``i`` of threat ``t`` needs (None if it needs none)."""
        plan, prepared = self.plan, self.plan.prepared
        needs = prepared.threats[t].attacks[i][1].needs()
        if not needs.density:
            return None
        crafting = plan.crafting[t]
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
                    cached = _cpu_state(kd)

            def done(out: dict[str, Any]) -> None:
                if out["fit"] == "fitted":  # the driver caches the attacker's own estimator
                    kd = estimator(plan.family, settings)
                    kd.load_fitted_state(out["state"], prepared.device)
                    save_cached(kd, crafting, prepared.train_name)
                self.backend.density_results[shared_key] = {"fit": out["fit"], "eta": out["eta"], "eta_per_class": [float(v) for v in out["eta_per_class"]]}

            return self.backend.submit(
                density_task, self.gpus, done, "attacker density", ref, data, plan.family, self._train(), settings,
                self.detectors if own else None, self.fits() if own else None, cached,
            )

        return self.backend.shared(shared_key, make)

    def cleans(self, samples: np.ndarray) -> list[Any]:
        """References to the clean passes of the original batches that hold ``samples`` (each computed once)."""
        plan = self.plan
        refs = []
        for b in sorted({self.batch_of[int(s)] for s in np.asarray(samples).tolist()}):
            original = plan.batches[b].numpy()
            key = ("clean", self.detectors.key, self.model[0], hashlib.sha256(original.astype(np.int64).tobytes()).hexdigest())

            def make(original: np.ndarray = original) -> Any:
                return self.backend.submit(clean_task, self.gpus, None, "clean pass", *self.model, self.detectors, self.fits(), original, plan.inputs(original)[0])

            refs.append(self.backend.shared(key, make))
        return refs

    def part_cost(self, job: PartJob) -> float:
        """The part's estimated model passes (:meth:`robench.attacks.base.Attack.cost` x its images): the submission order."""
        return float(self.plan.prepared.threats[job.threat].attacks[job.attack][1].cost()) * len(job.samples)

    def submit_part(self, job: PartJob, done: Callable[[Any], None]) -> Any:
        x, y = self.plan.inputs(job.samples)
        crafting = self.spec.crafting[job.threat]
        crafting_bytes = self.substitute[1] if self.substitute is not None and crafting == self.substitute[0] else None
        return self.backend.submit(
            part_task, self.gpus, done, f"part {job.key[:12]}", self.spec, job, x, y, self.model[1], crafting_bytes,
            self.fits(), self.density(job.threat, job.attack), *self.cleans(job.samples),
        )
