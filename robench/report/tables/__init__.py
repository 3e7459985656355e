"""Paper-layout tables: registered layouts that turn a run's summary into the tables of the papers.

- ``detection``: detection AUC-ROC (%) per defense+detector and attack, semi-white-box (001 Tables 7-8);
- ``white-box``: AUC, distortion and success of C&W-wb per model+detector (001 Tables 9-10);
- ``black-box``: AUC-ROC (%) per target model of attacks crafted on a substitute (001 Table 11);
- ``accuracy``: clean and robust accuracy (%) per model under white-box, SPSA, noise and rotation (004 Tables 1-2);
- ``summary``: every metric of every summary row.

A layout turns the summary into long *cells* (one row per table cell, keyed by
model, threat, attack, detector and metric, so bootstrap intervals can be joined
on), which :func:`Table.values` pivots and :func:`render` formats. Rendering is
pandas' own: ``Styler.to_latex`` (booktabs rules), ``Styler.to_html``,
``DataFrame.to_markdown`` and ``DataFrame.to_csv``.

Modules, one job each:

- :mod:`.labels`: names and row order of defenses, detectors and metrics, from the registered objects;
- :mod:`.table`: :class:`Table`, a built table's long cells and their pivot;
- :mod:`.layouts`: :class:`Layout`, the cell builders and the ``LAYOUTS`` registry;
- :mod:`.build`: :func:`build_table` / :func:`build_tables`, a layout applied to a summary;
- :mod:`.format`: numbers as displayed, best-value marks, the display frame;
- :mod:`.bounds`: the dagger on cells that are bounds in the defense's favour (a summary row's ``sanity_flags``:
  ``detector-not-attacked``, ``budget-not-attacked``) and the caption's sentence on it;
- :mod:`.render`: LaTeX, Markdown, CSV and HTML;
- :mod:`.paper_columns`: a paper's own numbers (``reports/reproduce/papers.csv``, :mod:`robench.report.paper`)
  beside robench's, each column split into ``robench`` and ``paper``.

:class:`TableOptions` picks the AUC population of the AUC cells (``successful``, ``attempted``,
``paired``) and the white-box layout's distortion scale (1 or 255); captions state both.
"""

from __future__ import annotations

from robench.report.tables.bounds import DAGGER
from robench.report.tables.build import DATASET_LEVEL, build_table, build_tables, metric_notes
from robench.report.tables.format import NA, best_mask, cell_text, display_frame, format_value
from robench.report.tables.labels import DOWN, UP, ModelInfo, detector_label, metric_header, model_infos
from robench.report.tables.layouts import (
    ACCURACY_THREATS,
    DEFAULT_OPTIONS,
    DEFAULT_ORDER,
    DISTORTION_SCALES,
    LAYOUTS,
    PAPER_LAYOUTS,
    WHITE_BOX_METRICS,
    CellBuilder,
    Layout,
    TableOptions,
    white_box_metrics,
)
from robench.report.tables.paper_columns import PAPER, PAPER_READY_LAYOUTS, ROBENCH, SOURCE, with_paper_columns
from robench.report.tables.render import (
    COMPACT_LATEX,
    FORMATS,
    LONGTABLE_ROWS,
    STANDALONE_HTML,
    STANDALONE_LATEX,
    render,
    render_tables,
)
from robench.report.tables.table import Table

__all__ = [
    "ACCURACY_THREATS",
    "COMPACT_LATEX",
    "DAGGER",
    "DATASET_LEVEL",
    "DEFAULT_OPTIONS",
    "DEFAULT_ORDER",
    "DISTORTION_SCALES",
    "DOWN",
    "FORMATS",
    "LAYOUTS",
    "LONGTABLE_ROWS",
    "NA",
    "PAPER",
    "PAPER_LAYOUTS",
    "PAPER_READY_LAYOUTS",
    "ROBENCH",
    "SOURCE",
    "STANDALONE_HTML",
    "STANDALONE_LATEX",
    "UP",
    "WHITE_BOX_METRICS",
    "CellBuilder",
    "Layout",
    "ModelInfo",
    "Table",
    "TableOptions",
    "best_mask",
    "build_table",
    "build_tables",
    "cell_text",
    "detector_label",
    "display_frame",
    "format_value",
    "metric_header",
    "metric_notes",
    "model_infos",
    "render",
    "render_tables",
    "white_box_metrics",
    "with_paper_columns",
]
