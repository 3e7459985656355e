"""The record schema is spelled in one place: no module but robench/scoring/records.py names a record column.

Record columns are read and written through ``robench.scoring.records`` (constants and selectors),
so a renamed or reinterpreted column changes one module. This test reads every module of the
package as Python tokens and fails on a string literal that spells a record-only column (the
identifying keys ``model``, ``threat``, ``attack`` and ``crafted_on`` are also summary and run.json
keys, so they are checked through the schema's use rather than by spelling).
"""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pandas as pd
import pytest

from robench.scoring import records as R

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = [ROOT / "robench", ROOT / "attacks", ROOT / "defenses"]
SCHEMA = ROOT / "robench" / "scoring" / "records.py"
RECORD_ONLY = sorted({c.name for c in R.COLUMNS} - set(R.KEYS))
# Literals equal to a column name that name something else; each with the reason.
ALLOWED = {
    ("robench/scoring/metrics.py", "distortion"): "the metric's name (the mean of the column of that name)",
    ("robench/report/tables/layouts.py", "distortion"): "the metric's name in a layout's list of metrics",
    ("robench/core/config.py", "label"): "the registered objects' table-label attribute",
    ("robench/specs/threats.py", "label"): "AttackSpec.config()'s key in run.json, not a record column",
    ("robench/specs/run_config.py", "label"): "an added attack's label key (AttackSpec.label), not a record column",
    ("robench/report/plots.py", "label"): "reads AttackSpec.config()'s key from run.json",
    ("robench/report/export.py", "label"): "reads AttackSpec.config()'s key from run.json",
    ("attacks/base.py", "linf"): "an attack's norm",
    ("robench/app/budget_sweep.py", "linf"): "a budget's norm",
    ("robench/scoring/budgets.py", "linf"): "a budget's norm (mapped to its distance column there)",
    ("robench/scoring/budgets.py", "l2"): "a budget's norm (mapped to its distance column there)",
    ("robench/specs/budgets.py", "linf"): "a budget's norm",
    ("robench/specs/budgets.py", "l2"): "a budget's norm",
    ("robench/report/curves_tables.py", "linf"): "a budget's norm",
    ("robench/report/curves_tables.py", "l2"): "a budget's norm",
    ("attacks/base.py", "l2"): "an attack's norm",
    ("attacks/linf.py", "linf"): "an attack's norm",
    ("attacks/spsa.py", "linf"): "an attack's norm",
    ("attacks/cw.py", "l2"): "an attack's norm",
    ("robench/app/budget_sweep.py", "label"): "an added attack's label key (AttackSpec.label), not a record column",
    ("robench/runs/sanity.py", "label"): "reads AttackSpec.config()'s key from run.json",
    (
        "robench/specs/threat_files.py",
        "label",
    ): "a threat file's [[attack]] label key (AttackSpec.label), not a record column",
    ("robench/report/html_report.py", "label"): "reads AttackSpec.config()'s key from run.json",
    ("attacks/fmn.py", "linf"): "an attack's norm",
    ("attacks/fmn.py", "l2"): "an attack's norm",
    ("attacks/ddn.py", "l2"): "an attack's norm",
    ("attacks/norm_balls.py", "linf"): "an attack's norm",
    ("attacks/norm_balls.py", "l2"): "an attack's norm",
    ("attacks/foolbox_adapter.py", "linf"): "a library attack's norm",
    ("attacks/foolbox_adapter.py", "l2"): "a library attack's norm",
    ("attacks/torchattacks_adapter.py", "linf"): "a library attack's norm",
    ("attacks/torchattacks_adapter.py", "l2"): "a library attack's norm",
    (
        "robench/checkpoints/imported/program_json.py",
        "target",
    ): "a torch.export graph node's target operator, not a record column",
}


def _literals(path: Path) -> list[tuple[int, str]]:
    out = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type == tokenize.STRING:
            text = token.string.lstrip("rbuRBUfF")
            if text[:3] in ('"""', "'''"):
                continue  # docstrings and long text may describe columns
            out.append((token.start[0], text.strip("\"'")))
    return out


def _offenders(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    found = []
    for line, value in _literals(path):
        spelled = value in RECORD_ONLY or value.startswith(("score_clean:", "score_adv:"))
        if spelled and (rel, value) not in ALLOWED:
            found.append(f"{rel}:{line}: {value!r}")
    return found


def test_no_module_but_the_schema_spells_a_record_column():
    files = [p for d in PACKAGE_DIRS for p in sorted(d.rglob("*.py")) if p != SCHEMA]
    offenders = [o for p in files for o in _offenders(p)]
    assert not offenders, "record columns spelled outside robench/scoring/records.py:\n" + "\n".join(offenders)


def test_the_scan_would_catch_a_spelled_column(tmp_path):
    module = ROOT / "robench" / "_probe_for_test.py"
    module.write_text('def f(records):\n    return records["clean_pred"]\n')
    try:
        assert _offenders(module) == ["robench/_probe_for_test.py:2: 'clean_pred'"]
    finally:
        module.unlink()


def test_part_builds_every_column_in_schema_order():
    n = 3
    columns = {c: [0] * n for c in R.BATCH_COLUMNS}
    part = R.part(model="m", threat="t", attack="a", corruption=False, crafted_on="m", samples=list(range(n)),
                  columns=columns, scores_clean={"kd": [1.0] * n}, scores_adv={"kd": [0.5] * n})  # fmt: skip
    # the runner adds RUN_COLUMNS to every part afterwards (a part's content does not depend on them)
    assert list(part.columns) == [c.name for c in R.COLUMNS if c.name not in R.RUN_COLUMNS] + [
        R.score_clean("kd"),
        R.score_adv("kd"),
    ]
    assert R.missing_columns(part) == [] and R.detectors_in(part) == ["kd"]
    with pytest.raises(KeyError, match="lacks record column"):
        R.part(model="m", threat="t", attack="a", corruption=False, crafted_on="m", samples=[0], columns={},
               scores_clean={}, scores_adv={})  # fmt: skip


def test_selectors_follow_the_populations():
    frame = pd.DataFrame({R.LABEL: [0, 1, 2, 3], R.CLEAN_PRED: [0, 1, 0, 3], R.ADV_PRED: [1, 1, 1, 0],
                          R.SUCCESS: [True, False, True, True], R.CORRUPTION: [False] * 4,
                          R.TARGET: [-1, 0, -1, 0]})  # fmt: skip
    assert R.clean_correct(frame).tolist() == [True, True, False, True]
    assert R.successful(frame).tolist() == [True, False, False, True]
    assert R.attacked(frame.assign(**{R.CORRUPTION: True})).tolist() == [True] * 4
    assert R.robust(frame).tolist() == [False, True, False, False]
    assert R.targeted(frame).tolist() == [False, True, False, True]
