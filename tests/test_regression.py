"""The regression gate: baselines of synthetic runs, checks that pass, fail, and the CLI commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from robench.cli.regression import baseline as baseline_command
from robench.cli.regression import check as check_command
from robench.core.errors import ConfigError
from robench.report.regression import check_run, judge, read_baseline, write_baseline
from robench.scoring.metrics import METRICS
from synthetic import SYNTHETIC_WORST_CASE
from test_rundir import synthetic_records, write_synthetic_run

ATTACKS = ("FGSM", "PGD-10-un")


def record_seed(folder: Path, seed: int = 0, n: int | None = None) -> None:
    """Give a synthetic run's run.json the config seed (and n) ``robench run`` records: the gate compares it."""
    path = folder / "run.json"
    info = json.loads(path.read_text())
    threat = info["threat"]["name"]
    info["config"] = {"seed": seed, "n": n, "threat": threat}
    info["threats"] = [{"name": threat, "attacks": []}]
    path.write_text(json.dumps(info))


def two_model_run(root: Path, n: int = 150, gm_detectors: tuple[str, ...] = ("kd", "gm-likelihood")) -> Path:
    """A softmax and a GM model under the semi-white-box threat, as a suite writes them (OUT/MODEL/THREAT), seed 0
    recorded."""
    write_synthetic_run(root / "soft" / "semi-white-box", synthetic_records(model="soft", attacks=ATTACKS, n=n))
    write_synthetic_run(
        root / "gm" / "semi-white-box",
        synthetic_records(model="gm", attacks=ATTACKS, n=n, seed=1, detectors=gm_detectors),
        defense="gm",
    )
    for model in ("soft", "gm"):
        record_seed(root / model / "semi-white-box", 0, n)
    return root


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return two_model_run(tmp_path / "run")


