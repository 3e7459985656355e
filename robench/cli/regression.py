"""``robench baseline`` and ``robench check``: record a run's metrics with bootstrap intervals,
and gate later runs on them.

``check`` exits 0 on a pass, 1 on a real regression only, and 2 (one line,
``robench: error: ...``) on anything it cannot judge; see :mod:`robench.report.regression`.
"""

from __future__ import annotations

from pathlib import Path

import click

from robench.cli.params import NonEmptyPath
from robench.core.config import parse_assignments
from robench.core.errors import ConfigError
from robench.report.regression import KEYS, CheckReport, check_run, write_baseline
from robench.scoring.metrics import SUMMARY_KEYS

SHOWN_COLUMNS = [*KEYS, "status", "baseline", "current", "delta", "allowed_low", "allowed_high", "note"]


def parse_tolerances(items: tuple[str, ...]) -> dict[str, float]:
    """``("auc_roc=0.02", ...)`` -> ``{"auc_roc": 0.02}``; metric names are checked by ``check_run``."""
    tolerances = {}
    for metric, text in parse_assignments(items, what="--tolerance").items():
        try:
            tolerances[metric] = float(text)
        except ValueError:
            raise ConfigError(f"--tolerance {metric}={text}: '{text}' is not a number") from None
    return tolerances


def format_report(report: CheckReport, verbose: bool = False) -> str:
    """The rows that moved (all rows with ``verbose``) as a fixed-width table, or ``""`` when there are none."""
    table = report.rows if verbose else report.table
    if table.empty:
        return ""
    shown = table[SHOWN_COLUMNS].copy()
    shown["note"] = shown["note"].replace("", "-")
    return shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4f}")


@click.command("baseline")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out", type=NonEmptyPath(dir_okay=False, path_type=Path), required=True, help="Baseline JSON file to write."
)
@click.option(
    "--resamples",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Bootstrap resamples per attack.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resampling.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def baseline(run_dir: Path, out: Path, resamples: int, seed: int, force: bool) -> None:
    """Write every summary metric of RUN_DIR with its 95% bootstrap interval to a baseline file.

    RUN_DIR must be what 'robench run' or 'robench suite' wrote, run.json included: the baseline records each
    model's weights (content hash) and each pair's seed, and the records' classes are checked against the dataset's.
    """
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    rows = write_baseline(run_dir, out, n_resamples=resamples, seed=seed)
    groups = rows[SUMMARY_KEYS].drop_duplicates()
    click.echo(
        f"wrote {len(rows)} baseline values ({groups['model'].nunique()} model(s), {len(groups)} attack(s)) to {out}"
    )


@click.command("check")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--baseline",
    "baseline_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Baseline file from 'robench baseline'.",
)
@click.option(
    "--tolerance",
    multiple=True,
    metavar="METRIC=VALUE",
    help="Absolute tolerance of a metric instead of its bootstrap interval (repeatable).",
)
@click.option(
    "--two-sided",
    is_flag=True,
    help="Fail on moves beyond tolerance in either direction (a broken attack makes a defense look better).",
)
@click.option("--verbose", is_flag=True, help="Show every baseline value, not only those that moved.")
@click.option(
    "--allow-changed-models",
    is_flag=True,
    help="Compare models whose weights (content hash) differ from the baseline's, with a note, instead of exit 2.",
)
@click.pass_context
def check(
    ctx: click.Context,
    run_dir: Path,
    baseline_file: Path,
    tolerance: tuple[str, ...],
    two_sided: bool,
    verbose: bool,
    allow_changed_models: bool,
) -> None:
    """Compare RUN_DIR's metrics with a baseline.

    Exit 0 on a pass, 1 when a metric got worse or went missing (or, with --two-sided, better), 2 when the run
    cannot be judged against the baseline: a malformed or empty baseline, an unreadable run, a run without its
    run.json, records outside the model's classes, other models, threats, weights (or weights the baseline does
    not record), seeds or sample counts.
    """
    report = check_run(
        run_dir,
        baseline_file,
        parse_tolerances(tolerance),
        two_sided=two_sided,
        allow_changed_models=allow_changed_models,
    )
    table = format_report(report, verbose=verbose)
    if table:
        click.echo(table)
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo(report.verdict())
    if report.failed:
        ctx.exit(1)
