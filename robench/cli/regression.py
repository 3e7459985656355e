"""``robench baseline`` and ``robench check``: record a run's metrics with bootstrap intervals,
and gate later runs on them.

``check`` exits 0 on a pass, 1 on a real regression only, and 2 (one line,
``robench: error: ...``) on anything it cannot judge; see :mod:`robench.report.regression`.
With ``--junit FILE`` and ``--markdown FILE`` it also writes the verdict for CI systems
(:mod:`robench.report.gate_formats`), whatever the verdict, before exiting with the same code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import click

from robench.cli.params import NonEmptyPath
from robench.core.config import parse_assignments
from robench.core.errors import ConfigError, RobenchError
from robench.core.files import one_line, shown
from robench.core.provenance import atomic_write_text
from robench.report import gate_formats
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
@click.option(
    "--junit",
    "junit_file",
    type=NonEmptyPath(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a JUnit XML report (one test case per baseline value) for CI systems, whatever the verdict.",
)
@click.option(
    "--markdown",
    "markdown_file",
    type=NonEmptyPath(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a short Markdown summary (verdict, the values that moved) for a CI job page.",
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
    junit_file: Path | None,
    markdown_file: Path | None,
) -> None:
    """Compare RUN_DIR's metrics with a baseline.

    Exit 0 on a pass, 1 when a metric got worse or went missing (or, with --two-sided, better), 2 when the run
    cannot be judged against the baseline: a malformed or empty baseline, an unreadable run, a run without its
    run.json, records outside the model's classes, other models, threats, weights (or weights the baseline does
    not record), seeds or sample counts. --junit and --markdown are written (replaced atomically) in every one
    of these cases; a file that cannot be written is exit 2.
    """
    _check_report_paths(baseline_file, junit_file, markdown_file)
    properties = {"run": str(run_dir), "baseline": str(baseline_file)}
    started = time.perf_counter()
    try:
        report = check_run(
            run_dir,
            baseline_file,
            parse_tolerances(tolerance),
            two_sided=two_sided,
            allow_changed_models=allow_changed_models,
        )
    except (RobenchError, OSError) as exc:  # cannot judge: the reports say why, then the same one-line error
        reason, seconds = _reason(exc), time.perf_counter() - started
        _write_reports(
            (junit_file, lambda: gate_formats.junit_cannot_judge(reason, seconds=seconds, properties=properties)),
            (markdown_file, lambda: gate_formats.markdown_cannot_judge(reason)),
            also=reason,
        )
        if isinstance(exc, OSError):  # an unreadable input is "cannot judge" too: exit 2, not 1 (a regression)
            raise ConfigError(reason) from None
        raise
    seconds = time.perf_counter() - started
    _write_reports(
        (junit_file, lambda: gate_formats.junit_xml(report, seconds=seconds, properties=properties)),
        (markdown_file, lambda: gate_formats.markdown_summary(report, run=run_dir, baseline=baseline_file)),
    )
    table = format_report(report, verbose=verbose)
    if table:
        click.echo(table)
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo(report.verdict())
    if report.failed:
        ctx.exit(1)


def _check_report_paths(baseline_file: Path, *reports: Path | None) -> None:
    """--junit and --markdown name two different files, neither of them the baseline (which they would replace)."""
    given = [path for path in reports if path is not None]
    resolved = [path.resolve() for path in given]
    if baseline_file.resolve() in resolved:
        raise ConfigError(f"--junit and --markdown must not name the baseline file {shown(baseline_file)}")
    if len(set(resolved)) < len(resolved):
        raise ConfigError(f"--junit and --markdown name the same file {shown(given[0])}; pass two different files")


def _reason(exc: BaseException) -> str:
    """The one-line reason the CLI prints for ``exc`` (without ``robench: error:``)."""
    if isinstance(exc, OSError):
        return one_line(f"{exc.strerror or exc}{f': {shown(exc.filename)}' if exc.filename else ''}")
    return one_line(str(exc))


def _write_reports(*reports: tuple[Path | None, Callable[[], str]], also: str | None = None) -> None:
    """Write each (path, its text) atomically where a path is given; a file that cannot be written is a one-line
    ConfigError (exit 2, never exit 1, which means a regression), after ``also`` (the reason check could not judge)
    where given."""
    for path, text in reports:
        if path is None:
            continue
        try:
            atomic_write_text(path, text())
        except OSError as exc:
            problem = f"cannot write {shown(path)}: {exc.strerror or exc}"
            raise ConfigError(f"{also}; also {problem}" if also else problem) from None
