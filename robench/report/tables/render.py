"""Rendering built tables: LaTeX (booktabs), Markdown, CSV and HTML, all by pandas itself.

``Styler.to_latex`` (booktabs rules), ``Styler.to_html``, ``DataFrame.to_markdown`` and
``DataFrame.to_csv`` render the display frame of :mod:`.format`; best values are bold.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from robench.core.errors import ConfigError
from robench.core.registry import did_you_mean
from robench.report.tables.bounds import DAGGER
from robench.report.tables.format import display_frame, flat_columns
from robench.report.tables.labels import DOWN, UP
from robench.report.tables.table import Table

FORMATS = ("latex", "markdown", "csv", "html")
# Tables of more rows than this are longtables (they need \\usepackage{longtable}), which break across pages.
LONGTABLE_ROWS = 40
# Standalone documents are previews: landscape, small type and narrow columns so wide tables fit.
COMPACT_LATEX = [
    {"selector": "footnotesize", "props": ":;"},
    {"selector": "setlength", "props": ":{\\tabcolsep}{3pt};"},
]
STANDALONE_LATEX = (
    "\\documentclass{article}\n\\usepackage[landscape,margin=1.5cm]{geometry}\n"
    "\\usepackage{booktabs}\n\\usepackage{longtable}\n"
    "\\begin{document}\n%s\n\\end{document}\n"
)
STANDALONE_HTML = (
    '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>robench report</title>\n</head>\n'
    "<body>\n%s\n</body>\n</html>\n"
)
_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}  # fmt: skip
_LATEX_DAGGER = r"$^\dagger$"  # a bound's mark (bounds.DAGGER): pdflatex rejects the character itself


def _latex_text(text: str) -> str:
    """Escape a caption (Styler escapes cells and headers itself, but not the caption)."""
    return _arrows_to_latex("".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)).replace(DAGGER, _LATEX_DAGGER)


def _arrows_to_latex(label: Any) -> str:
    # Styler has escaped the label already; the arrows are not ASCII and pdflatex would reject them
    return str(label).replace(UP, r"$\uparrow$").replace(DOWN, r"$\downarrow$")


def _cell_to_latex(text: Any) -> str:
    # a paper's bound (``≤1.0``, see paper_columns) and the dagger of an upper bound (bounds.py) are not ASCII either
    return str(text).replace("\u2264", r"$\leq$").replace(DAGGER, _LATEX_DAGGER)


def _latex(table: Table, best: bool, compact: bool = False) -> str:
    frame, bold = display_frame(table, best)
    css = pd.DataFrame(np.where(bold, "textbf: --rwrap;", ""), index=bold.index, columns=bold.columns)
    styler = (
        frame.style.hide(axis="index")
        .format(_cell_to_latex, escape="latex")
        .format_index(_arrows_to_latex, escape="latex", axis=1)
        .apply(lambda _: css, axis=None)
    )
    long = len(frame) > LONGTABLE_ROWS  # a float cannot break across pages; a longtable can
    if compact and not long:
        styler = styler.set_table_styles(COMPACT_LATEX, overwrite=False)
    latex = styler.to_latex(
        hrules=True,
        caption=_latex_text(table.caption),
        label=table.label,
        position_float=None if long else "centering",
        position=None if long else "htbp",
        multicol_align="c",
        column_format="l" * len(table.rows) + "r" * (frame.shape[1] - len(table.rows)),
        environment="longtable" if long else "table",
    )
    # inside a longtable a size command would land in the first cell: set it around the environment instead
    return (
        "\\begingroup\\footnotesize\\setlength{\\tabcolsep}{3pt}\n" + latex + "\\endgroup\n"
        if compact and long
        else latex
    )


def _html(table: Table, best: bool) -> str:
    frame, bold = display_frame(table, best)
    css = pd.DataFrame(np.where(bold, "font-weight: bold;", ""), index=bold.index, columns=bold.columns)
    styler = (
        frame.style.hide(axis="index")
        .format(escape="html")
        .format_index(escape="html", axis=1)
        .apply(lambda _: css, axis=None)
        .set_caption(html.escape(table.caption))  # Styler escapes cells and headers, not the caption
        .set_uuid(
            table.layout.replace("-", "_")
        )  # a fixed id instead of a random one: the same run renders the same bytes
    )
    return styler.to_html()


def _markdown(table: Table, best: bool) -> str:
    frame, bold = display_frame(table, best)
    text = frame.astype(str).apply(lambda column: column.str.replace("|", "\\|", regex=False))
    text = text.where(~bold.to_numpy(), "**" + text + "**")
    text.columns = flat_columns(frame)
    return f"**{table.caption}**\n\n" + text.to_markdown(index=False, disable_numparse=True) + "\n"


def _csv(table: Table, best: bool) -> str:
    frame, _ = display_frame(table, best=False)  # plain text: no markup in a CSV
    frame.columns = flat_columns(frame)
    return frame.to_csv(index=False)


_RENDERERS: dict[str, Callable[[Table, bool], str]] = {
    "latex": _latex,
    "markdown": _markdown,
    "csv": _csv,
    "html": _html,
}


def render(table: Table, fmt: str, *, best: bool = True, standalone: bool = False) -> str:
    """One table as LaTeX (booktabs, via ``Styler.to_latex``), Markdown, CSV or HTML."""
    return render_tables([table], fmt, best=best, standalone=standalone)


def render_tables(tables: Sequence[Table], fmt: str, *, best: bool = True, standalone: bool = False) -> str:
    """Several tables in one text; ``standalone`` wraps LaTeX in a compilable document (HTML in a page).

    CSV holds one table as plain CSV; several are blocks, each after a ``# layout: caption`` line.
    """
    if fmt not in _RENDERERS:
        raise ConfigError(
            f"unknown table format '{fmt}'{did_you_mean(fmt, list(FORMATS))}; known: {', '.join(FORMATS)}"
        )
    if standalone and fmt not in ("latex", "html"):
        raise ConfigError(f"--standalone applies to the latex and html formats, not '{fmt}'")
    parts = [
        _latex(table, best, compact=standalone) if fmt == "latex" else _RENDERERS[fmt](table, best) for table in tables
    ]
    if fmt == "csv" and len(tables) > 1:
        parts = [f"# {t.layout}: {t.caption}\n{part}" for t, part in zip(tables, parts)]
    body = "\n".join(parts)
    if standalone:
        return (STANDALONE_LATEX if fmt == "latex" else STANDALONE_HTML) % body
    return body
