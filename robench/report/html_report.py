"""One self-contained HTML page of a run or suite: what was evaluated, the tables, the sanity flags and the figures.

``robench report RUN_DIR --out report.html`` (or ``--format html --standalone``) writes it. The page
holds, in order: a header of what was evaluated (each model with its content hash, each run's threats,
attacks, n and seed, the package versions and git revisions of run.json), every table layout that
applies (the paper layouts of :mod:`robench.report.tables`, the worst-case layout, the robustness-curve
and attack-audit tables of :mod:`robench.report.curves_tables`, then the summary table; with bootstrap
intervals, :mod:`robench.report.bootstrap`, unless ``--no-ci``), the sanity flags (:mod:`robench.runs.sanity`)
and the figures of :mod:`robench.report.plots`, embedded as base64
PNG ``data:`` URIs, plus a table of contents.

Nothing on the page refers outside it: no script, no stylesheet or font to fetch, every image a
``data:`` URI, every link a ``#fragment``; a Content-Security-Policy ``<meta>`` (``default-src
'none'``) makes a browser refuse anything else. The same run renders the same bytes: the page holds
no time of its own (only the ``created_at`` of each run.json), and the tables' element ids are fixed.
"""

from __future__ import annotations

import base64
import html
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from robench.core.errors import ConfigError
from robench.report.rundir import RUN_FILE, RunDir
from robench.report.tables import LAYOUTS, Table, render
from robench.runs.sanity import flag_values, one_per_check
from robench.scoring import records as R

# Only inline styles and data: images may load; no script, font, frame or connection at all.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
PNG_DATA_URI = "data:image/png;base64,"
SANITY_FILE = "sanity.csv"
SANITY_COLUMNS = (R.MODEL, R.THREAT, "check", "flagged", "value", "threshold", "detail")
HASH_SHOWN = 12  # hex digits of a content hash or git revision shown (the full one is the cell's tooltip)
HASH_COLUMNS = ("content hash", "git revision")
SUMMARY_LAYOUT = "summary"

# Figure kinds of robench.report.plots, by the stem prefix save_figure gave them.
FIGURE_KINDS = {
    "roc": "ROC curves (positives: clean-correct clean inputs; negatives: their successful adversarial inputs)",
    "kd-hist": "K-density scores of clean vs adversarial inputs (001 Fig. 5)",
    "budget": "Robust accuracy vs attack budget",
    "features": "Test features of 2-D feature models (001 Fig. 1)",
    "curve": "Robustness curves: robust accuracy vs eps per norm and detector, 95% bootstrap bands, budgets marked",
}

CSS = """
:root { color-scheme: light; --fg: #1d2330; --muted: #5b6475; --line: #d5dae3; --band: #f4f6f9; --accent: #2f5d9e; \
--flag: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; \
color: var(--fg); background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 28px 48px; }
header.page { border-bottom: 3px solid var(--accent); padding-bottom: 10px; margin-bottom: 16px; }
header.page h1 { margin: 0 0 4px; font-size: 24px; }
header.page p { margin: 2px 0; color: var(--muted); }
h2 { font-size: 19px; margin: 30px 0 8px; padding-bottom: 3px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 20px 0 6px; }
code { font: 12px/1.3 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
nav.toc { background: var(--band); border: 1px solid var(--line); border-radius: 6px; padding: 8px 16px; \
margin: 12px 0 4px; }
nav.toc h2 { border: 0; margin: 4px 0; font-size: 15px; }
nav.toc ol { margin: 2px 0 4px; padding-left: 22px; }
nav.toc ol ol { font-size: 13px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.facts { display: flex; flex-wrap: wrap; gap: 8px 24px; margin: 8px 0; }
.facts div { min-width: 120px; }
.facts b { display: block; font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); \
font-weight: 600; }
.scroll { overflow-x: auto; margin: 6px 0 14px; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; color: var(--muted); font-size: 12px; padding: 0 0 6px; \
max-width: 1180px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 9px; text-align: right; white-space: nowrap; }
th { background: var(--band); font-weight: 600; }
thead th { border-bottom: 2px solid #aab3c2; text-align: center; }
td:first-child, th:first-child, table.info td, table.info th { text-align: left; }
tbody tr:nth-child(even) td { background: #fafbfc; }
table.info td.wrap { white-space: normal; min-width: 150px; }
tr.flagged td { background: #fdecea !important; }
.flag { color: var(--flag); font-weight: 600; }
.ok { color: #1e7a34; }
.muted { color: var(--muted); font-size: 12px; }
ul.notes { color: var(--muted); font-size: 12.5px; margin: 4px 0; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; margin-top: 3px; }
footer { color: var(--muted); font-size: 12px; margin-top: 36px; border-top: 1px solid var(--line); padding-top: 6px; }
"""


