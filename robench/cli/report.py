"""``robench report RUN_DIR``: paper-layout tables (and, with ``--plots``, figures) of a run directory.

The command is added to the ``robench`` group in ``robench/cli.py``. Tables go
to stdout (or ``--out``); notes on skipped layouts and figures, and the files
written, go to stderr so that stdout stays the table alone.
"""

from __future__ import annotations

from pathlib import Path

import click

from robench.cli.params import NonEmptyPath

from robench.core.errors import ConfigError
from robench.report.tables import DEFAULT_ORDER, FORMATS, LAYOUTS, PAPER_LAYOUTS

SUFFIX_FORMATS = {".tex": "latex", ".md": "markdown", ".csv": "csv", ".html": "html", ".htm": "html"}
DEFAULT_FORMAT = "markdown"


def resolve_format(fmt: str | None, out: Path | None) -> str:
    """``--format``, else the one ``--out``'s suffix implies, else (on stdout) Markdown.

    An ``--out`` whose suffix implies no format (``x.pdf``, ``tables``) without ``--format``
    is an error naming the formats to pass, rather than Markdown in a file that claims otherwise.
    """
    if fmt is not None:
        return fmt
    if out is None:
        return DEFAULT_FORMAT
    suffix = out.suffix.lower()
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    known = ", ".join(f"{s} {f}" for s, f in SUFFIX_FORMATS.items())
    what = f"suffix '{out.suffix}'" if out.suffix else "no suffix"
    hint = f" (for a PDF: --out {out.with_suffix('.tex')} --standalone, then pdflatex)" if suffix == ".pdf" else ""
    raise ConfigError(f"--out {out} has {what}, which names no table format; pass --format {'|'.join(FORMATS)}, or use a suffix ({known}){hint}")


MAX_RESAMPLES = 1_000_000  # the count matrix is resamples x samples


@click.command(name="report")
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="Table format [default: from --out's suffix; markdown on stdout].")
@click.option("--layout", "layouts", multiple=True, metavar="NAME", help=f"Layout (repeatable): {', '.join(LAYOUTS.names())} [default: all that apply; summary for csv/html only].")
@click.option("--out", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None, help="File to write the tables to [default: stdout].")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--ci/--no-ci", default=False, show_default=True, help="Show 95% bootstrap confidence intervals, e.g. 84.3 [82.1, 86.0].")
@click.option("--resamples", type=int, default=1000, show_default=True, help="Bootstrap resamples for --ci.")
@click.option("--best/--no-best", default=True, show_default=True, help="Mark the best value among the models in bold.")
@click.option("--standalone", is_flag=True, help="Wrap LaTeX (or HTML) in a complete, compilable document.")
@click.option("--plots", is_flag=True, help="Also write figures (PNG and PDF).")
@click.option("--plots-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder for figures (implies --plots) [default: RUN_DIR/plots].")
def report(
    run_dir: Path, fmt: str | None, layouts: tuple[str, ...], out: Path | None, force: bool, ci: bool, resamples: int,
    best: bool, standalone: bool, plots: bool, plots_dir: Path | None,
) -> None:
    """Tables in the layouts of the papers (001 Tables 7-11, 004 Tables 1-2) from a run directory."""
    from robench.core.provenance import atomic_write_text
    from robench.report.rundir import load_run_dir
    from robench.report.tables import build_tables, render_tables

    fmt = resolve_format(fmt, out)
    if out is not None and out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    if not 1 <= resamples <= MAX_RESAMPLES:
        raise ConfigError(f"--resamples must be between 1 and {MAX_RESAMPLES:,}, got {resamples}")
    if standalone and fmt not in ("latex", "html"):
        raise ConfigError(f"--standalone applies to --format latex or html, not {fmt}")
    for name in layouts:
        LAYOUTS.get(name)  # a misspelt layout fails before the records are read
    run = load_run_dir(run_dir)
    summary = run.summary()
    intervals = None
    if ci:
        from robench.report.bootstrap import bootstrap_intervals

        intervals = bootstrap_intervals(run.records, n_resamples=resamples, level=0.95, seed=0)
    defaults = DEFAULT_ORDER if fmt in ("csv", "html") else PAPER_LAYOUTS  # the long summary table only where it reads well
    tables, notes = build_tables(summary, run.model_meta(), list(layouts) or None, intervals, defaults)
    if not tables:
        raise ConfigError(f"no table layout applies to {run_dir}")
    for note in notes:
        click.echo(f"note: {note}", err=True)
    text = render_tables(tables, fmt, best=best, standalone=standalone)
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        atomic_write_text(out, text)
        click.echo(f"wrote {out} ({', '.join(t.layout for t in tables)})", err=True)
    if plots or plots_dir is not None:
        from robench.report.plots import plot_run_dir

        folder = plots_dir or (run.path if run.path.is_dir() else run.path.parent) / "plots"
        result = plot_run_dir(run, folder)
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(f"wrote {len(result.files)} figure files under {folder}", err=True)
