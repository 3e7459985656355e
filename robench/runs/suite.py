"""Running a suite: every model x threat pair of a suite file (:mod:`robench.specs.suite_file`) at once, on one backend.

Each pair writes ``OUT/<model>/<threat>/`` (``OUT/<model>/<threat>-from-<substitute>/`` for transfer;
records, summary, run.json); the combined ``OUT/summary.csv`` concatenates their summaries.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from robench.core.provenance import atomic_write_text
from robench.runs.backend import Backend, open_backend
from robench.runs.driver import run_plans
from robench.runs.lock import output_lock
from robench.runs.output import SANITY_FLAGS, contained, with_sanity_flags
from robench.runs.plan import RunPlan, RunResult
from robench.runs.prepare import Loader, prepare
from robench.specs.suite_file import SuitePair, load_suite

if TYPE_CHECKING:
    from robench.runs.ray_backend import RayBackend
    from robench.runs.ray_cluster import RaySettings

__all__ = ["SuitePair", "load_suite", "run_suite", "suite_sanity"]


def run_suite(
    path: Path,
    out: Path,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    wait: bool = False,
    ray: RayBackend | RaySettings | None = None,
) -> pd.DataFrame:
    """Run every pair of the suite file into ``out`` (holding its lock, :mod:`robench.runs.lock`) and return the
    combined summary.

    ``ray`` (a :class:`~robench.runs.ray_backend.RaySettings` or a connected backend): every
    pair's parts run as Ray tasks, all pairs at once; the combined summary is the same as without.
    """
    pairs = load_suite(path, overrides)
    loader = Loader()  # every bundle and dataset is loaded once, however many pairs use it
    prepared = [prepare(pair.config, loader) for pair in pairs]  # validate every pair before spending time on any
    for pair, ready in zip(pairs, prepared):
        for note in ready.notes:
            echo(f"{pair.model_name} x {pair.folder}: {note}")
    with (
        output_lock(out, wait=wait),
        open_backend(ray, echo) as backend,
    ):  # after every pair is validated: bad input never waits for Ray
        return _run_pairs(pairs, prepared, out, progress, echo, backend)


def _run_pairs(
    pairs: list[SuitePair], prepared: list, out: Path, progress: bool, echo: Callable[[str], None], backend: Backend
) -> pd.DataFrame:
    """Every pair at once on ``backend``, each holding its folder's lock (as :func:`robench.runs.runner.run` holds
    it)."""
    folders = [contained(out, pair.model_name, pair.folder) for pair in pairs]  # every write stays inside OUT
    with ExitStack() as locks:
        for folder in folders:
            locks.enter_context(output_lock(folder))
        echo(f"running {len(pairs)} pairs: {', '.join(f'{pair.model_name} x {pair.folder}' for pair in pairs)}")
        plans = [
            RunPlan(pair.config, folder, ready, progress, echo) for pair, ready, folder in zip(pairs, prepared, folders)
        ]
        results = run_plans(backend, plans)
    sanity = suite_sanity(results)
    combined = with_sanity_flags(
        pd.concat([r.summary for r in results], ignore_index=True).drop(columns=SANITY_FLAGS), sanity
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.csv", combined.to_csv(index=False))
    atomic_write_text(out / "sanity.csv", sanity.to_csv(index=False))
    for row in sanity[sanity["flagged"]].itertuples() if len(sanity) else ():
        echo(f"sanity: {row.model} {row.threat}: {row.check} flagged ({row.detail})")
    return combined


def suite_sanity(results: list[RunResult]) -> pd.DataFrame:
    """Every pair's model probes, plus the record checks over all pairs at once: a model's black-box and
    white-box attacks run as separate pairs, and only together can the black-box one be seen to beat the other."""
    from robench.runs.record_checks import record_check_results
    from robench.runs.sanity import SANITY_CHECKS, attack_names_of, one_per_check, sanity_table

    # every pair's own checks (model probes, configuration checks); the record checks are redone over all pairs
    model_checks = [name for name in SANITY_CHECKS.names() if SANITY_CHECKS.get(name).kind != "records"]
    probes = [r.sanity[r.sanity["check"].isin(model_checks)] for r in results if len(r.sanity)]
    records = pd.concat([r.records for r in results], ignore_index=True)
    combined = sanity_table(record_check_results(records, attack_names_of([r.info for r in results])))
    frames = [f for f in (*probes, combined) if len(f)]
    if not frames:
        return combined
    return one_per_check(pd.concat(frames, ignore_index=True))