@dataclass(frozen=True)
class Figure:
    """One figure of :mod:`robench.report.plots` as PNG bytes, named by its file stem (``roc-gm-white-box``)."""

    stem: str
    png: bytes

    @property
    def kind(self) -> str:
        return next((k for k in sorted(FIGURE_KINDS, key=len, reverse=True) if self.stem.startswith(k + "-")), "")


def figures_from_files(files: Iterable[Path]) -> list[Figure]:
    """The PNG files among ``files`` (a ``PlotResult.files``), read in the order they were written."""
    return [Figure(path.stem, path.read_bytes()) for path in files if path.suffix == ".png"]


def draw_figures(run: RunDir, folder: Path | None = None) -> tuple[list[Figure], list[str]]:
    """Every figure :func:`robench.report.plots.plot_run_dir` draws for ``run``: (figures, notes on skipped ones).

    Drawn into ``folder`` (kept) when given, else into a temporary folder that is removed.
    """
    from robench.report.plots import plot_run_dir

    if folder is not None:
        result = plot_run_dir(run, folder)
        return figures_from_files(result.files), result.notes
    with tempfile.TemporaryDirectory(prefix="robench-figures-") as tmp:
        result = plot_run_dir(run, Path(tmp), formats=("png",))  # the page embeds PNGs: no PDF to draw and throw away
        return figures_from_files(result.files), result.notes


def run_files(run: RunDir) -> list[Path]:
    """The run.json files of ``run`` in the order of ``run.runs`` (``load_run_dir`` reads them sorted)."""
    if run.path.is_file():
        sibling = run.path.parent / RUN_FILE
        return [sibling] if sibling.is_file() else []
    return sorted(run.path.rglob(RUN_FILE))


# ------------------------------------------------------------------------------------------------ run.json facts


