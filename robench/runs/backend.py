"""Where the task functions of :mod:`robench.runs.tasks` run: the :class:`Backend` interface and the local backend.

The driver (:mod:`robench.runs.driver`) lays out its work as calls of task functions on inputs and
hands them to a backend: ``put`` a value every task may share, ``submit`` a task (its arguments may
be handles of values put or of other tasks' results), ``wait`` for some to finish, ``get`` a result.
:class:`LocalBackend` runs each task in this process when it is submitted;
:class:`robench.runs.ray_backend.RayBackend` submits the same function as a Ray task. Neither knows
what the tasks do, and the driver does not know which backend it has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from robench.checkpoints.bundle import ModelBundle
from robench.core.errors import ConfigError
from robench.runs.tasks import BundleRef, TaskEnv, adopt_bundle, forget

if TYPE_CHECKING:
    from robench.runs.ray_backend import RayBackend
    from robench.runs.ray_cluster import RaySettings


class Backend(Protocol):
    """What the driver needs of a place to run tasks."""

    name: str

    def put(self, value: Any) -> Any:
        """A handle of ``value`` that tasks can take as an argument (shared, not copied per task where the backend
        can)."""

    def put_model(self, ref: BundleRef, bundle: ModelBundle, device: torch.device) -> Any:
        """The handle of a checkpoint's bytes for tasks elsewhere (None where tasks run beside ``bundle``)."""

    def submit(
        self, fn: Callable[..., Any], args: Sequence[Any], *, device: torch.device, gpus: float, what: str
    ) -> Any:
        """Run ``fn(TaskEnv, *args)`` (handles among ``args`` replaced by their values); a handle of its result."""

    def wait(self, handles: Sequence[Any]) -> list[Any]:
        """Some of ``handles`` that are finished (at least one)."""

    def get(self, handle: Any) -> Any:
        """The value behind ``handle``; a task's failure as a one-line :class:`~robench.core.errors.RobenchError`."""

    def gpus_for(self, device: str) -> float:
        """GPUs per task for a run on ``device``."""

    def execution(self, gpus: float) -> dict[str, Any]:
        """run.json's ``execution`` entries that say where the parts ran."""


@dataclass(eq=False)  # a handle: hashed by identity, like a Ray object reference
class Pending:
    """A value put here, or a task to run in this process when it is first waited for or read."""

    fn: Callable[..., Any] | None
    args: Sequence[Any] = ()
    device: torch.device | None = None
    done: bool = False
    value: Any = None

    def result(self) -> Any:
        if not self.done:  # its inputs first (handles of other tasks), then the task itself
            assert self.fn is not None and self.device is not None
            self.value = self.fn(
                TaskEnv(self.device), *[a.result() if isinstance(a, Pending) else a for a in self.args]
            )
            self.done, self.fn, self.args = True, None, ()
        return self.value


class LocalBackend:
    """Runs the tasks in this process, one at a time, on the run's device: each when the driver first waits for it.

    The driver handles each result before the next task runs, so a part is in the part store as soon
    as it is computed (an interrupted run resumes from there).
    """

    name = "local"

    def put(self, value: Any) -> Pending:
        return Pending(None, done=True, value=value)

    def put_model(self, ref: BundleRef, bundle: ModelBundle, device: torch.device) -> Pending:
        adopt_bundle(ref, device, bundle)  # the tasks here use the prepared model itself
        return self.put(None)

    def submit(
        self, fn: Callable[..., Any], args: Sequence[Any], *, device: torch.device, gpus: float, what: str
    ) -> Pending:  # noqa: ARG002 - the run's device decides here
        return Pending(fn, list(args), device)

    def wait(self, handles: Sequence[Any]) -> list[Any]:
        first = handles[0]
        first.result()
        return [first]

    def get(self, handle: Pending) -> Any:
        return handle.result()

    def gpus_for(self, device: str) -> float:  # noqa: ARG002 - the run's device is used as it is
        return 0.0

    def execution(self, gpus: float) -> dict[str, Any]:  # noqa: ARG002 - a local run reserves no GPU share
        return {"backend": "local", "threads": torch.get_num_threads()}


@contextmanager
def open_backend(ray: RayBackend | RaySettings | None, echo: Callable[[str], None] | None = None) -> Iterator[Backend]:
    """The local backend (``ray`` None), a connected Ray backend as it is, or one connected for the block from settings.

    Ray is imported only here, and only when asked for: a run without ``--ray`` never imports it.
    """
    if ray is None:
        try:
            yield LocalBackend()
        finally:
            forget()  # the models, detectors and attacks lent to or built for this run's tasks are the caller's again
        return
    from robench.runs.ray_backend import RayBackend, connect
    from robench.runs.ray_cluster import RaySettings

    if isinstance(ray, RayBackend):
        yield ray
        return
    if not isinstance(ray, RaySettings):
        raise ConfigError(
            f"ray= takes RaySettings(...) or a backend from robench.runs.ray_backend.connect, got {type(ray).__name__}"
        )
    with connect(ray) as backend:
        if echo is not None:
            echo(f"running on Ray ({backend.describe()})")
        yield backend
