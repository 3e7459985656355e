"""``run``: one model under its threat models, on the local backend or on Ray, into records, summary and files.

The work is laid out by :class:`robench.runs.plan.RunPlan` (samples, batches, the parts of each
threat, their keys in the part store), executed by the driver (:mod:`robench.runs.driver`) on a
backend (:mod:`robench.runs.backend`: this process, or Ray), and merged by
:meth:`~robench.runs.plan.RunPlan.finish`. The same task functions compute the same parts on either
backend, so the records do not depend on where they ran.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from robench.core.errors import ConfigError
from robench.runs.backend import open_backend
from robench.runs.driver import run_plans
from robench.runs.lock import output_lock
from robench.runs.output import format_summary, with_sanity_flags, write_run
from robench.runs.part_work import derive_seed
from robench.runs.parts import PARTS_DIR, part_key
from robench.runs.plan import RunPlan, RunResult, select_samples
from robench.runs.prepare import Prepared, prepare
from robench.specs.run_config import RunConfig

if TYPE_CHECKING:
    from robench.runs.ray_backend import RayBackend
    from robench.runs.ray_cluster import RaySettings

__all__ = [
    "PARTS_DIR",
    "RunConfig",
    "RunPlan",
    "RunResult",
    "derive_seed",
    "format_summary",
    "part_key",
    "prepare",
    "run",
    "select_samples",
    "with_sanity_flags",
    "write_run",
]


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

    ``prepared`` (from :func:`robench.runs.prepare.prepare` of the same config) skips the
    preparation, so a suite loads and validates each pair once. With ``out``, every (threat,
    attack, batch) part of the records goes through the part store in ``out/parts/`` as soon as it
    is computed (:mod:`robench.runs.parts`): rerunning the same command reuses finished parts.
    The run holds ``out``'s lock (:mod:`robench.runs.lock`) while it writes; a second process
    writing there gets a one-line error, or waits with ``wait=True``.

    ``ray`` (a :class:`~robench.runs.ray_cluster.RaySettings`, or a backend from
    :func:`robench.runs.ray_backend.connect`): the parts run as Ray tasks, the driver alone
    writes, and the records equal this process's at the tasks' thread count.
    """
    if not isinstance(config, RunConfig):
        raise ConfigError(
            f"run() takes a RunConfig (robench.RunConfig(model=..., threat=...)), got {type(config).__name__}"
        )
    if out is not None and not isinstance(out, (str, Path)):
        raise ConfigError(f"run()'s out must be a folder path (str or Path), got {type(out).__name__}")
    if prepared is not None and not isinstance(prepared, Prepared):
        raise ConfigError(
            f"run()'s prepared must come from robench.runs.prepare.prepare, got {type(prepared).__name__}"
        )
    if out is None:
        return _run(config, None, progress, echo, prepared, ray)
    out = Path(out)
    with output_lock(out, wait=wait):
        return _run(config, out, progress, echo, prepared, ray)


def _run(
    config: RunConfig,
    out: Path | None,
    progress: bool,
    echo: Callable[[str], None],
    prepared: Prepared | None,
    ray: RayBackend | RaySettings | None,
) -> RunResult:
    if prepared is None:
        prepared = prepare(config)
    elif prepared.config != config:
        raise ValueError("run() was given a prepared pair of another config")
    with open_backend(ray) as backend:
        return run_plans(backend, [RunPlan(config, out, prepared, progress, echo)])[0]