def _get(mapping: Any, *keys: str) -> Any:
    """``mapping[k1][k2]...``, or None where a level is missing or not a mapping (run.json is read, not trusted)."""
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _threats(run: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    threats = run.get("threats")
    if not isinstance(threats, list):  # runs of one threat before --threat all existed
        threats = [run.get("threat")] if isinstance(run.get("threat"), Mapping) else []
    return [t for t in threats if isinstance(t, Mapping)]


def _labels(threat: Mapping[str, Any]) -> list[str]:
    attacks = threat.get("attacks")
    return [str(a.get("label")) for a in attacks if isinstance(a, Mapping)] if isinstance(attacks, list) else []


def _crafts_on_substitute(threat: Mapping[str, Any]) -> bool:
    """Whether the registered threat of this run.json entry crafts on the run's substitute (``needs_substitute``)."""
    from robench.specs.threats import THREATS

    name = threat.get("name")
    return isinstance(name, str) and name in THREATS and THREATS.get(name).needs_substitute


def models_frame(run: RunDir) -> pd.DataFrame:
    """One row per model (and substitute) named in run.json: what it is, its content hash and training accuracy."""
    rows: dict[str, dict[str, Any]] = {}
    for info in run.runs:
        for role, entry in (("model", info.get("model")), ("substitute", info.get("substitute"))):
            if not isinstance(entry, Mapping) or not entry.get("name"):
                continue
            name = str(entry["name"])
            if name in rows:
                rows[name]["role"] = "model" if "model" in (rows[name]["role"], role) else role
                continue
            accuracy = entry.get("clean_accuracy_at_training")
            rows[name] = {
                "model": name, "role": role, "defense": entry.get("defense"), "arch": entry.get("arch"),
                "dataset": entry.get("dataset"), "feature_dim": entry.get("feature_dim"),
                "clean accuracy at training": f"{100 * accuracy:.1f}%" if isinstance(accuracy, (int, float)) else None,
                "content hash": entry.get("content_hash"), "path": entry.get("path"),
            }  # fmt: skip
    for name in dict.fromkeys(run.records[R.MODEL].astype(str)):  # records without a run.json still name their model
        rows.setdefault(name, {"model": name, "role": "model"})
    return pd.DataFrame(list(rows.values()))


def runs_frame(run: RunDir) -> pd.DataFrame:
    """One row per run.json: its folder, model, threats and attacks, n, seed, device, precision, revision and date."""
    files = run_files(run)
    root = run.path if run.path.is_dir() else run.path.parent
    rows = []
    for i, info in enumerate(run.runs):
        folder = files[i].parent if i < len(files) else None
        where = folder.relative_to(root).as_posix() if folder is not None and folder.is_relative_to(root) else None
        threats = _threats(info)
        substitute = _get(info, "substitute", "name")
        rows.append({
            "folder": where or ".",
            "model": _get(info, "model", "name"),
            "threats": ", ".join(
                str(t.get("name")) + (f" (from {substitute})" if substitute and _crafts_on_substitute(t) else "")
                for t in threats
            ),
            "attacks": "; ".join(", ".join(_labels(t)) for t in threats),
            "n": info.get("samples", _get(info, "config", "n")),
            "seed": _get(info, "config", "seed"),
            "device": info.get("device"),
            "precision": _get(info, "execution", "precision") or _get(info, "config", "precision"),
            "git revision": info.get("git_revision"),
            "created": info.get("created_at"),
        })  # fmt: skip
    return pd.DataFrame(rows)


def versions_frame(run: RunDir) -> pd.DataFrame:
    """One row: package -> the version(s) the runs recorded (several when the runs differ), then the git revision(s)."""
    seen: dict[str, dict[str, None]] = {}
    for info in run.runs:
        versions = info.get("versions")
        for name, version in versions.items() if isinstance(versions, Mapping) else ():
            seen.setdefault(str(name), {})[str(version)] = None
    revisions = {str(info["git_revision"]): None for info in run.runs if info.get("git_revision")}
    if revisions:
        seen["git revision"] = revisions
    return pd.DataFrame([{name: ", ".join(versions) for name, versions in seen.items()}] if seen else [])


def sanity_frame(run: RunDir) -> tuple[pd.DataFrame | None, list[str]]:
    """The sanity checks of the run: RUN_DIR/sanity.csv (a suite's, with the record checks over all pairs)
    if there is one, else every run.json's ``sanity`` entries, plus the record checks neither holds, recomputed from
    the records (:meth:`RunDir.record_checks`); None when nothing was checked."""
    notes: list[str] = []
    top = run.path / SANITY_FILE if run.path.is_dir() else run.path.parent / SANITY_FILE
    frame = None
    if top.is_file():
        try:
            frame = pd.read_csv(top, keep_default_na=False, na_values=[""])
        except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
            notes.append(
                f"sanity: cannot read {top} "
                f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}); "
                "read run.json instead"
            )
        else:
            missing = [c for c in SANITY_COLUMNS if c not in frame]
            if missing:
                notes.append(f"sanity: {top} lacks column(s) {', '.join(missing)}; read run.json instead")
                frame = None
    if frame is None:
        entries = [
            e
            for info in run.runs
            if isinstance(info.get("sanity"), list)
            for e in info["sanity"]
            if isinstance(e, Mapping)
        ]
        frame = pd.DataFrame(entries).reindex(columns=list(SANITY_COLUMNS)) if entries else None
    # the record checks the runs did not record (--no-sanity, outputs older than a check) are recomputed, as the
    # tables' marks are (RunDir.flagged_summary): a dagger there always has its check here
    computed = run.record_checks()
    if frame is not None and len(frame):
        recorded = set(zip(frame[R.MODEL].astype(str), frame[R.THREAT].astype(str), frame["check"].astype(str)))
        keys = zip(computed[R.MODEL].astype(str), computed[R.THREAT].astype(str), computed["check"].astype(str))
        computed = computed[[key not in recorded for key in keys]]
    if len(computed):
        notes.append(
            f"sanity: {len(computed)} result(s) of the record checks ({', '.join(dict.fromkeys(computed['check']))}) "
            "recomputed from the records: the runs did not record them"
        )
        frame = computed if frame is None or frame.empty else pd.concat([frame, computed], ignore_index=True)
    if frame is None or frame.empty:
        return None, notes
    frame = one_per_check(frame[list(SANITY_COLUMNS)])
    frame["flagged"] = flag_values(frame["flagged"])
    return frame, notes


