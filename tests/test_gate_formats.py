"""``robench check --junit FILE --markdown FILE``: the gate's verdict for CI systems.

A failing gate (a synthetic run against its own baseline, one value made worse, one added that the run
lacks, one removed), a passing one and checks that cannot judge, run through the CLI: the JUnit XML is
read back with ElementTree and checked against the essentials of the JUnit schema (element names,
required attributes, counts that match the test cases; no schema is downloaded), and the Markdown for its
verdict line and the values that moved. Exit codes are those of ``check`` without the options.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from robench.report.gate_formats import case_names, junit_cannot_judge, junit_xml, markdown_summary
from robench.report.regression import TABLE_COLUMNS, CheckReport, check_run, write_baseline
from test_cli import assert_one_line_error
from test_cli import run as run_cli
from test_regression import _edit, two_model_run

OUTCOMES = ("failure", "error", "skipped")
CASE_CHILDREN = {*OUTCOMES, "system-out", "system-err"}
SUITE_CHILDREN = {"properties", "testcase", "system-out", "system-err"}


def valid_junit(text: str) -> ET.Element:
    """The one ``<testsuite>`` of a JUnit report, after checking the schema's essentials; raises AssertionError."""
    root = ET.fromstring(text)
    assert root.tag in ("testsuites", "testsuite"), root.tag
    suites = [root] if root.tag == "testsuite" else list(root)
    assert all(suite.tag == "testsuite" for suite in suites) and len(suites) == 1
    (suite,) = suites
    for key in ("name", "tests", "failures", "errors"):
        assert key in suite.attrib, f"testsuite lacks {key}"
    assert {child.tag for child in suite} <= SUITE_CHILDREN, {child.tag for child in suite}
    for prop in suite.iter("property"):
        assert {"name", "value"} <= set(prop.attrib)
    cases = suite.findall("testcase")
    outcomes = {tag: 0 for tag in OUTCOMES}
    for case in cases:
        assert case.get("name") and case.get("classname"), case.attrib
        float(case.get("time", "0"))
        assert {child.tag for child in case} <= CASE_CHILDREN, {child.tag for child in case}
        found = [child.tag for child in case if child.tag in OUTCOMES]
        assert len(found) <= 1, found
        for tag in found:
            outcomes[tag] += 1
        for child in case:
            if child.tag in ("failure", "error"):
                assert child.get("message") and child.get("type"), child.attrib
    counts = {"tests": len(cases), "failures": outcomes["failure"], "errors": outcomes["error"]}
    counts["skipped"] = outcomes["skipped"]
    for key, value in counts.items():
        assert int(suite.get(key, "0")) == value, (key, suite.get(key), value)
        if root is not suite:
            assert int(root.get(key, "0")) == value
    float(suite.get("time", "0"))
    return suite


def outcome(case: ET.Element) -> ET.Element | None:
    found = [child for child in case if child.tag in OUTCOMES]
    return found[0] if found else None


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return two_model_run(tmp_path / "run", n=60, gm_detectors=("kd",))


