"""``robench export``: the flat table (JSON, CSV) and RobustBench's model info, from tiny real runs.

The runs (the committed regression models, 16 samples, a few seconds): the GM model under
semi-white-box FGSM + PGD-10-un (budgets 0.1 and 0.3: no shared eps) and under noise at two sigmas
(corruptions: a row each, no eps), and the softmax model under a shortened autoattack at eps 0.1.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from robench.cli.commands import main
from robench.report.bootstrap import bootstrap_intervals
from robench.report.export import (
    COLUMNS,
    EXPORT_FORMATS,
    Budget,
    attack_budget,
    detector_columns,
    eps_text,
    percent_text,
    row_flags,
    shared_budget,
)
from robench.report.rundir import load_run_dir
from robench.runs.runner import run as run_robench
from robench.scoring import records as R
from robench.scoring.metrics import metric_value
from robench.scoring.worst_case import worst_case_records
from robench.specs.run_config import RunConfig

MODELS = Path(__file__).resolve().parent.parent / "reports" / "regression" / "models"
AUTOATTACK = ("APGD-CE", "APGD-T", "FAB-T", "Square")
# RobustBench's model_info fields, in the order of its files (model_info/cifar10/Linf/Carmon2019Unlabeled.json).
ROBUSTBENCH_FIELDS = [
    "link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue", "architecture",
    "eps", "clean_acc", "reported", "autoattack_acc",
]  # fmt: skip


def _run(model: str, threat: str, out: Path, **config) -> None:
    settings = dict(n=16, batch_size=16, seed=0, device="cpu", sanity=False)
    run_robench(
        RunConfig(model=MODELS / f"{model}.pt", threat=threat, **settings, **config),
        out=out,
        progress=False,
        echo=lambda line: None,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """base/flat/gm/{semi-white-box,noise} and base/aa/softmax/autoattack."""
    base = tmp_path_factory.mktemp("export")
    detectors = ("max-prob", "kd")
    _run(
        "gm",
        "semi-white-box",
        base / "flat/gm/semi-white-box",
        attacks=("FGSM", "PGD-10-un"),
        detectors=detectors,
        budgets=("linf:0.3",),
    )
    _run("gm", "noise", base / "flat/gm/noise", sigmas=(0.05, 0.1), detectors=detectors)
    try:
        import torchattacks  # noqa: F401 - the autoattack threat's components
    except ImportError:
        return base  # the tests that need the autoattack run skip (aa_run)
    short = {"APGD-CE.steps": 5, "APGD-T.steps": 2, "FAB-T.steps": 2, "Square.n_queries": 20}
    _run(
        "softmax",
        "autoattack",
        base / "aa/softmax/autoattack",
        settings={**short, **{f"{label}.eps": 0.1 for label in AUTOATTACK}},
        detectors=("max-prob",),
        budgets=("linf:0.1",),
    )
    return base


@pytest.fixture(scope="module")
def aa_run(runs: Path) -> Path:
    if not (runs / "aa").exists():
        pytest.skip("the autoattack threat needs torchattacks")
    return runs / "aa"


def robench(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("robench: error:"), err
    assert "Traceback" not in err and "internal error" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


WORST_CASE = "worst-case Linf 0.3"  # the flat semi-white-box run's one budget


def _export_json(capsys, folder: Path) -> dict:
    code, out, _ = robench(capsys, "export", str(folder), "--format", "json")
    assert code == 0
    return json.loads(out)


def _row(rows: list[dict], threat: str, attacks: str | None = None) -> dict:
    hits = [r for r in rows if r["threat"] == threat and (attacks is None or r["attacks"] == attacks)]
    assert len(hits) == 1, hits
    return hits[0]


# ---------------------------------------------------------------- the flat table


def test_json_rows_are_the_summarys_worst_case_with_its_intervals(runs, capsys):
    document = _export_json(capsys, runs / "flat")
    assert document["format"] == "robench-export" and document["version"] == 1
    assert document["bootstrap"] == {"level": 0.95, "resamples": 1000, "seed": 0}
    rows = document["rows"]
    assert [r["threat"] for r in rows].count("noise") == 2 and len(rows) == 3  # a corruption a row each
    run = load_run_dir(runs / "flat")
    summary = run.summary()
    intervals = bootstrap_intervals(run.records, n_resamples=1000, level=0.95, seed=0)
    info = json.loads((runs / "flat/gm/semi-white-box/run.json").read_text())

    row = _row(rows, "semi-white-box")
    assert list(row)[: len(COLUMNS)] == list(COLUMNS)
    worst = summary[(summary.threat == "semi-white-box") & (summary.attack == WORST_CASE)]
    spread = intervals[(intervals.threat == "semi-white-box") & (intervals.attack == WORST_CASE)]
    assert row["attacks"] == "FGSM, PGD-10-un" and row["n"] == 16 == int(worst.n.iloc[0])
    for metric in ("clean_accuracy", "robust_accuracy", "survival"):
        assert row[metric] == worst[metric].iloc[0]
    for metric in ("robust_accuracy", "survival"):
        assert row[f"{metric}_low"] == spread[f"{metric}_low"].iloc[0]
        assert row[f"{metric}_high"] == spread[f"{metric}_high"].iloc[0]
        assert row[f"{metric}_low"] <= row[metric] <= row[f"{metric}_high"]
    for detector in ("kd", "max-prob"):
        value, low, high = (row[c] for c in detector_columns(detector))
        assert value == worst.loc[worst.detector == detector, "survival_detected"].iloc[0]
        assert low == spread.loc[spread.detector == detector, "survival_detected_low"].iloc[0]
        assert low <= value <= high
    # the worst case per sample, from the records: correct under every attack
    records = run.records[run.records.threat == "semi-white-box"]
    assert row["robust_accuracy"] == metric_value("robust_accuracy", worst_case_records(records))
    by = pd.read_parquet(runs / "flat/gm/semi-white-box/worst_case.parquet")
    by = by.loc[(by.clean_pred == by.label) & (by.broken_by != ""), "broken_by"].value_counts()
    assert row["broke_most"] == by.index[0] and row["broke_most_samples"] == by.iloc[0]
    # the worst case's budget (the run's one) is the row's; each attack's own budget is said
    assert row["eps"] == 0.3 and row["norm"] == "Linf"
    assert row["budgets"] == "FGSM: Linf eps=0.1; PGD-10-un: Linf eps=0.3"
    # provenance from run.json
    assert row["content_hash"] == info["model"]["content_hash"] and row["seed"] == 0
    assert row["git_revision"] == info["git_revision"] and f"torch={info['versions']['torch']}" in row["versions"]

    noise = _row(rows, "noise", "noise-0.05")
    assert noise["norm"] == "none" and noise["eps"] is None and noise["budgets"] == "noise-0.05: sigma=0.05"
    assert noise["survival_detected:kd"] is None  # a corruption has no adversary for a detector to flag
    point = summary[(summary.threat == "noise") & (summary.attack == "noise-0.05")]
    assert noise["robust_accuracy"] == point.robust_accuracy.iloc[0]


def test_csv_holds_the_same_rows_as_json(runs, capsys):
    rows = _export_json(capsys, runs / "flat")["rows"]
    code, out, _ = robench(capsys, "export", str(runs / "flat"), "--format", "csv")
    assert code == 0
    table = list(csv.DictReader(io.StringIO(out)))
    assert len(table) == len(rows) and list(table[0]) == list(rows[0])
    for row, line in zip(rows, table):
        for column, value in row.items():
            text = line[column]
            if value is None:
                assert text == "", column
            elif isinstance(value, float):
                assert float(text) == value, column
            else:
                assert text == str(value), column


def test_rows_carry_their_sanity_flags_also_where_the_run_wrote_none(runs, tmp_path, capsys):
    rows = _export_json(capsys, runs / "flat")["rows"]
    assert all(isinstance(r["sanity_flags"], str) for r in rows)
    # FGSM and PGD-10-un descend on the classifier alone: both detectors' survival_detected are upper bounds
    worst = _row(rows, "semi-white-box")
    assert worst["sanity_flags"] == "detector-not-attacked:kd,detector-not-attacked:max-prob"
    assert _row(rows, "noise", "noise-0.05")["sanity_flags"] == ""  # corruptions: no attacker to judge
    code, out, _ = robench(capsys, "export", str(runs / "flat"), "--format", "csv")
    assert code == 0
    table = list(csv.DictReader(io.StringIO(out)))
    assert [line["sanity_flags"] for line in table] == [r["sanity_flags"] for r in rows]
    # an output written before the checks: no sanity.csv, no sanity in run.json; the flags are the same
    old = tmp_path / "old"
    shutil.copytree(runs / "flat", old)
    for path in old.rglob("sanity.csv"):
        path.unlink()
    for path in old.rglob("run.json"):
        info = json.loads(path.read_text())
        info.pop("sanity", None)
        path.write_text(json.dumps(info))
    assert [r["sanity_flags"] for r in _export_json(capsys, old)["rows"]] == [r["sanity_flags"] for r in rows]


def test_row_flags_name_a_detector_only_where_the_flag_is_about_it():
    point = pd.DataFrame(
        {
            "detector": ["kd", "max-prob"],
            "sanity_flags": ["budget-not-attacked,detector-not-attacked", "budget-not-attacked,gradient-zero-or-nan"],
        }
    )
    assert row_flags(point) == "budget-not-attacked,detector-not-attacked:kd,gradient-zero-or-nan:max-prob"
    assert row_flags(point.assign(sanity_flags="")) == ""
    one = pd.DataFrame({"detector": ["kd"], "sanity_flags": ["detector-not-attacked"]})
    assert row_flags(one) == "detector-not-attacked:kd"  # which detector's column, even when it is the only one


def test_a_shared_budget_fills_eps(aa_run, capsys):
    row = _row(_export_json(capsys, aa_run)["rows"], "autoattack")
    assert row["eps"] == 0.1 and row["norm"] == "Linf" and row["attacks"] == ", ".join(AUTOATTACK)
    assert row["cascade_mode"] == "misclassified"


def test_budget_rules():
    linf = [Budget("A", "Linf", "eps", 0.1), Budget("B", "Linf", "eps", 0.1)]
    assert shared_budget(linf) == ("Linf", 0.1)
    assert shared_budget([*linf, Budget("C", "Linf", "eps", 0.3)]) == ("Linf", None)
    assert shared_budget([*linf, Budget("C", "L2", "eps", 0.1)]) == ("mixed", None)
    assert shared_budget([Budget("C&W", "L2", None, None)]) == ("L2", None)  # unbounded: no eps
    assert shared_budget([Budget("X", None, None, None)]) == (None, None)  # not recorded
    cw = attack_budget("C&W", {"attack": "cw-l2", "params": {"c": 1.0}})
    assert (cw.norm, cw.param, cw.text()) == ("L2", None, "C&W: L2, no budget")
    pgd = attack_budget("PGD", {"attack": "pgd", "params": {"eps": 0.3}})
    assert (pgd.norm, pgd.param, pgd.value) == ("Linf", "eps", 0.3)


def test_eps_and_percent_as_robustbench_writes_them():
    assert eps_text(8 / 255) == "8/255" and eps_text(4 / 255) == "4/255" and eps_text(1 / 255) == "1/255"
    assert eps_text(0.5) == "0.5" and eps_text(0.3) == "0.3" and eps_text(0.2) == "0.2"  # 0.2 is 51/255 too
    assert eps_text(0.0314) == "0.0314"
    assert percent_text(0.8969) == "89.69" and percent_text(0.625) == "62.5" and percent_text(0.0) == "0.0"


# ---------------------------------------------------------------- RobustBench


def test_robustbench_model_info_of_an_autoattack_run(aa_run, capsys):
    code, out, err = robench(capsys, "export", str(aa_run), "--format", "robustbench")
    assert code == 0 and err == ""
    info = json.loads(out)
    assert list(info) == [*ROBUSTBENCH_FIELDS, "threat_model", "robench"]
    records = load_run_dir(aa_run).records
    worst = worst_case_records(records)
    assert info["autoattack_acc"] == percent_text(metric_value("robust_accuracy", worst))
    assert info["clean_acc"] == percent_text(metric_value("clean_accuracy", records[records.attack == "APGD-CE"]))
    assert info["eps"] == "0.1" and info["threat_model"] == "Linf" and info["dataset"] == "mnist-5k"
    assert info["architecture"] == "cnn" and info["additional_data"] is False
    assert info["number_forward_passes"] is None  # not recorded; run.json's image_passes count attack work
    assert all(info[k] == "" for k in ("link", "name", "authors", "venue", "reported"))
    extra = info["robench"]
    assert extra["model"] == "softmax" and extra["n"] == 16 and extra["seed"] == 0
    low, high = extra["autoattack_acc_interval"]
    assert low <= float(info["autoattack_acc"]) <= high
    assert set(extra["image_passes"]) <= set(AUTOATTACK) and extra["image_passes"]["APGD-CE"] > 0
    assert "detector-not-attacked:max-prob" in extra["sanity_flags"].split(",")  # autoattack ignores max-prob


def test_robustbench_leaves_out_models_without_autoattack_with_a_note(runs, aa_run, capsys):
    code, out, err = robench(capsys, "export", str(runs), "--format", "robustbench")
    assert code == 0 and json.loads(out)["robench"]["model"] == "softmax"
    assert err.strip() == "note: model 'gm' has no autoattack run: left out"


def _copy_aa(aa_run: Path, target: Path, model: str | None = None, edit=None) -> Path:
    folder = target / (model or "softmax") / "autoattack"
    shutil.copytree(aa_run / "softmax/autoattack", folder, ignore=shutil.ignore_patterns("parts"))
    info = json.loads((folder / "run.json").read_text())
    if model is not None:
        records = pd.read_parquet(folder / "records.parquet")
        records[R.MODEL] = model
        records[R.CRAFTED_ON] = model
        records.to_parquet(folder / "records.parquet")
        info["model"]["name"] = model
    if edit is not None:
        edit(info)
    (folder / "run.json").write_text(json.dumps(info))
    return target


def test_robustbench_of_several_models_is_keyed_by_model(aa_run, tmp_path, capsys):
    _copy_aa(aa_run, tmp_path)
    _copy_aa(aa_run, tmp_path, model="other")
    code, out, _ = robench(capsys, "export", str(tmp_path), "--format", "robustbench")
    info = json.loads(out)
    assert code == 0 and sorted(info) == ["other", "softmax"]
    assert info["other"]["autoattack_acc"] == info["softmax"]["autoattack_acc"]


def _drop_square(info: dict) -> None:
    info["threats"][0]["attacks"] = [a for a in info["threats"][0]["attacks"] if a["label"] != "Square"]


def _two_budgets(info: dict) -> None:
    info["threats"][0]["attacks"][1]["params"]["eps"] = 0.2


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (None, ()),
        (_drop_square, ("ran without Square", "full ensemble")),
        (_two_budgets, ("no single L-inf or L2 budget", "APGD-T: Linf eps=0.2")),
    ],
)
def test_robustbench_refuses_what_is_not_autoattacks_number(runs, tmp_path, capsys, edit, fragments, request):
    if edit is None:  # no autoattack threat at all
        code, _, err = robench(capsys, "export", str(runs / "flat"), "--format", "robustbench")
        assert_one_line_error(code, err, "robustbench needs a run of the 'autoattack' threat", "semi-white-box")
        return
    aa_run = request.getfixturevalue("aa_run")
    code, _, err = robench(capsys, "export", str(_copy_aa(aa_run, tmp_path, edit=edit)), "--format", "robustbench")
    assert_one_line_error(code, err, *fragments)


# ---------------------------------------------------------------- errors and --out


def test_unknown_format_lists_the_known_ones(runs, capsys):
    code, _, err = robench(capsys, "export", str(runs / "flat"), "--format", "xml")
    assert_one_line_error(code, err, "--format", *(f"'{name}'" for name in EXPORT_FORMATS))


def test_a_bad_rundir_is_one_line(tmp_path, capsys):
    code, _, err = robench(capsys, "export", str(tmp_path / "missing"), "--format", "csv")
    assert_one_line_error(code, err, "does not exist")
    code, _, err = robench(capsys, "export", str(tmp_path), "--format", "json")
    assert_one_line_error(code, err, "no records.parquet found")


def test_out_refuses_to_overwrite_without_force_and_writes_atomically(runs, tmp_path, capsys):
    target = tmp_path / "out" / "flat.csv"
    target.parent.mkdir()
    target.write_text("keep me")
    code, _, err = robench(capsys, "export", str(runs / "flat"), "--format", "csv", "--out", str(target))
    assert_one_line_error(code, err, "exists; pass --force")
    assert target.read_text() == "keep me"
    code, _, err = robench(capsys, "export", str(runs / "flat"), "--format", "csv", "--out", str(target), "--force")
    assert code == 0 and err.strip() == f"wrote {target} (csv)"
    _, stdout, _ = robench(capsys, "export", str(runs / "flat"), "--format", "csv")
    assert target.read_text() == stdout
    assert [p.name for p in target.parent.iterdir()] == ["flat.csv"]  # no temporary file left behind
    fresh = tmp_path / "out" / "flat.json"
    code, _, _ = robench(capsys, "export", str(runs / "flat"), "--format", "json", "--out", str(fresh))
    assert code == 0 and json.loads(fresh.read_text())["format"] == "robench-export"