# ------------------------------------------------------------------------------------------------ rendering


def _e(value: Any) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and value != value) else str(value))


def _number(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return _e(value)


def _short(text: str) -> str:
    """The first digits of a hash (a revision keeps its ``+dirty``; a list of them is shortened each)."""
    if ", " in text:
        return ", ".join(_short(part) for part in text.split(", "))
    head, plus, rest = text.partition("+")
    return head[:HASH_SHOWN] + plus + rest


def info_table(
    frame: pd.DataFrame, wrap: Sequence[str] = (), code: Sequence[str] = (), row_class: Sequence[str] | None = None
) -> str:
    """A plain table of strings, every cell escaped; ``wrap`` columns may break lines, ``code`` ones are monospace.

    A ``content hash`` or ``git revision`` column shows its first digits with the full value as the cell's tooltip.
    """
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    body = []
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = []
        for column, value in zip(frame.columns, row):
            text = _e(value)
            if column in HASH_COLUMNS and len(text) > HASH_SHOWN:
                text = f'<code title="{text}">{_short(text)}</code>'
            elif column in code and text:
                text = f"<code>{text}</code>"
            cells.append(f'<td class="wrap">{text}</td>' if column in wrap else f"<td>{text}</td>")
        cls = f' class="{row_class[i]}"' if row_class is not None and row_class[i] else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table class="info"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _sanity_html(frame: pd.DataFrame | None) -> str:
    if frame is None:
        return (
            "<p>No sanity check ran (<code>--no-sanity</code>, or the runs predate the checks): "
            "nothing was checked, which is not the same as passed.</p>"
        )
    shown = frame.assign(
        flagged=frame["flagged"].map(lambda f: "FLAGGED" if f else "quiet"),
        value=frame["value"].map(_number),
        threshold=frame["threshold"].map(_number),
    )
    flagged = int(frame["flagged"].sum())
    lead = (
        f'<p class="flag">{flagged} of {len(frame)} checks flagged: look there before trusting the numbers above.</p>'
        if flagged
        else f'<p class="ok">All {len(frame)} checks quiet.</p>'
    )
    classes = ["flagged" if f else "" for f in frame["flagged"]]
    note = (
        '<p class="muted">A check that does not apply to a model or threat has no row: '
        "a missing row means not checked. "
        "Threat <code>-</code>: a probe of the model itself.</p>"
    )
    return lead + info_table(shown, wrap=("detail",), code=("check",), row_class=classes) + note


def _figure_html(figure: Figure, index: int) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f'<figure id="figure-{index}"><img src="{PNG_DATA_URI}{data}" alt="{_e(figure.stem)}">'
        f"<figcaption>Figure {index}: <code>{_e(figure.stem)}</code></figcaption></figure>"
    )


def _section_id(table: Table) -> str:
    return f"table-{table.layout}"


def _layout_title(name: str) -> str:
    from robench.report.curves_tables import RECORD_TABLES

    description = LAYOUTS.get(name).description if name in LAYOUTS else RECORD_TABLES.get(name, name)
    return description[:1].upper() + description[1:]


