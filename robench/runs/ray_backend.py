"""The Ray backend: the task functions of :mod:`robench.runs.tasks` as Ray tasks, for the driver of
:mod:`robench.runs.driver`.

``robench run ... --ray`` and ``robench suite ... --ray`` hand the driver this backend instead of the
local one; the driver, the plan and the task functions are the same, so the records are too:

- **Resources.** Each task declares ``num_cpus`` = ``--threads`` and ``num_gpus`` (1 when the cluster has
  GPUs and the run's device is not ``cpu``, or ``--ray-gpus``); on the worker it sets torch's threads to
  the CPUs Ray assigned it (:func:`_run_task`), so N one-CPU workers on N cores do not oversubscribe,
  and the records equal a one-process run at that thread count, byte for byte.
- **Object references.** What many tasks share (a checkpoint's bytes, the training split, detector
  fits, attacker densities, clean passes) is put in Ray's object store once and passed by reference;
  Ray starts a task when its inputs exist. Workers load a checkpoint from its bytes through the same
  ``weights_only`` checks and content hash as a file.
- **Faults.** A worker that dies mid-task (killed, out of memory) is retried by Ray (``max_retries``);
  a task's result depends only on its inputs, so a retried part equals the one that was lost, and the
  driver writes each part once. Workers never write: ``--out`` need not be on a shared filesystem.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch

from robench.checkpoints.bundle import ModelBundle
from robench.core.errors import ConfigError, RobenchError
from robench.core.threads import available_cores
from robench.runs.ray_cluster import (
    LOCAL,
    LOCAL_OBJECT_STORE,
    PrivateRay,
    RaySettings,
    check_reachable,
    import_ray,
    raise_init_error,
)
from robench.runs.tasks import BundleRef, TaskEnv


def _run_task(fn: Callable[..., Any], *args: Any) -> Any:
    """On a Ray worker: torch threads from the CPUs Ray assigned this task, its device (a GPU when assigned one),
    then ``fn``."""
    import ray

    resources = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(resources.get("CPU", 1) or 1)))
    device = torch.device("cuda") if resources.get("GPU", 0) and torch.cuda.is_available() else torch.device("cpu")
    return fn(TaskEnv(device), *args)


def connect(settings: RaySettings) -> RayBackend:
    """Start or join Ray as ``settings`` say; every failure is a one-line :class:`ConfigError`.

    ``local`` starts a private Ray whose files all live in a :class:`PrivateRay` folder, removed when it stops;
    joining a cluster (``auto`` or an address) uses Ray's own defaults, untouched.
    """
    ray = import_ray()
    if settings.address not in (LOCAL, "auto"):
        check_reachable(settings.address)
    if ray.is_initialized():  # the caller (a test, a notebook) connected already: use that cluster as it is
        return RayBackend(ray, settings, started=False)
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    private: PrivateRay | None = None
    try:
        if settings.address == LOCAL:
            private = PrivateRay.create()
            ray.init(
                num_cpus=settings.cpus or available_cores(),
                object_store_memory=LOCAL_OBJECT_STORE,
                _node_ip_address="127.0.0.1",
                _temp_dir=private.temp_dir,
                **quiet,  # a private Ray listens on loopback only
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
        raise_init_error(settings, exc)
    return RayBackend(ray, settings, started=True, private=private)


class RayBackend:
    """A :class:`~robench.runs.backend.Backend` on a Ray cluster (made by :func:`connect`)."""

    name = "ray"

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
            raise ConfigError(
                f"--threads {settings.threads} asks each Ray task for more CPUs than the cluster has "
                f"({self.cluster_cpus:g})"
            )
        self._remote = ray.remote(_run_task)
        self.what: dict[Any, str] = {}  # a submitted task -> what it is (for its error message)
        self.tasks = 0

    def describe(self) -> str:
        """One line: where the tasks run and what each takes."""
        gpus = f", {self.cluster_gpus:g} GPUs" if self.cluster_gpus else ""
        return (
            f"{self.settings.address}: {self.cluster_cpus:g} CPUs{gpus}, "
            f"{self.settings.threads} CPU(s) and torch thread(s) per task"
        )

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

    def put(self, value: Any) -> Any:
        return self.ray.put(value)

    def put_model(
        self,
        ref: BundleRef,
        bundle: ModelBundle,
        device: torch.device,  # noqa: ARG002 - workers rebuild it from the bytes
    ) -> Any:
        return self.ray.put(Path(ref.path).read_bytes())

    def submit(
        self, fn: Callable[..., Any], args: Sequence[Any], *, device: torch.device, gpus: float, what: str
    ) -> Any:  # noqa: ARG002 - a worker's device is its own
        """``fn`` as a task of ``--threads`` CPUs and ``gpus`` GPUs, retried if its worker dies."""
        self.tasks += 1
        ref = self._remote.options(
            num_cpus=self.settings.threads,
            num_gpus=gpus,
            max_retries=self.settings.retries,
            retry_exceptions=False,
            name=f"robench.{fn.__name__}",
        ).remote(fn, *args)
        self.what[ref] = what
        return ref

    def wait(self, handles: Sequence[Any]) -> list[Any]:
        ready, _ = self.ray.wait(list(handles), num_returns=1)
        return list(ready)

    def execution(self, gpus: float) -> dict[str, Any]:
        settings = self.settings
        return {
            "backend": "ray", "threads": settings.threads,
            "ray": {
                "address": settings.address, "cluster_cpus": self.cluster_cpus, "cluster_gpus": self.cluster_gpus,
                "cpus_per_task": settings.threads, "gpus_per_task": gpus, "max_retries": settings.retries,
            },
        }  # fmt: skip

    def get(self, handle: Any) -> Any:
        """A task's result; its failure as the original one-line error (or one naming the task and Ray's reason)."""
        ray, what = self.ray, self.what.pop(handle, "a task")
        try:
            return ray.get(handle)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, RobenchError):
                raise cause from None
            text = (str(cause if isinstance(cause, BaseException) else exc).strip().splitlines() or [""])[0][:200]
            kind = f"{type(cause).__name__}: " if isinstance(cause, BaseException) else ""
            raise ConfigError(f"a Ray task ({what}) failed: {kind}{text}") from None
        except (
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError,
            ray.exceptions.OutOfMemoryError,
        ) as exc:
            raise ConfigError(
                f"a Ray task ({what}) was lost after {self.settings.retries} retries ({type(exc).__name__}); "
                "rerun the command: finished parts are kept"
            ) from None