@pytest.fixture
def baseline(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "baseline.json"
    write_baseline(run_dir, out, n_resamples=200)
    return out


def _edit(
    path: Path, out: Path, model: str, attack: str, metric: str, detector: str = "-", shift: float = 0.0, **values
) -> Path:
    """A copy of a baseline with one row's value (and interval) shifted (within [0, 1] for a fraction) or replaced."""
    data = json.loads(path.read_text())
    hits = [
        r
        for r in data["rows"]
        if (r["model"], r["attack"], r["metric"], r["detector"]) == (model, attack, metric, detector)
    ]
    assert len(hits) == 1
    for key in ("value", "low", "high"):
        hits[0][key] += shift
        if METRICS.get(metric).percent:
            hits[0][key] = min(max(hits[0][key], 0.0), 1.0)
    hits[0].update(values)
    out.write_text(json.dumps(data))
    return out


def test_baseline_file_is_sorted_one_row_per_line(baseline: Path) -> None:
    text = baseline.read_text()
    header, rows = read_baseline(baseline)
    assert header["format"] == "robench-baseline" and header["version"] == 1 and header["git_revision"] == "0123abc"
    assert header["models"]["gm"]["defense"] == "gm"
    keys = list(zip(rows["model"], rows["threat"], rows["attack"], rows["detector"], rows["metric"]))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert len([line for line in text.splitlines() if line.strip().startswith('{"model"')]) == len(rows)
    # 8 detector-free metrics per attack, 5 detector metrics per detector:
    # 2 models x (2 attacks + their worst case at the one budget) x (8 + 2 x 5)
    assert len(rows) == 2 * 3 * (8 + 2 * 5)
    # a percentile interval of a median need not hold its point estimate (the gate widens it to the baseline value)
    means = rows[~rows["metric"].str.startswith("median_")]
    assert (means["low"] <= means["value"]).all() and (means["value"] <= means["high"]).all()


def test_run_passes_against_its_own_baseline(run_dir: Path, baseline: Path) -> None:
    report = check_run(run_dir, baseline)
    assert not report.failed and report.table.empty
    assert set(report.rows["status"]) == {"ok"}
    assert report.verdict().startswith("PASS")


def test_metric_worse_than_baseline_fails_and_is_named(run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    edited = _edit(baseline, tmp_path / "edited.json", "soft", "PGD-10-un", "robust_accuracy", shift=0.3)
    report = check_run(run_dir, edited)
    assert report.failed
    moved = report.table
    assert list(moved["status"]) == ["worse"]
    assert moved.loc[0, ["model", "attack", "metric"]].tolist() == ["soft", "PGD-10-un", "robust_accuracy"]
    assert moved.loc[0, "delta"] == pytest.approx(-0.3)
    # An absolute tolerance replaces the interval: 0.35 covers the move, 0.1 does not.
    assert not check_run(run_dir, edited, {"robust_accuracy": 0.35}).failed
    assert check_run(run_dir, edited, {"robust_accuracy": 0.1}).failed


def test_lower_is_better_metric_direction(run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    # success_rate is worse when it goes up: a baseline 0.3 lower means the run got worse.
    edited = _edit(baseline, tmp_path / "edited.json", "gm", "FGSM", "success_rate", shift=-0.3)
    assert list(check_run(run_dir, edited).table["status"]) == ["worse"]
    edited = _edit(baseline, tmp_path / "edited.json", "gm", "FGSM", "auc_roc", detector="kd", shift=-0.3)
    report = check_run(run_dir, edited)
    assert list(report.table["status"]) == ["better"] and not report.failed


def test_two_sided_catches_an_improvement(run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    edited = _edit(baseline, tmp_path / "edited.json", "soft", "FGSM", "robust_accuracy", shift=-0.3)
    assert not check_run(run_dir, edited).failed
    report = check_run(run_dir, edited, two_sided=True)
    assert report.failed and list(report.table["status"]) == ["better"] and "two-sided" in report.verdict()


def test_missing_rows_fail_and_new_rows_do_not(run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    records = pd.read_parquet(run_dir / "gm" / "semi-white-box" / "records.parquet")
    write_synthetic_run(run_dir / "gm" / "semi-white-box", records[records["attack"] == "FGSM"], defense="gm")
    record_seed(run_dir / "gm" / "semi-white-box", 0, len(records) // 2)
    report = check_run(run_dir, baseline)
    assert report.failed
    missing = report.table
    assert (
        set(missing["status"]) == {"missing"}
        and set(missing["attack"]) == {"PGD-10-un", SYNTHETIC_WORST_CASE}
        and set(missing["model"]) == {"gm"}
    )

    data = json.loads(baseline.read_text())
    data["rows"] = [r for r in data["rows"] if r["model"] == "soft"]
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps(data))
    report = check_run(run_dir, subset)
    assert not report.failed and set(report.table["status"]) == {"new"}


def test_nan_against_a_number_is_worse(run_dir: Path, baseline: Path, tmp_path: Path) -> None:
    edited = _edit(baseline, tmp_path / "edited.json", "soft", "FGSM", "distortion", value=None, low=None, high=None)
    report = check_run(run_dir, edited)
    assert report.failed and report.table.loc[0, "note"] == "was NaN"


def test_judge_rules() -> None:
    assert judge("robust_accuracy", 0.5, 0.4, 0.6, 0.45, None)[0] == "ok"
    assert judge("robust_accuracy", 0.5, 0.4, 0.6, 0.39, None)[0] == "worse"
    assert judge("robust_accuracy", 0.5, 0.4, 0.6, 0.61, None)[0] == "better"
    assert judge("success_rate", 0.5, 0.4, 0.6, 0.61, None)[0] == "worse"
    assert judge("success_rate", 0.0, 0.0, 0.0, 0.0, None)[0] == "ok"
    assert judge("auc_roc", math.nan, math.nan, math.nan, math.nan, None)[0] == "ok"
    assert judge("auc_roc", 0.9, 0.8, 0.95, math.nan, None)[::3] == ("worse", "became NaN")
    assert judge("robust_accuracy", 0.5, 0.4, 0.6, 0.39, 0.2)[0] == "ok"
    # A percentile interval that misses its point estimate is widened to it.
    assert judge("robust_accuracy", 0.5, 0.55, 0.6, 0.5, None)[0] == "ok"


def test_unknown_tolerance_metric_suggests_the_name(run_dir: Path, baseline: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'auc_roc'"):
        check_run(run_dir, baseline, {"auc_rco": 0.1})
    with pytest.raises(ConfigError):
        check_run(run_dir, baseline, {"auc_roc": -0.1})


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"format": "other", "version": 1, "rows": []}',
        '{"format": "robench-baseline", "version": 9, "rows": []}',
        '{"format": "robench-baseline", "version": 1, "rows": [{"model": "m"}]}',
        (
            '{"format": "robench-baseline", "version": 1, "rows": [{"model": "m", "threat": "t", "attack": "a", '
            '"detector": "-", "metric": "clean_accuracy", "value": "x", "low": 0, "high": 1, "n": 3}]}'
        ),
        (
            '{"format": "robench-baseline", "version": 1, "rows": [{"model": "m", "threat": "t", "attack": "a", '
            '"detector": "-", "metric": "clean_acc", "value": 1, "low": 0, "high": 1, "n": 3}]}'
        ),
        None,
    ],
)
def test_malformed_baseline_is_a_one_line_config_error(run_dir: Path, tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        check_run(run_dir, path)
    assert "\n" not in str(info.value)


def test_cli_commands(run_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli-baseline.json"
    result = runner.invoke(baseline_command, [str(run_dir), "--out", str(out), "--resamples", "100", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote 108 baseline values" in result.output and out.exists()

    result = runner.invoke(check_command, [str(run_dir), "--baseline", str(out)])
    assert result.exit_code == 0 and result.output.startswith("PASS")
    result = runner.invoke(check_command, [str(run_dir), "--baseline", str(out), "--verbose"])
    assert result.exit_code == 0 and len(result.output.splitlines()) == 1 + 108 + 1  # header, rows, verdict

    edited = _edit(out, tmp_path / "edited.json", "gm", "FGSM", "flagged_rate", detector="kd", shift=0.5)
    result = runner.invoke(check_command, [str(run_dir), "--baseline", str(edited)])
    assert result.exit_code == 1
    assert (
        "flagged_rate" in result.output
        and "worse" in result.output
        and result.output.splitlines()[-1].startswith("FAIL")
    )
    result = runner.invoke(check_command, [str(run_dir), "--baseline", str(edited), "--tolerance", "flagged_rate=0.6"])
    assert result.exit_code == 0

    result = runner.invoke(check_command, [str(run_dir), "--baseline", str(edited), "--tolerance", "flagged_rate"])
    assert isinstance(result.exception, ConfigError) and "KEY=VALUE" in str(result.exception)
    result = runner.invoke(check_command, [str(run_dir), "--baseline", str(edited), "--tolerance", "flagged_rate=lots"])
    assert isinstance(result.exception, ConfigError) and "not a number" in str(result.exception)