@pytest.fixture
def baseline(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "baseline.json"
    write_baseline(run_dir, out, n_resamples=50)
    return out


def check(capsys, run_dir: Path, baseline: Path, reports: Path, *args: str) -> tuple[int, str, str, Path, Path]:
    junit, markdown = reports / "junit.xml", reports / "summary.md"
    code, out, err = run_cli(
        capsys, "check", str(run_dir), "--baseline", str(baseline), "--junit", str(junit), "--markdown", str(markdown),
        *args,
    )  # fmt: skip
    return code, out, err, junit, markdown


def failing_baseline(baseline: Path, tmp_path: Path) -> Path:
    """The run's own baseline with soft's PGD-10-un robust accuracy 0.3 higher (the run got worse), a row for an
    attack the run lacks (missing) and gm's FGSM distortion removed (new)."""
    edited = _edit(baseline, tmp_path / "failing.json", "soft", "PGD-10-un", "robust_accuracy", shift=0.3)
    data = json.loads(edited.read_text())
    template = next(r for r in data["rows"] if (r["model"], r["attack"], r["metric"]) == ("soft", "FGSM", "survival"))
    data["rows"].append({**template, "attack": "BIM"})
    data["rows"] = [r for r in data["rows"] if (r["model"], r["attack"], r["metric"]) != ("gm", "FGSM", "distortion")]
    edited.write_text(json.dumps(data))
    return edited


def test_failing_gate_names_the_moved_values(capsys, run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    edited = failing_baseline(baseline, tmp_path)
    code, out, err, junit, markdown = check(capsys, run_dir, edited, tmp_path / "reports")
    assert code == 1 and out.splitlines()[-1].startswith("FAIL: 1 worse, 1 missing, 1 new"), (out, err)
    report = check_run(run_dir, edited)
    suite = valid_junit(junit.read_text())
    assert suite.get("name") == "robench check"
    cases = {(case.get("classname"), case.get("name")): case for case in suite.findall("testcase")}
    assert len(cases) == len(suite.findall("testcase")) == len(report.rows)  # one per value, names unique
    n_baseline = len(json.loads(edited.read_text())["rows"])
    assert int(suite.get("tests")) == n_baseline + 1  # every baseline value, and the new one
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("1", "1", "1")

    worse = outcome(cases[("soft.semi-white-box", "PGD-10-un/-/robust_accuracy")])
    row = report.table.iloc[0]
    assert worse.tag == "failure" and worse.get("type") == "worse"
    message = worse.get("message")
    for fragment in (
        f"current {row['current']:.4f}",
        f"baseline {row['baseline']:.4f}",
        f"allowed [{row['allowed_low']:.4f}, {row['allowed_high']:.4f}]",
        "delta -0.3000",
    ):
        assert fragment in message, (fragment, message)
    assert "model: soft" in worse.text and "metric: robust_accuracy" in worse.text

    missing = outcome(cases[("soft.semi-white-box", "BIM/-/survival")])
    assert missing.tag == "error" and missing.get("type") == "missing" and "not in the run" in missing.get("message")
    new = outcome(cases[("gm.semi-white-box", "FGSM/-/distortion")])
    assert new.tag == "skipped" and "not in the baseline" in new.get("message")
    assert {key for key, case in cases.items() if outcome(case) is not None} == {
        ("soft.semi-white-box", "PGD-10-un/-/robust_accuracy"),
        ("soft.semi-white-box", "BIM/-/survival"),
        ("gm.semi-white-box", "FGSM/-/distortion"),
    }
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["verdict"] == out.splitlines()[-1] and properties["baseline"] == str(edited)

    text = markdown.read_text()
    lines = text.splitlines()
    assert lines[0] == "### robench check: regression"
    assert "**FAIL**: 1 worse, 1 missing, 1 new" in text and f"({n_baseline} baseline values, one-sided)" in text
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 1 + len(report.table)  # the header and one row per moved value
    for moved in report.table.to_dict("records"):
        (line,) = [
            line for line in table if line.startswith(f"| {moved['model']} | semi-white-box | {moved['attack']} |")
        ]
        assert f"| {moved['status']} |" in line and moved["metric"].replace("_", "\\_") in line
    assert f"| {row['baseline']:.4f} | {row['current']:.4f} | \\[{row['allowed_low']:.4f}," in text
    assert "| -0.3000 |" in text and "nothing moved" not in text


def test_passing_gate(capsys, run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    code, out, _, junit, markdown = check(capsys, run_dir, baseline, tmp_path / "reports")
    assert code == 0 and out.startswith("PASS")
    suite = valid_junit(junit.read_text())
    n_rows = len(json.loads(baseline.read_text())["rows"])
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        str(n_rows), "0", "0", "0",
    )  # fmt: skip
    assert all(outcome(case) is None for case in suite.findall("testcase"))
    assert {case.get("classname") for case in suite.findall("testcase")} == {"soft.semi-white-box", "gm.semi-white-box"}
    text = markdown.read_text()
    assert text.startswith("### robench check: pass\n") and "**PASS**:" in text and "nothing moved" in text
    assert "| " not in text
    assert not [p.name for p in junit.parent.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave nothing


def _empty(baseline: Path, tmp_path: Path) -> Path:
    data = json.loads(baseline.read_text())
    data["rows"] = []
    (tmp_path / "empty.json").write_text(json.dumps(data))
    return tmp_path / "empty.json"


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("empty baseline", "holds no rows"),
        ("no baseline", "does not exist"),
        ("no run", "does not exist"),
        ("not json", "baseline file"),
    ],
)
def test_cannot_judge_writes_one_error_case(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path, case: str, fragment: str
) -> None:
    if case == "empty baseline":
        baseline = _empty(baseline, tmp_path)
    elif case == "no baseline":
        baseline = tmp_path / "nowhere.json"
    elif case == "no run":
        run_dir = tmp_path / "no-run"
    else:
        baseline.write_text("{not json <&>")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "junit.xml").write_text("an older report")
    code, out, err, junit, markdown = check(capsys, run_dir, baseline, reports)
    assert code == 2 and "PASS" not in out and "FAIL" not in out
    assert_one_line_error(code, err, fragment)
    reason = err.strip().removeprefix("robench: error: ")
    suite = valid_junit(junit.read_text())
    (only,) = suite.findall("testcase")
    assert (only.get("classname"), only.get("name")) == ("robench check", "cannot judge")
    error = outcome(only)
    assert error.tag == "error" and error.get("message") == reason and error.text == reason
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "0", "1")
    text = markdown.read_text()
    assert text.startswith("### robench check: cannot judge\n") and "**CANNOT JUDGE**" in text
    assert fragment in text.replace("\\", "")


