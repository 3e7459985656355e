"""``robench check`` never mistakes bad input for a regression, nor emptiness for a pass.

Exit 0 is a pass, 1 a real regression only, 2 anything the gate cannot judge, with the reason
on one line (``robench: error: ...``) and no traceback. Also: ``baseline`` and ``report``
refuse to overwrite their ``--out`` without ``--force``, and ``report --out x.pdf`` names the
formats to pass instead of writing Markdown into it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from corpus_helpers import set_seed
from robench.core.errors import ConfigError
from robench.report.regression import CannotJudge, check_run, read_baseline, write_baseline
from robench.scoring import records as R
from robench.scoring.metrics import COUNT, DETECTOR, METRICS, NO_DETECTOR
from synthetic import SYNTHETIC_WORST_CASE
from test_cli import assert_one_line_error
from test_cli import run as run_cli
from test_regression import two_model_run
from test_rundir import synthetic_records, write_synthetic_run

ROOT = Path(__file__).resolve().parents[1]
THREAT = "semi-white-box"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """test_regression's two-model run, smaller, with the seed ``robench run`` records in each run.json."""
    root = two_model_run(tmp_path / "run", n=60, gm_detectors=("kd",))
    for model in ("soft", "gm"):
        set_seed(root / model / THREAT, 0, n=60)
    return root


@pytest.fixture
def baseline(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "baseline.json"
    write_baseline(run_dir, out, n_resamples=50)
    return out


def _rewrite(baseline: Path, out: Path, rows=None, **header) -> Path:
    """A copy of ``baseline`` with each row passed through ``rows`` (returning None drops it) and header entries
    replaced."""
    data = json.loads(baseline.read_text())
    if rows is not None:
        data["rows"] = [r for r in (rows(dict(row)) for row in data["rows"]) if r is not None]
    for key, value in header.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    out.write_text(json.dumps(data))
    return out


def _first(metric: str, **changes):
    """A row editor that changes the first row of ``metric`` only."""
    done = []

    def edit(row: dict) -> dict:
        if row["metric"] == metric and not done:
            done.append(True)
            row.update(changes)
        return row

    return edit


def _check(capsys, run_dir: Path, baseline: Path, *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "check", str(run_dir), "--baseline", str(baseline), *args)


def _cannot_judge(capsys, run_dir: Path, baseline: Path, *fragments: str, args: tuple[str, ...] = ()) -> None:
    code, out, err = _check(capsys, run_dir, baseline, *args)
    assert code == 2, (out, err)
    assert_one_line_error(code, err, *fragments)
    assert "PASS" not in out and "FAIL" not in out


def test_own_baseline_passes_and_records_the_seeds(capsys, run_dir: Path, baseline: Path) -> None:
    header, _ = read_baseline(baseline)
    assert header["seeds"] == {"gm": {THREAT: [0]}, "soft": {THREAT: [0]}}
    code, out, err = _check(capsys, run_dir, baseline)
    assert code == 0 and out.startswith("PASS"), (out, err)


def test_a_real_regression_is_exit_1(capsys, run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    edited = _rewrite(baseline, tmp_path / "e.json", _first("robust_accuracy", value=1.0, low=1.0, high=1.0))
    code, out, err = _check(capsys, run_dir, edited)
    assert code == 1 and out.splitlines()[-1].startswith("FAIL: 1 worse") and err == ""


# --- malformed baselines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"value": math.inf}, "'value' is inf"),
        ({"low": -math.inf}, "'low' is -inf"),
        ({"high": math.inf}, "'high' is inf"),
        ({"value": 1.5}, "outside [0, 1]"),
        ({"low": -0.1}, "outside [0, 1]"),
        ({"high": 1.01}, "outside [0, 1]"),
        ({"low": 0.6, "high": 0.4}, "'low' 0.6 is above 'high' 0.4"),
        ({"n": 0}, "'n' must be a positive integer"),
        ({"value": "0.5"}, "must be a number or null"),
    ],
)
def test_defective_baseline_values_cannot_be_judged(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path, changes: dict, fragment: str
) -> None:
    edited = _rewrite(baseline, tmp_path / "bad.json", _first("clean_accuracy", **changes))
    _cannot_judge(capsys, run_dir, edited, fragment, "row ")


