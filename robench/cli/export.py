"""``robench export RUNDIR --format json|csv|robustbench``: a run directory's numbers for other tools.

The export goes to stdout, or with ``--out`` to a file, written atomically and never over an existing
one without ``--force``. Notes (models left out of a RobustBench export) and the file written go to
stderr, so that stdout stays the export alone. What each format holds: :mod:`robench.report.export`.
"""

from __future__ import annotations

from pathlib import Path

import click

from robench.cli.params import NonEmptyPath
from robench.core.errors import ConfigError
from robench.report.export import EXPORT_FORMATS


@click.command("export")
@click.argument("run_dir", metavar="RUNDIR", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    required=True,
    help="json or csv: one row per model x threat (worst case, budget, 95% intervals, provenance); "
    "robustbench: RobustBench's model-info JSON of an autoattack run.",
)
@click.option(
    "--out", type=NonEmptyPath(dir_okay=False, path_type=Path), default=None, help="File to write [default: stdout]."
)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def export(run_dir: Path, fmt: str, out: Path | None, force: bool) -> None:
    """Export RUNDIR (what 'robench run' or 'robench suite' wrote) as a flat table or RobustBench's model info.

    The 95% intervals are the reports' bootstrap (1,000 resamples, seed 0: the intervals of 'robench report --ci').

    \b
      robench export runs/gm-swb --format csv --out gm-swb.csv
      robench export runs/gm-aa --format robustbench --out Name2026Title.json
    """
    from robench.core.provenance import atomic_write_text
    from robench.report.export import export_text
    from robench.report.rundir import load_run_dir

    if out is not None and out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    text, notes = export_text(load_run_dir(run_dir), fmt)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        atomic_write_text(out, text)
        click.echo(f"wrote {out} ({fmt})", err=True)
