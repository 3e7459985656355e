"""The regression gate's verdict for CI systems: a JUnit XML report and a short Markdown summary.

Both are pure functions of what ``robench check`` already computed (a :class:`CheckReport`), or of
the one-line reason when it could not judge at all; the CLI (``robench check --junit FILE
--markdown FILE``) writes them atomically, whatever the verdict.

JUnit (one ``<testsuite name="robench check">`` inside ``<testsuites>``, the layout that Jenkins,
GitLab's ``artifacts:reports:junit`` and the GitHub Actions test reporters read): one
``<testcase>`` per baseline value, ``classname`` = ``MODEL.THREAT`` (``MODEL.THREAT-from-SUBSTITUTE``
for an attack crafted on another model) and ``name`` = ``ATTACK/DETECTOR/METRIC`` (detector ``-``
for the metrics that have none), and

- ``worse`` (and ``better`` with ``--two-sided``): a ``<failure>`` whose message holds the current
  value, the baseline value, the allowed interval and the delta;
- ``missing`` (in the baseline, not in the run): an ``<error>``, since the value cannot be judged
  (``check`` still exits 1 for it);
- ``new`` (in the run, not in the baseline): a ``<skipped>`` test case, measured but not judged;
- ``ok``, and ``better`` one-sided: a passing test case (``better`` says so in ``<system-out>``).

When ``check`` cannot judge at all (exit 2 before any comparison), the report holds one test case,
``robench check`` / ``cannot judge``, with an ``<error>`` carrying the reason.

Every string goes through ElementTree, which escapes it; characters that XML 1.0 cannot hold at all
(control characters other than tab, line feed and carriage return) are written as ``\\xNN``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

import pandas as pd

from robench.report.regression import KEYS, STATUS_ORDER, CheckReport
from robench.scoring import records as R
from robench.scoring.metrics import DETECTOR

SUITE_NAME = "robench check"
CANNOT_JUDGE_CASE = ("robench check", "cannot judge")  # (classname, name) of the test case when check cannot judge
MARKDOWN_COLUMNS = [*KEYS, "status", "baseline", "current", "allowed interval", "delta", "note"]

# Characters XML 1.0 does not allow (tab, LF and CR are allowed), and lone surrogates.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
# Markdown punctuation that could start emphasis, code, a link, HTML or a heading, or end a table cell.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#!~&])")


def _xml_text(value: object) -> str:
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def _number(value: object) -> str:
    """A metric value as the stdout table shows it (4 decimals), ``-`` for an undefined one."""
    if value is None or value is pd.NA:
        return "-"
    number = float(value)
    return "-" if math.isnan(number) else f"{number:.4f}"


def _interval(low: object, high: object) -> str:
    if _number(low) == "-" and _number(high) == "-":
        return "-"
    return f"[{_number(low)}, {_number(high)}]"


def _count(value: object) -> str:
    return "-" if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) else str(value)


def case_names(row: Mapping[str, object]) -> tuple[str, str]:
    """(classname, name) of a baseline value's test case: ``MODEL.THREAT`` and ``ATTACK/DETECTOR/METRIC``.

    An attack crafted on another model (a transfer threat) is ``MODEL.THREAT-from-SUBSTITUTE``, as the
    folder a suite writes it to: one target attacked from two substitutes gives two test cases.
    """
    model, threat, crafted_on = row[R.MODEL], row[R.THREAT], row[R.CRAFTED_ON]
    threat = threat if crafted_on == model else f"{threat}-from-{crafted_on}"
    return f"{model}.{threat}", f"{row[R.ATTACK]}/{row[DETECTOR]}/{row['metric']}"


def describe(row: Mapping[str, object]) -> str:
    """One line: the status, current and baseline value, the allowed interval, the delta (and the note)."""
    text = (
        f"{row['metric']} {row['status']}: current {_number(row['current'])}, baseline {_number(row['baseline'])}, "
        f"allowed {_interval(row['allowed_low'], row['allowed_high'])}, delta {_number(row['delta'])}"
    )
    return f"{text} ({row['note']})" if row["note"] else text


def _details(row: Mapping[str, object]) -> str:
    """The whole row, one field a line, for a failure's or error's body."""
    lines = [f"{key}: {row[key]}" for key in KEYS]
    lines += [
        f"status: {row['status']}",
        f"baseline: {_number(row['baseline'])}",
        f"current: {_number(row['current'])}",
        f"allowed: {_interval(row['allowed_low'], row['allowed_high'])}",
        f"delta: {_number(row['delta'])}",
        f"n: {_count(row['n'])} (baseline {_count(row['n_baseline'])})",
    ]
    if row["note"]:
        lines.append(f"note: {row['note']}")
    return "\n".join(lines)


def _element(parent: ET.Element, tag: str, text: str | None = None, **attributes: object) -> ET.Element:
    child = ET.SubElement(parent, tag, {k: _xml_text(v) for k, v in attributes.items()})
    if text is not None:
        child.text = _xml_text(text)
    return child


def _document(
    cases: list[tuple[str, str, str | None, dict[str, str], str | None, str | None]],
    seconds: float,
    properties: Mapping[str, object],
    system_out: str,
) -> str:
    """The XML of one test suite: ``cases`` are (classname, name, outcome tag or None, its attributes, its text,
    system-out)."""
    counts = {tag: sum(1 for case in cases if case[2] == tag) for tag in ("failure", "error", "skipped")}
    totals = {
        "tests": len(cases),
        "failures": counts["failure"],
        "errors": counts["error"],
        "skipped": counts["skipped"],
        "time": f"{max(seconds, 0.0):.3f}",
    }
    root = ET.Element("testsuites", {"name": SUITE_NAME, **{k: str(v) for k, v in totals.items()}})
    suite = _element(root, "testsuite", name=SUITE_NAME, **totals)
    if properties:
        listed = _element(suite, "properties")
        for key, value in properties.items():
            _element(listed, "property", name=key, value=value)
    for classname, name, tag, attributes, text, out in cases:
        case = _element(suite, "testcase", classname=classname, name=name, time="0")
        if tag is not None:
            _element(case, tag, text, **attributes)
        if out:
            _element(case, "system-out", out)
    if system_out:
        _element(suite, "system-out", system_out)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def junit_xml(report: CheckReport, *, seconds: float = 0.0, properties: Mapping[str, object] | None = None) -> str:
    """The JUnit XML of a finished check: one test case per baseline value (and per new value, skipped)."""
    cases = []
    for row in report.rows.to_dict("records"):
        classname, name = case_names(row)
        status, line, out = row["status"], describe(row), None
        if status == "worse" or (status == "better" and report.two_sided):
            outcome = ("failure", {"message": line, "type": status}, _details(row))
        elif status == "missing":
            outcome = ("error", {"message": line, "type": status}, _details(row))
        elif status == "new":
            outcome = ("skipped", {"message": f"{line}; not judged"}, None)
        else:
            outcome = (None, {}, None)
            out = line if status == "better" else None
        cases.append((classname, name, *outcome, out))
    listed = {"verdict": report.verdict(), "mode": "two-sided" if report.two_sided else "one-sided"}
    listed.update(properties or {})
    return _document(cases, seconds, listed, "\n".join(f"note: {note}" for note in report.notes))


def junit_cannot_judge(reason: str, *, seconds: float = 0.0, properties: Mapping[str, object] | None = None) -> str:
    """The JUnit XML of a check that could not judge at all: one test case with an ``<error>`` holding ``reason``."""
    case = (*CANNOT_JUDGE_CASE, "error", {"message": reason, "type": "cannot judge"}, reason, None)
    return _document([case], seconds, {"verdict": f"cannot judge: {reason}", **(properties or {})}, "")


def _markdown_cell(value: object) -> str:
    text = _xml_text(" ".join(str(value).split()))  # one line (a line break would end the table row), no controls
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text) or " "


def verdict_word(report: CheckReport) -> str:
    return "regression" if report.failed else "pass"


def markdown_summary(report: CheckReport, *, run: object = None, baseline: object = None) -> str:
    """A short Markdown summary for a CI job page: the verdict with its counts, then the values that moved
    (baseline, current, allowed interval, delta) as a table, or "nothing moved"."""
    counts = report.counts()
    compared = sum(counts[s] for s in STATUS_ORDER if s != "new")
    parts = ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s])
    mode = "two-sided" if report.two_sided else "one-sided"
    lines = [f"### robench check: {verdict_word(report)}", ""]
    lines.append(f"**{'FAIL' if report.failed else 'PASS'}**: {parts} ({compared} baseline values, {mode})")
    if run is not None and baseline is not None:
        lines += ["", f"run: {_markdown_cell(run)}; baseline: {_markdown_cell(baseline)}"]
    lines.append("")
    moved = report.table
    if moved.empty:
        lines.append("nothing moved")
    else:
        lines.append("| " + " | ".join(MARKDOWN_COLUMNS) + " |")
        lines.append("|" + "---|" * len(MARKDOWN_COLUMNS))
        for row in moved.to_dict("records"):
            cells = [
                *(row[k] for k in KEYS),
                row["status"],
                _number(row["baseline"]),
                _number(row["current"]),
                _interval(row["allowed_low"], row["allowed_high"]),
                _number(row["delta"]),
                row["note"] or "",
            ]
            lines.append("| " + " | ".join(_markdown_cell(cell) for cell in cells) + " |")
    if report.notes:
        lines.append("")
        lines += [f"- note: {_markdown_cell(note)}" for note in report.notes]
    return "\n".join(lines) + "\n"


def markdown_cannot_judge(reason: str) -> str:
    """The Markdown summary of a check that could not judge at all: the verdict and the one-line reason."""
    return f"### robench check: cannot judge\n\n**CANNOT JUDGE**: {_markdown_cell(reason)}\n"
