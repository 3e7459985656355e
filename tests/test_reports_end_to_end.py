"""The reporting path end to end on tiny bundles: ``run --threat all`` -> ``report`` (every layout) -> ``baseline`` ->
``check``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from robench.checkpoints.bundle import save_bundle
from test_cli import run as run_cli
from test_runner_threats import FAST
from tiny import make_tiny

SETTINGS = {**FAST, "C&W.steps": 5, "C&W-hc.steps": 5, "C&W-un.steps": 5, "C&W-tar.steps": 5}
LAYOUT_CAPTIONS = (
    "001 Tables 7-8",
    "001 Tables 9-10",
    "001 Table 11",
    "004 Tables 1-2",
    "Worst case per sample",
    "Robustness curves at the budgets",
    "Attack audit",
)


@pytest.fixture(scope="module")
def all_run(tmp_path_factory):
    """One ``--threat all`` run of a tiny GM model with a tiny softmax substitute (every threat model)."""
    root = tmp_path_factory.mktemp("e2e")
    for name in ("softmax", "gm"):
        model, meta = make_tiny(name)
        save_bundle(root / f"{name}.pt", model, meta)
    args = ["run", "--model", str(root / "gm.pt"), "--threat", "all", "--substitute", str(root / "softmax.pt"),
            "--n", "8", "--batch-size", "8", "--device", "cpu", "--detector", "kd", "--detector", "max-prob",
            "--no-sanity", "--no-progress", "--out", str(root / "run")]  # fmt: skip
    for key, value in SETTINGS.items():
        args += ["--set", f"{key}={value}"]
    return root, args


def test_threat_all_report_baseline_and_check(all_run, capsys):
    root, args = all_run
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    run_dir = root / "run"
    threats = {t["name"] for t in json.loads((run_dir / "run.json").read_text())["threats"]}
    assert threats == {"semi-white-box", "white-box", "black-box", "spsa", "noise", "rotation", "minimum-norm"}

    code, _, err = run_cli(
        capsys, "report", str(run_dir), "--format", "markdown", "--out", str(root / "tables.md"), "--plots"
    )
    assert code == 0, err
    markdown = (root / "tables.md").read_text()
    for caption in LAYOUT_CAPTIONS:
        assert caption in markdown
    assert list((run_dir / "plots").glob("roc-*.png")) and list((run_dir / "plots").glob("kd-hist-*.pdf"))
    code, _, err = run_cli(
        capsys, "report", str(run_dir), "--format", "latex", "--standalone", "--out", str(root / "tables.tex")
    )
    assert code == 0, err
    latex = (root / "tables.tex").read_text()
    # a layout of many rows (the audit: one per attack copy) is a longtable, which breaks across pages
    tables = latex.count("\\begin{table}") + latex.count("\\begin{longtable}")
    assert tables == len(LAYOUT_CAPTIONS) and "\\toprule" in latex
    if shutil.which("pdflatex") or os.environ.get("ROBENCH_REQUIRE_PDFLATEX"):  # CI installs a minimal TeX (.ci/run)
        compiled = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert compiled.returncode == 0, compiled.stdout[-2000:]

    baseline = root / "baseline.json"
    code, _, err = run_cli(capsys, "baseline", str(run_dir), "--out", str(baseline), "--resamples", "50")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "check", str(run_dir), "--baseline", str(baseline))
    assert code == 0 and "PASS" in out
    data = json.loads(baseline.read_text())
    row = next(r for r in data["rows"] if r["threat"] == "noise" and r["metric"] == "robust_accuracy")
    row["value"], row["low"], row["high"] = (
        row["value"] + 0.5,
        row["value"] + 0.4,
        row["value"] + 0.6,
    )  # the baseline claims better
    baseline.write_text(json.dumps(data))
    code, out, _ = run_cli(capsys, "check", str(run_dir), "--baseline", str(baseline))
    assert code == 1 and "FAIL: 1 worse" in out
    moved = [line for line in out.splitlines() if "worse" in line and "FAIL" not in line]
    assert len(moved) == 1 and "noise" in moved[0] and "robust_accuracy" in moved[0]


def test_rerunning_the_same_command_reuses_every_part(all_run, capsys):
    root, args = all_run
    alone = not (root / "run" / "summary.csv").exists()  # this test may run alone (or on another xdist worker)
    code, out, err = run_cli(capsys, *args)
    if alone:
        code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    info = json.loads((root / "run" / "run.json").read_text())
    assert info["parts"]["computed"] == 0 and info["parts"]["reused"] > 0
    assert "reused" in out + err
