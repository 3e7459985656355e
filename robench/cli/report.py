"""``robench report RUN_DIR``: paper-layout tables (and, with ``--plots``, figures) of a run directory.

``--format html`` written to a file (``--out report.html``; the suffix alone implies the format) or with
``--standalone`` is the whole report as one self-contained page (:mod:`robench.report.html_report`):
what was evaluated, every layout that applies with bootstrap intervals (``--no-ci`` drops them), the
summary, the sanity flags and the figures embedded (``--no-figures`` leaves them out). ``--format html``
on stdout without ``--standalone`` stays the tables' HTML alone, a fragment to paste into a page.

The command is added to the ``robench`` group in ``robench/cli.py``. Tables go
to stdout (or ``--out``); notes on skipped layouts and figures, and the files
written, go to stderr so that stdout stays the table alone.

Besides the layouts, the default tables include ``curves`` and ``audit``, built from the records
(:mod:`robench.report.curves_tables`: robust accuracy at each budget from the robustness curves, and the
attack audit); ``--layout curves`` / ``--layout audit`` pick them like layouts (not with ``--paper``).

``--paper "001 Table 10"`` puts that table's own numbers (``reports/reproduce/papers.csv``,
:mod:`robench.report.paper`) beside robench's, in the table's layout, with the AUC population
the paper used and (001 Tables 9-10) the distortion on the 0-255 scale, unless
``--population`` / ``--scale`` say otherwise.
"""

from __future__ import annotations

from pathlib import Path

import click

from robench.cli.params import NonEmptyPath
from robench.core.errors import ConfigError
from robench.report.curves_tables import RECORD_TABLES, record_tables
from robench.report.paper import DEFAULT_PAPERS_FILE, PAPER_TABLES, PaperNumbers, default_population
from robench.report.tables import DEFAULT_ORDER, DISTORTION_SCALES, FORMATS, LAYOUTS, PAPER_LAYOUTS, TableOptions
from robench.report.tables.layouts import DISTORTION_255
from robench.scoring import records as R
from robench.scoring.metrics import DEFAULT_POPULATION, POPULATIONS, population

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
    raise ConfigError(
        f"--out {out} has {what}, which names no table format; pass --format {'|'.join(FORMATS)}, "
        f"or use a suffix ({known}){hint}"
    )


MAX_RESAMPLES = 1_000_000  # the count matrix is resamples x samples
PAPER_SCALE = 255  # with --paper: the 0-255 pixel scale of 001 Tables 9-10's distortion


def resolve_paper_options(
    paper: PaperNumbers | None, layouts: tuple[str, ...], population_name: str | None, scale: str | None
) -> tuple[tuple[str, ...], TableOptions, list[str]]:
    """(layouts, options, notes) for ``--paper``, ``--layout``, ``--population`` and ``--scale``.

    Without ``--paper``: the layouts as given, population ``successful``, scale 1. With it: the
    paper table's layout (``--layout`` may only name it), its population and the 0-255 scale.
    """
    if population_name is not None:
        population(population_name)  # a misspelt population fails before the records are read
    notes: list[str] = []
    if paper is None:
        options = TableOptions(population_name or DEFAULT_POPULATION, int(scale) if scale else 1)
        return layouts, options, notes
    wanted = paper.table.layout
    other = [name for name in layouts if name != wanted]
    if other:
        raise ConfigError(
            f"--paper {paper.table.name} is a '{wanted}' table; --layout {other[0]} cannot show it "
            f"(drop --layout or pass --layout {wanted})"
        )
    own = default_population(paper.table)
    if population_name is not None and own is not None and population_name != own:
        notes.append(f"--population {population_name}: {paper.table.name} used '{own}' ({paper.table.reason})")
    if scale is not None and int(scale) != PAPER_SCALE and (paper.numbers["metric"] == DISTORTION_255).any():
        raise ConfigError(
            f"--scale {scale}: {paper.table.name} prints its distortion on the 0-255 scale; "
            "pass --scale 255 or leave --scale out"
        )
    options = TableOptions(population_name or own or DEFAULT_POPULATION, int(scale) if scale else PAPER_SCALE)
    return (wanted,), options, notes