def _facts(run: RunDir, models: pd.DataFrame, runs: pd.DataFrame) -> str:
    records = run.records
    counts = sorted({int(n) for n in runs["n"] if isinstance(n, (int, float))}) if "n" in runs else []
    seeds = sorted({str(s) for s in runs["seed"] if s is not None}) if "seed" in runs else []
    facts = {
        "models": ", ".join(map(str, models["model"])) if len(models) else "-",
        "threats": ", ".join(dict.fromkeys(records[R.THREAT].astype(str))),
        "attacks": str(records[[R.THREAT, R.ATTACK]].drop_duplicates().shape[0]) + " (threat x attack)",
        "n per run": "-" if not counts else (str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"),
        "seed": ", ".join(seeds) or "-",
        "runs": str(len(run.runs)),
        "records": f"{len(records):,}",
    }
    return '<div class="facts">' + "".join(f"<div><b>{_e(k)}</b>{_e(v)}</div>" for k, v in facts.items()) + "</div>"


def _own_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("robench")
    except metadata.PackageNotFoundError:
        return "unknown"


def render_report(
    run: RunDir,
    tables: Sequence[Table],
    figures: Sequence[Figure] = (),
    *,
    notes: Sequence[str] = (),
    best: bool = True,
    resamples: int | None = None,
    title: str | None = None,
) -> str:
    """The whole page as one string (see the module docstring); ``resamples`` None: the tables have no intervals."""
    if not tables:
        raise ConfigError(f"no table layout applies to {run.path}")
    models, runs, versions = models_frame(run), runs_frame(run), versions_frame(run)
    sanity, sanity_notes = sanity_frame(run)
    notes = [*notes, *sanity_notes]
    title = title or f"robench report: {run.path.name or run.path}"
    paper_tables = [t for t in tables if t.layout != SUMMARY_LAYOUT]
    summary_tables = [t for t in tables if t.layout == SUMMARY_LAYOUT]

    contents: list[tuple[str, str, list[tuple[str, str]]]] = [("evaluated", "What was evaluated", [])]
    if paper_tables:
        contents.append(("tables", "Tables", [(_section_id(t), _layout_title(t.layout)) for t in paper_tables]))
    if summary_tables:
        contents.append(("summary", "Summary", []))
    contents.append(("sanity", "Sanity flags", []))
    contents.append(("figures", f"Figures ({len(figures)})", []))

    def toc() -> str:
        items = []
        for anchor, text, children in contents:
            sub = "".join(f'<li><a href="#{a}">{_e(t)}</a></li>' for a, t in children)
            items.append(f'<li><a href="#{anchor}">{_e(text)}</a>' + (f"<ol>{sub}</ol>" if sub else "") + "</li>")
        return f'<nav class="toc"><h2>Contents</h2><ol>{"".join(items)}</ol></nav>'

    ci = (
        "Cells show the value and its 95% percentile-bootstrap interval, e.g. <code>84.3 [82.1, 86.0]</code> "
        f"({resamples:,} resamples of each "
        "model x threat x attack group's samples, seed 0)."
        if resamples
        else "No bootstrap intervals (<code>--no-ci</code>)."
    )
    best_text = " Bold: the best value of its column (or row) among the models, compared as displayed." if best else ""

    def table_block(table: Table, heading: str) -> str:
        return (
            f'<section id="{_section_id(table)}"><h3>{_e(heading)}</h3>'
            f'<div class="scroll">{render(table, "html", best=best)}</div></section>'
        )

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="robench report">',
        f"<title>{_e(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f'<header class="page"><h1>{_e(title)}</h1>'
        f"<p>Records below <code>{_e(run.path)}</code>; every number is recomputed from them.</p></header>",
        _facts(run, models, runs),
        toc(),
        '<section id="evaluated"><h2>What was evaluated</h2>',
        "<h3>Models</h3>",
        info_table(models, code=("path",)),
        "<h3>Runs</h3>" if len(runs) else "<p>No run.json next to the records: the runs' settings are unknown.</p>",
        info_table(runs, wrap=("attacks",), code=("folder", "git revision")) if len(runs) else "",
        "<h3>Software</h3>" if len(versions.columns) else "",
        info_table(versions, code=tuple(versions.columns)) if len(versions.columns) else "",
    ]
    if notes:
        parts.append('<h3>Notes</h3><ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</section>")
    if paper_tables:
        parts.append(f'<section id="tables"><h2>Tables</h2><p>{ci}{best_text}</p>')
        parts += [table_block(t, _layout_title(t.layout)) for t in paper_tables]
        parts.append("</section>")
    if summary_tables:
        parts.append(f'<section id="summary"><h2>Summary</h2><p>{ci}</p>')
        parts += [table_block(t, "Every metric per model, threat, attack and detector") for t in summary_tables]
        parts.append("</section>")
    parts.append(f'<section id="sanity"><h2>Sanity flags</h2>{_sanity_html(sanity)}</section>')
    parts.append('<section id="figures"><h2>Figures</h2>')
    if not figures:
        parts.append("<p>No figure (<code>--no-figures</code>, or none applies to these records).</p>")
    index = 0
    for kind in [*FIGURE_KINDS, ""]:
        group = [f for f in figures if f.kind == kind]
        if not group:
            continue
        parts.append(f"<h3>{_e(FIGURE_KINDS.get(kind, 'Other figures'))}</h3>")
        for figure in group:
            index += 1
            parts.append(_figure_html(figure, index))
    parts.append("</section>")
    parts += [
        f"<footer>Written by <code>robench report</code> (robench {_e(_own_version())}).</footer>",
        "</main>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(p for p in parts if p)