def test_nan_value_is_legitimate_and_infinite_distortion_is_not(run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    # NaN (JSON NaN or null) is an undefined metric: read, and judged (a number against NaN is worse).
    nan = _rewrite(baseline, tmp_path / "nan.json", _first("auc_roc", value=math.nan, low=None, high=None))
    _, rows = read_baseline(nan)
    _, before = read_baseline(baseline)  # the worst cases' median distances are undefined (NaN) already
    assert rows["value"].isna().sum() == before["value"].isna().sum() + 1
    assert check_run(run_dir, nan).failed
    # A distortion above 1 is fine (not a fraction); an infinite one is not.
    big = _rewrite(baseline, tmp_path / "big.json", _first("distortion", value=5.0, low=4.0, high=6.0))
    assert len(read_baseline(big)[1])
    with pytest.raises(ConfigError, match="finite"):
        read_baseline(_rewrite(baseline, tmp_path / "inf.json", _first("distortion", high=math.inf)))


def test_baseline_without_rows_cannot_be_judged(capsys, run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    empty = _rewrite(baseline, tmp_path / "empty.json", lambda row: None)
    _cannot_judge(capsys, run_dir, empty, "holds no rows")
    with pytest.raises(CannotJudge):
        check_run(run_dir, empty)


def test_malformed_seeds_header_is_a_one_line_error(capsys, run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    edited = _rewrite(baseline, tmp_path / "seeds.json", seeds={"soft": {THREAT: "zero"}})
    _cannot_judge(capsys, run_dir, edited, '"seeds"', "list of integers")


# --- baselines of something else -----------------------------------------------------------------


def test_baseline_of_other_models_or_threats_cannot_be_judged(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path
) -> None:
    other_models = _rewrite(baseline, tmp_path / "models.json", lambda row: {**row, R.MODEL: "other-" + row[R.MODEL]})
    _cannot_judge(capsys, run_dir, other_models, "no model x threat pair in common", "other-gm/semi-white-box")
    other_threat = _rewrite(baseline, tmp_path / "threat.json", lambda row: {**row, R.THREAT: "noise"})
    _cannot_judge(capsys, run_dir, other_threat, "no model x threat pair in common")
    other_attacks = _rewrite(baseline, tmp_path / "attacks.json", lambda row: {**row, R.ATTACK: "BIM-" + row[R.ATTACK]})
    _cannot_judge(capsys, run_dir, other_attacks, "no model x threat x attack")


def test_a_subset_baseline_still_passes_and_a_dropped_attack_still_fails(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path
) -> None:
    subset = _rewrite(baseline, tmp_path / "subset.json", lambda row: row if row[R.MODEL] == "soft" else None)
    code, out, _ = _check(capsys, run_dir, subset)
    assert code == 0 and "new" in out
    records = pd.read_parquet(run_dir / "gm" / THREAT / "records.parquet")
    write_synthetic_run(run_dir / "gm" / THREAT, records[records[R.ATTACK] == "FGSM"], defense="gm")
    set_seed(run_dir / "gm" / THREAT, 0, n=60)
    code, out, _ = _check(capsys, run_dir, baseline)
    assert code == 1 and "missing" in out


def test_changed_weights_cannot_be_judged_unless_allowed(capsys, run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    header, _ = read_baseline(baseline)
    models = {**header["models"], "gm": {**header["models"]["gm"], "content_hash": "retrained"}}
    edited = _rewrite(baseline, tmp_path / "hash.json", models=models)
    _cannot_judge(capsys, run_dir, edited, "model 'gm'", "different weights", "--allow-changed-models")
    code, out, err = _check(capsys, run_dir, edited, "--allow-changed-models")
    assert code == 0, err
    assert "note: model 'gm' has different weights" in out and out.splitlines()[-1].startswith("PASS")
    everything = {name: {**meta, "content_hash": "x"} for name, meta in header["models"].items()}
    _cannot_judge(
        capsys, run_dir, _rewrite(baseline, tmp_path / "all.json", models=everything), "models 'gm', 'soft' have"
    )


def test_another_sample_count_cannot_be_judged(capsys, run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    def grow(row: dict) -> dict:
        return {**row, COUNT: 80} if row[R.MODEL] == "soft" and row[R.ATTACK] == "FGSM" else row

    _cannot_judge(
        capsys,
        run_dir,
        _rewrite(baseline, tmp_path / "n.json", grow),
        "1 group(s)",
        "soft/semi-white-box/FGSM/soft n 60 (baseline 80)",
        "--n",
    )


def test_another_seed_cannot_be_judged_and_a_baseline_without_seeds_does_not_compare_them(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path
) -> None:
    set_seed(run_dir / "soft" / THREAT, 3, n=60)
    _cannot_judge(capsys, run_dir, baseline, "soft/semi-white-box ran with seed 3, the baseline with seed 0", "--seed")
    # A version-1 baseline from before seeds were recorded: not recorded, not an error.
    old = _rewrite(baseline, tmp_path / "old.json", seeds=None)
    assert "seeds" not in json.loads(old.read_text())
    code, out, err = _check(capsys, run_dir, old)
    assert code == 0, err
    # A run that records no seed cannot be compared with a baseline that does (it was a silent pass).
    info = json.loads((run_dir / "soft" / THREAT / "run.json").read_text())
    del info["config"]
    (run_dir / "soft" / THREAT / "run.json").write_text(json.dumps(info))
    _cannot_judge(capsys, run_dir, baseline, "records the seed of soft/semi-white-box", "run.json")
    code, out, err = _check(capsys, run_dir, old)  # the old baseline compares no seeds
    assert code == 0, err


def test_the_committed_ci_baseline_still_reads() -> None:
    header, rows = read_baseline(ROOT / "reports" / "baselines" / "regression.json")
    assert len(rows) and header["version"] == 1
    assert set(rows["metric"]) <= set(METRICS.names()) and set(rows[DETECTOR]) >= {NO_DETECTOR}


# --- runs that cannot be read --------------------------------------------------------------------


def _retyped(run_dir: Path, column: str, convert) -> Path:
    file = run_dir / "soft" / THREAT / "records.parquet"
    records = pd.read_parquet(file)
    records[column] = convert(records[column])
    records.to_parquet(file)
    return file


@pytest.mark.parametrize(
    "column, convert, fragment",
    [
        (R.SUCCESS, lambda c: c.map({True: "yes", False: "no"}), "holds strings (e.g. 'yes'), expected booleans"),
        (R.CLEAN_PRED, lambda c: c.astype(str), "holds strings (e.g. '"),
        (R.LABEL, lambda c: c + 0.5, "holds numbers (e.g. "),
        (R.SUCCESS, lambda c: c.astype(int) * 2, "expected booleans"),
        (R.DISTORTION, lambda c: c.astype(str), "expected numbers"),
        (R.score_adv("kd"), lambda c: c.astype(str), "expected numbers"),
        (R.MODEL, lambda c: pd.Series(np.arange(len(c)), index=c.index), "expected strings"),
        (R.ADV_PRED, lambda c: c.astype(float).where(c.index > 0), "1 missing value(s)"),
    ],
)
def test_records_of_the_wrong_type_cannot_be_judged(
    capsys, run_dir: Path, baseline: Path, column: str, convert, fragment: str
) -> None:
    file = _retyped(run_dir, column, convert)
    _cannot_judge(capsys, run_dir, baseline, str(file), f"column '{column}'", fragment)
    code, _, err = run_cli(capsys, "report", str(run_dir))
    assert code == 2 and f"column '{column}'" in err


def test_bool_like_and_integer_valued_columns_are_accepted(capsys, run_dir: Path, baseline: Path) -> None:
    _retyped(run_dir, R.SUCCESS, lambda c: c.astype(np.int8))
    _retyped(run_dir, R.LABEL, lambda c: c.astype(float))
    code, out, err = _check(capsys, run_dir, baseline)
    assert code == 0 and out.startswith("PASS"), err


def test_unreadable_run_directories_cannot_be_judged(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path, monkeypatch
) -> None:
    _cannot_judge(capsys, tmp_path / "nowhere", baseline, "does not exist")
    (tmp_path / "notes.txt").write_text("x")
    _cannot_judge(capsys, tmp_path / "notes.txt", baseline, "neither a run directory nor a records")
    (tmp_path / "hollow" / "records.parquet").mkdir(parents=True)
    code, _, err = _check(capsys, tmp_path / "hollow", baseline)
    assert code == 2 and "robench: error:" in err and "internal" not in err

    def refuse(self, pattern):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "rglob", refuse)
    _cannot_judge(capsys, run_dir, baseline, "cannot read run directory", "Permission denied")


# --- files that are not overwritten, formats that are not guessed --------------------------------


def test_baseline_and_report_refuse_to_overwrite_without_force(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path
) -> None:
    before = baseline.read_text()
    code, _, err = run_cli(capsys, "baseline", str(run_dir), "--out", str(baseline), "--resamples", "20")
    assert_one_line_error(code, err, "exists; pass --force")
    assert code == 2 and baseline.read_text() == before
    code, out, err = run_cli(capsys, "baseline", str(run_dir), "--out", str(baseline), "--resamples", "20", "--force")
    assert code == 0 and "wrote" in out, err

    tables = tmp_path / "tables.md"
    tables.write_text("keep me\n")
    code, _, err = run_cli(capsys, "report", str(run_dir), "--out", str(tables))
    assert_one_line_error(code, err, "exists; pass --force")
    assert code == 2 and tables.read_text() == "keep me\n"
    code, _, err = run_cli(capsys, "report", str(run_dir), "--out", str(tables), "--force")
    assert code == 0, err
    assert tables.read_text() != "keep me\n" and "FGSM" in tables.read_text()


@pytest.mark.parametrize(
    "name, fragment", [("tables.pdf", "suffix '.pdf'"), ("tables", "no suffix"), ("tables.txt", "suffix '.txt'")]
)
def test_report_out_suffix_without_a_format_is_an_error(
    capsys, run_dir: Path, tmp_path: Path, name: str, fragment: str
) -> None:
    out = tmp_path / name
    code, _, err = run_cli(capsys, "report", str(run_dir), "--out", str(out))
    assert_one_line_error(code, err, fragment, "--format latex|markdown|csv|html", ".tex latex")
    assert code == 2 and not out.exists()
    if name.endswith(".pdf"):
        assert "--standalone, then pdflatex" in err and "tables.tex" in err
    code, _, err = run_cli(capsys, "report", str(run_dir), "--out", str(out), "--format", "markdown")
    assert code == 0 and out.exists(), err


# --- a model x threat whose attacks all failed: undefined AUCs are "-" / null, never a crash ------


def _nothing_succeeds(root: Path) -> Path:
    """Two attacks of which none succeeds on any sample, as ``robench run --attack FGSM --attack BIM`` at a tiny eps."""
    records = synthetic_records(model="soft", attacks=("FGSM", "BIM"), n=24, detectors=("kd", "max-prob"))
    records = records.assign(clean_pred=records[R.LABEL], adv_pred=records[R.LABEL], success=False)
    folder = root / "soft" / THREAT
    write_synthetic_run(folder, records)
    set_seed(folder, 0, n=24)
    return root


def test_undefined_auc_is_a_dash_in_report_baseline_and_check(capsys, tmp_path: Path) -> None:
    # Was: internal error: KeyError: 'score_adv:kd' (the worst case's adversarial scores are all NaN
    # when no attack misclassified anything, and the summary dropped that column but not the detector).
    run_dir = _nothing_succeeds(tmp_path / "run")
    code, out, err = run_cli(capsys, "report", str(run_dir), "--layout", "detection", "--ci", "--resamples", "20")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| Softmax+KD")]
    assert len(rows) == 1 and rows[0].replace(" ", "") == "|Softmax+KD|-|-|", out
    baseline = tmp_path / "baseline.json"
    code, out, err = run_cli(capsys, "baseline", str(run_dir), "--out", str(baseline), "--resamples", "20")
    assert code == 0, err
    _, rows = read_baseline(baseline)
    auc = rows[rows["metric"] == "auc_roc"]
    assert set(auc[R.ATTACK]) == {"FGSM", "BIM", SYNTHETIC_WORST_CASE} and set(auc[DETECTOR]) == {"kd", "max-prob"}
    assert auc[["value", "low", "high"]].isna().all().all()
    code, out, err = _check(capsys, run_dir, baseline, "--two-sided")
    assert code == 0 and out.startswith("PASS: nothing moved"), (out, err)
    # and in the figures (the ROC panels have no curve, the histograms no adversarial side)
    code, _, err = run_cli(
        capsys, "report", str(run_dir), "--layout", "detection", "--plots-dir", str(tmp_path / "plots")
    )
    assert code == 0, err


# --- exact exit codes: what the gate cannot judge is 2, never 1 nor a silent 0 ----------------------


@pytest.mark.parametrize(
    "changes, fragment",
    [
        # an undefined metric has no interval: was "worse: was NaN" (exit 1)
        ({"value": None, "low": 0.1, "high": 0.9}, "is null (undefined) but its interval is [0.1, 0.9]"),
        ({"value": None, "low": 0.1, "high": None}, "is null (undefined) but its interval"),
        # a number without an interval: was judged against the number alone (exit 0 when unchanged)
        ({"low": None, "high": None}, "without an interval ('low' null, 'high' null)"),
        ({"high": None}, "without an interval"),
    ],
)
def test_a_value_and_its_interval_are_defined_together(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path, changes: dict, fragment: str
) -> None:
    edited = _rewrite(baseline, tmp_path / "bad.json", _first("auc_roc", **changes))
    _cannot_judge(capsys, run_dir, edited, fragment, "row ")


def test_a_run_without_run_json_cannot_be_judged_nor_baselined(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path
) -> None:
    # Was exit 0: the model-hash and seed checks were skipped without a word.
    (run_dir / "soft" / THREAT / "run.json").unlink()
    _cannot_judge(capsys, run_dir, baseline, "no run.json below", "'soft'", "content hash")
    _cannot_judge(capsys, run_dir / "soft" / THREAT / "records.parquet", baseline, "no run.json below", "'soft'")
    _cannot_judge(capsys, run_dir, baseline, "no run.json", args=("--allow-changed-models",))
    out = tmp_path / "new.json"
    code, _, err = run_cli(capsys, "baseline", str(run_dir), "--out", str(out), "--resamples", "20")
    assert_one_line_error(code, err, "cannot write a baseline", "no run.json below", "'soft'")
    assert code == 2 and not out.exists()


def test_a_run_json_without_a_model_hash_cannot_be_judged(capsys, run_dir: Path, baseline: Path) -> None:
    path = run_dir / "gm" / THREAT / "run.json"
    info = json.loads(path.read_text())
    del info["model"]["content_hash"]
    path.write_text(json.dumps(info))
    _cannot_judge(capsys, run_dir, baseline, "records the weights (content hash) of model 'gm'")


def test_a_baseline_without_its_models_cannot_be_judged_unless_allowed(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path
) -> None:
    # Was exit 0: a baseline without "models" skipped the weights check without a word.
    no_models = _rewrite(baseline, tmp_path / "no-models.json", models=None)
    _cannot_judge(
        capsys, run_dir, no_models, "does not record the weights", "models 'gm', 'soft'", "--allow-changed-models"
    )
    code, out, err = _check(capsys, run_dir, no_models, "--allow-changed-models")
    assert (
        code == 0
        and "note: model 'gm': the baseline does not record its weights" in out
        and out.splitlines()[-1].startswith("PASS")
    ), err
    header, _ = read_baseline(baseline)
    one_missing = _rewrite(baseline, tmp_path / "one.json", models={"gm": header["models"]["gm"]})
    _cannot_judge(capsys, run_dir, one_missing, "does not record the weights", "model 'soft'")
    no_hash = _rewrite(baseline, tmp_path / "no-hash.json", models={**header["models"], "soft": {"defense": "softmax"}})
    _cannot_judge(capsys, run_dir, no_hash, "model 'soft'")


@pytest.mark.parametrize(
    "models, fragment",
    [
        ([1], '"models" must map model'),
        ({"soft": "hash"}, "must be an object"),
        ({"soft": {"content_hash": 3}}, "content_hash must be a string"),
    ],
)
def test_a_malformed_models_header_cannot_be_judged(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path, models, fragment: str
) -> None:
    _cannot_judge(capsys, run_dir, _rewrite(baseline, tmp_path / "models.json", models=models), fragment)


def test_a_baseline_whose_seeds_lack_a_pair_cannot_be_judged(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path
) -> None:
    header, _ = read_baseline(baseline)
    partial = _rewrite(baseline, tmp_path / "partial.json", seeds={"gm": header["seeds"]["gm"]})
    _cannot_judge(capsys, run_dir, partial, "the baseline records no seed for soft/semi-white-box")


def test_a_baseline_refuses_a_run_without_seeds(capsys, run_dir: Path, tmp_path: Path) -> None:
    path = run_dir / "soft" / THREAT / "run.json"
    info = json.loads(path.read_text())
    del info["config"]
    path.write_text(json.dumps(info))
    code, _, err = run_cli(capsys, "baseline", str(run_dir), "--out", str(tmp_path / "b.json"), "--resamples", "20")
    assert_one_line_error(code, err, "cannot write a baseline", "records the seed of soft/semi-white-box")
    assert code == 2


def test_a_baseline_refuses_values_the_bootstrap_left_without_interval(
    capsys, run_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from robench.report import regression

    real = regression.bootstrap_intervals
    monkeypatch.setattr(regression, "bootstrap_intervals", lambda *a, **k: real(*a, **k).assign(auc_roc_low=math.nan))
    code, _, err = run_cli(capsys, "baseline", str(run_dir), "--out", str(tmp_path / "b.json"), "--resamples", "1")
    assert_one_line_error(code, err, "have no bootstrap interval", "auc_roc", "more --resamples")
    assert code == 2 and not (tmp_path / "b.json").exists()


# --- records whose classes are not the model's -----------------------------------------------------


@pytest.mark.parametrize(
    "column, value, fragment",
    [
        (R.LABEL, 12, "column 'label' holds 12 (1 record(s)), outside the 10 classes 0..9 of dataset 'mnist-5k'"),
        (R.CLEAN_PRED, 10, "column 'clean_pred' holds 10"),
        (R.ADV_PRED, -3, "column 'adv_pred' holds -3"),
        (R.TARGET, -2, "column 'target' holds -2"),
        (R.TARGET, 10, "or -1 (untargeted)"),
    ],
)
def test_records_outside_the_model_classes_are_refused(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path, column: str, value: int, fragment: str
) -> None:
    # Was: baselined (exit 0), then judged a regression (exit 1).
    file = _retyped(run_dir, column, lambda c: c.where(c.index != 5, value))
    _cannot_judge(capsys, run_dir, baseline, str(file), fragment)
    code, _, err = run_cli(capsys, "baseline", str(run_dir), "--out", str(tmp_path / "b.json"), "--resamples", "20")
    assert_one_line_error(code, err, fragment)
    assert code == 2 and not (tmp_path / "b.json").exists()
    code, _, err = run_cli(capsys, "report", str(run_dir))
    assert_one_line_error(code, err, fragment)
    assert code == 2


def test_records_whose_classes_cannot_be_checked_are_not_gated(
    capsys, run_dir: Path, baseline: Path, tmp_path: Path
) -> None:
    path = run_dir / "soft" / THREAT / "run.json"
    info = json.loads(path.read_text())
    info["model"]["dataset"] = info["dataset"] = "mnist-7k"  # a dataset this robench does not know
    path.write_text(json.dumps(info))
    _cannot_judge(
        capsys, run_dir, baseline, "cannot be checked against the model's classes", "dataset 'mnist-7k', unknown"
    )
    code, _, err = run_cli(capsys, "baseline", str(run_dir), "--out", str(tmp_path / "b.json"), "--resamples", "20")
    assert_one_line_error(code, err, "cannot be checked against the model's classes")
    code, out, err = run_cli(
        capsys, "report", str(run_dir), "--layout", "detection"
    )  # tables need no more than classes >= 0
    assert code == 0 and "Softmax+KD" in out, err