@click.command(name="report")
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default=None,
    help="Table format [default: from --out's suffix; markdown on stdout]. "
    "html into a file (or with --standalone): the full self-contained report.",
)  # fmt: skip
@click.option(
    "--layout",
    "layouts",
    multiple=True,
    metavar="NAME",
    help=f"Layout (repeatable): {', '.join([*LAYOUTS.names(), *RECORD_TABLES])} "
    "[default: all that apply; summary for csv/html only].",
)
@click.option(
    "--out",
    type=NonEmptyPath(dir_okay=False, path_type=Path),
    default=None,
    help="File to write the tables to [default: stdout].",
)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option(
    "--ci/--no-ci", default=None,
    help="Show 95% bootstrap confidence intervals, e.g. 84.3 [82.1, 86.0] "
    "[default: on for the HTML report, off otherwise].",
)  # fmt: skip
@click.option("--resamples", type=int, default=1000, show_default=True, help="Bootstrap resamples for --ci.")
@click.option("--best/--no-best", default=True, show_default=True, help="Mark the best value among the models in bold.")
@click.option(
    "--standalone",
    is_flag=True,
    help="Wrap LaTeX in a complete, compilable document; with html, the full report (also on stdout).",
)
@click.option("--plots", is_flag=True, help="Also write figures (PNG and PDF).")
@click.option(
    "--plots-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for figures (implies --plots) [default: RUN_DIR/plots].",
)
@click.option(
    "--figures/--no-figures", default=True, show_default=True, help="Embed the figures in the HTML report (base64 PNG)."
)
@click.option(
    "--paper", "paper_name", metavar="'PAPER Table N'", default=None,
    help="Show that paper table's own numbers beside robench's, e.g. '001 Table 10' or 001-t10 "
    f"(known: {', '.join(PAPER_TABLES)}); "
    "builds its layout, with its AUC population and the 0-255 distortion scale.",
)  # fmt: skip
@click.option(
    "--paper-dataset",
    metavar="DATASET",
    default=None,
    help="With --paper: show the paper's numbers for this dataset (e.g. CIFAR-10) even though the run is on another "
    "(the caption says so).",
)
@click.option(
    "--papers-file", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None,
    help=f"The papers' numbers, read with --paper [default: {DEFAULT_PAPERS_FILE} under the current folder, "
    "else the repository root].",
)  # fmt: skip
@click.option(
    "--population", "population_name", metavar="NAME", default=None,
    help="AUC population of the AUC cells: "
    f"{', '.join(f'{p.name} ({p.metric})' for p in POPULATIONS.values())} "
    f"[default: {DEFAULT_POPULATION}; with --paper the paper's].",
)  # fmt: skip
@click.option(
    "--scale",
    type=click.Choice([str(s) for s in DISTORTION_SCALES]),
    default=None,
    help="Distortion scale of the white-box table: 1 = the model's input units ([0, 1]), "
    "255 = the 0-255 pixel scale [default: 1; with --paper 255].",
)
def report(
    run_dir: Path,
    fmt: str | None,
    layouts: tuple[str, ...],
    out: Path | None,
    force: bool,
    ci: bool | None,
    resamples: int,
    best: bool,
    standalone: bool,
    plots: bool,
    plots_dir: Path | None,
    figures: bool,
    paper_name: str | None,
    paper_dataset: str | None,
    papers_file: Path | None,
    population_name: str | None,
    scale: str | None,
) -> None:
    """Tables in the layouts of the papers (001 Tables 7-11, 004 Tables 1-2) from a run directory.

    \b
    With --paper, the paper's own numbers stand beside robench's:
      robench report RUN_DIR --paper "001 Table 10"          # white-box layout, AUC paired, Dist. (0-255)
      robench report RUN_DIR --paper 001-t7 --population successful

    \b
    One self-contained HTML page (tables with intervals, summary, sanity flags, figures; no network):
      robench report RUN_DIR --out report.html
    """
    from robench.core.provenance import atomic_write_text
    from robench.report.paper import load_paper_table
    from robench.report.rundir import load_run_dir
    from robench.report.tables import build_tables, render_tables, with_paper_columns

    fmt = resolve_format(fmt, out)
    if out is not None and out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    if not 1 <= resamples <= MAX_RESAMPLES:
        raise ConfigError(f"--resamples must be between 1 and {MAX_RESAMPLES:,}, got {resamples}")
    if standalone and fmt not in ("latex", "html"):
        raise ConfigError(f"--standalone applies to --format latex or html, not {fmt}")
    full_html = fmt == "html" and (
        out is not None or standalone
    )  # the report page; html on stdout alone stays the tables' fragment
    if not figures and not full_html:
        raise ConfigError(
            "--no-figures applies to the HTML report (--format html with --out or --standalone); "
            "--plots writes figure files"
        )
    if ci is None:
        ci = full_html
    for name in layouts:
        if name not in RECORD_TABLES:
            LAYOUTS.get(name)  # a misspelt layout fails before the records are read
    paper = load_paper_table(paper_name, papers_file) if paper_name is not None else None
    if paper_dataset is not None and paper is None:
        raise ConfigError("--paper-dataset applies with --paper (which paper table's numbers to show)")
    layouts, options, option_notes = resolve_paper_options(paper, layouts, population_name, scale)
    run = load_run_dir(run_dir)
    summary = run.flagged_summary()
    intervals = None
    if ci:
        from robench.report.bootstrap import bootstrap_intervals

        intervals = bootstrap_intervals(run.records, n_resamples=resamples, level=0.95, seed=0)
    defaults = (
        DEFAULT_ORDER if fmt in ("csv", "html") else PAPER_LAYOUTS
    )  # the long summary table only where it reads well
    named = [name for name in layouts if name not in RECORD_TABLES]
    tables, notes = (
        build_tables(summary, run.model_meta(), named or None, intervals, defaults, options)
        if named or not layouts
        else ([], [])
    )
    wanted_records = [name for name in layouts if name in RECORD_TABLES]
    if wanted_records or (not layouts and paper is None):  # the paper's tables stand alone with --paper
        extra, extra_notes = record_tables(run.records, wanted_records or None, resamples if ci else None)
        at = next((i for i, t in enumerate(tables) if t.layout == "summary"), len(tables))
        tables[at:at] = extra
        notes += extra_notes
    if not tables:
        raise ConfigError(f"no table layout applies to {run_dir}")
    notes = option_notes + notes
    if (
        options.distortion_metric == DISTORTION_255
        and R.INPUT_RANGE not in run.records
        and any(t.layout == "white-box" for t in tables)
    ):
        notes.append(
            "the run's records predate the input-range column: its distortion on the 0-255 scale is '-' "
            "(rerun to fill it)"
        )
    if paper is not None:
        tables, paper_notes = zip(
            *(with_paper_columns(t, paper, run.model_meta(), options, paper_dataset) for t in tables)
        )
        tables = list(tables)
        notes += [n for part in paper_notes for n in part]
    for note in notes:
        click.echo(f"note: {note}", err=True)
    plots_folder = None
    if plots or plots_dir is not None:
        plots_folder = plots_dir or (run.path if run.path.is_dir() else run.path.parent) / "plots"
    if full_html:
        from robench.report.html_report import draw_figures, render_report

        drawn, figure_notes = draw_figures(run, plots_folder) if figures else ([], [])
        for note in figure_notes:
            click.echo(f"note: {note}", err=True)
        text = render_report(
            run, tables, drawn, notes=notes + figure_notes, best=best, resamples=resamples if ci else None
        )
        if plots_folder is not None:
            click.echo(f"wrote {len(drawn)} figures (PNG and PDF) under {plots_folder}", err=True)
            plots_folder = None  # drawn once, for both
    else:
        text = render_tables(tables, fmt, best=best, standalone=standalone)
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        atomic_write_text(out, text)
        figures_text = f" and {len(drawn)} figures embedded" if full_html and figures else ""
        click.echo(f"wrote {out} ({', '.join(t.layout for t in tables)}{figures_text})", err=True)
    if plots_folder is not None:
        from robench.report.plots import plot_run_dir

        result = plot_run_dir(run, plots_folder)
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(f"wrote {len(result.files)} figure files under {plots_folder}", err=True)