def test_unwritable_report_is_exit_2_not_a_regression(capsys, run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, err = run_cli(
        capsys, "check", str(run_dir), "--baseline", str(baseline), "--junit", str(blocker / "junit.xml")
    )
    assert code == 2
    assert_one_line_error(code, err, "cannot write", "junit.xml")
    # without a baseline to judge against, the reason comes first, then the file that could not be written
    code, out, err = run_cli(
        capsys, "check", str(run_dir), "--baseline", str(tmp_path / "none.json"), "--markdown", str(blocker / "s.md")
    )
    assert_one_line_error(code, err, "does not exist", "also cannot write", "s.md")
    assert code == 2


def test_reports_never_replace_the_baseline_or_each_other(capsys, run_dir: Path, baseline: Path) -> None:
    before = baseline.read_text()
    code, _, err = run_cli(capsys, "check", str(run_dir), "--baseline", str(baseline), "--junit", str(baseline))
    assert_one_line_error(code, err, "must not name the baseline file")
    assert code == 2 and baseline.read_text() == before
    same = baseline.parent / "r.txt"
    code, _, err = run_cli(
        capsys, "check", str(run_dir), "--baseline", str(baseline), "--junit", str(same), "--markdown", str(same)
    )
    assert_one_line_error(code, err, "same file")
    assert code == 2 and not same.exists()


def _report(**changes) -> CheckReport:
    row = {
        "model": "m",
        "threat": "t",
        "attack": "FGSM",
        "crafted_on": "m",
        "detector": "-",
        "metric": "robust_accuracy",
        "status": "worse",
        "baseline": 0.5,
        "current": 0.25,
        "delta": -0.25,
        "allowed_low": 0.45,
        "allowed_high": 0.55,
        "n_baseline": 10,
        "n": 10,
        "note": "",
    }
    row.update(changes)
    return CheckReport(rows=pd.DataFrame([row], columns=TABLE_COLUMNS), two_sided=False)


def test_every_string_is_escaped() -> None:
    name = "a<b>&\"c'|d\x07`*_[x](y)"
    report = _report(model=name, crafted_on=name, note="line\nbreak | pipe")
    suite = valid_junit(junit_xml(report, properties={"run": "<run & dir>"}))
    (case,) = suite.findall("testcase")
    assert case.get("classname") == "a<b>&\"c'|d\\x07`*_[x](y).t"  # the one character XML cannot hold: written \x07
    assert "line\nbreak | pipe" in outcome(case).get("message")
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["run"] == "<run & dir>"
    valid_junit(junit_cannot_judge("cannot judge <x> & \x1b[31m y"))

    text = markdown_summary(report, run="r|1", baseline="<b>")
    (row,) = [line for line in text.splitlines() if line.startswith("| a")]
    assert row.count(" | ") == 11  # 12 cells: no pipe or line break inside one ends it early
    assert "\\<b\\>" in text and "r\\|1" in text and "<" not in text.replace("\\<", "")
    assert "\\[x\\]" in row and "line break \\| pipe" in row  # no link, one line
    assert "\x07" not in text and "d\\\\x07" in row  # a control character is written as text


def test_two_sided_better_fails_and_one_sided_better_passes() -> None:
    better = dict(status="better", current=0.75, delta=0.25)
    one = junit_xml(_report(**better))
    (case,) = valid_junit(one).findall("testcase")
    assert outcome(case) is None and "robust_accuracy better" in case.find("system-out").text
    two = CheckReport(rows=_report(**better).rows, two_sided=True)
    (case,) = valid_junit(junit_xml(two)).findall("testcase")
    assert outcome(case).tag == "failure" and outcome(case).get("type") == "better"
    assert markdown_summary(two).startswith("### robench check: regression")


def test_transfer_attacks_are_named_after_their_substitute() -> None:
    row = _report(model="gm", crafted_on="softmax", threat="black-box").rows.iloc[0]
    assert case_names(row) == ("gm.black-box-from-softmax", "FGSM/-/robust_accuracy")
    nan = _report(status="worse", current=math.nan, delta=math.nan, note="became NaN")
    text = markdown_summary(nan)
    assert "| 0.5000 | - | \\[0.4500, 0.5500\\] | - | became NaN |" in text
