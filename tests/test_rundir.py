"""Loading run directories: nested suite folders, single records files, and the one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robench.core.errors import ConfigError
from robench.report.rundir import load_run_dir, summarize_run
from robench.runs.output import write_run
from robench.scoring.metrics import summarize
from synthetic import SYNTHETIC_BUDGETS


def synthetic_records(
    model: str = "m",
    threat: str = "semi-white-box",
    attacks: tuple[str, ...] = ("FGSM", "PGD-10-un"),
    n: int = 200,
    detectors: tuple[str, ...] = ("kd", "max-prob"),
    seed: int = 0,
    robust: float = 0.4,
    corruption: bool = False,
) -> pd.DataFrame:
    """Records shaped like the runner's: ~90% clean accuracy, a fraction ``robust`` of attacks fail, tied scores."""
    rng = np.random.default_rng(seed)
    parts = []
    for a, attack in enumerate(attacks):
        label = rng.integers(0, 10, n)
        correct = rng.random(n) < 0.9
        clean_pred = np.where(correct, label, (label + 1) % 10)
        success = ~correct | (rng.random(n) >= robust)
        adv_pred = np.where(success, (label + 1 + a) % 10, label)
        l2 = rng.uniform(1.0, 4.0, n)
        part = {
            "model": model,
            "threat": threat,
            "attack": attack,
            "corruption": corruption,
            "sample": np.arange(n),
            "label": label,
            "target": np.full(n, -1),
            "clean_pred": clean_pred,
            "adv_pred": adv_pred,
            "success": success,
            "l2": l2,
            "linf": l2 / 10,
            "distortion": l2 / 28.0,
            "input_range": 1.0,
            "worst_case_budgets": SYNTHETIC_BUDGETS,
        }
        for detector in detectors:
            # Rounded so that ties occur, as with saturated max-prob scores.
            part[f"score_clean:{detector}"] = np.round(rng.normal(1.0, 1.0, n), 1).astype(np.float32)
            part[f"score_adv:{detector}"] = np.round(
                np.where(success, rng.normal(0.0, 1.0, n), rng.normal(1.0, 1.0, n)), 1
            ).astype(np.float32)
        parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)


def write_synthetic_run(out: Path, records: pd.DataFrame, defense: str = "softmax") -> Path:
    """A run folder as ``robench run --out`` writes it."""
    model = str(records["model"].iloc[0])
    info = {
        "model": {"name": model, "defense": defense, "dataset": "mnist-5k", "content_hash": f"hash-{model}"},
        "threat": {"name": str(records["threat"].iloc[0]), "attacks": []},
        "git_revision": "0123abc",
    }
    write_run(out, records, summarize(records), info)
    return out


def test_nested_folders_are_gathered(tmp_path: Path) -> None:
    for model in ("a", "b"):
        for threat in ("semi-white-box", "noise"):
            write_synthetic_run(
                tmp_path / model / threat, synthetic_records(model=model, threat=threat, n=50), defense=f"def-{model}"
            )
    run = load_run_dir(tmp_path)
    assert len(run.records) == 2 * 2 * 2 * 50
    assert len(run.runs) == 4
    assert set(run.model_meta()) == {"a", "b"}
    assert run.model_meta()["b"]["defense"] == "def-b"
    assert set(run.records.groupby(["model", "threat"]).groups) == {
        (m, t) for m in "ab" for t in ("semi-white-box", "noise")
    }


def test_single_records_file(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path / "x", synthetic_records(model="x", n=30))
    write_synthetic_run(tmp_path / "y", synthetic_records(model="y", n=30))
    run = load_run_dir(tmp_path / "x" / "records.parquet")
    assert set(run.records["model"]) == {"x"} and len(run.records) == 60
    assert list(run.model_meta()) == ["x"]


def test_duplicated_rows_across_files_are_an_error(tmp_path: Path) -> None:
    records = synthetic_records(n=20)
    write_synthetic_run(tmp_path / "one", records)
    write_synthetic_run(tmp_path / "two", records)
    with pytest.raises(ConfigError, match="duplicated") as info:
        load_run_dir(tmp_path)
    assert "\n" not in str(info.value) and "one" in str(info.value) and "two" in str(info.value)


@pytest.mark.parametrize("case", ["empty", "absent", "corrupt", "columns"])
def test_bad_run_directories_are_one_line_errors(tmp_path: Path, case: str) -> None:
    target = tmp_path / "run"
    target.mkdir()
    if case == "absent":
        target = tmp_path / "nowhere"
    elif case == "corrupt":
        (target / "records.parquet").write_bytes(b"not a parquet file")
    elif case == "columns":
        pd.DataFrame({"model": ["m"]}).to_parquet(target / "records.parquet")
    with pytest.raises(ConfigError) as info:
        load_run_dir(target)
    assert "\n" not in str(info.value)


def test_summary_of_runs_with_different_detectors_has_no_phantom_rows(tmp_path: Path) -> None:
    plain = synthetic_records(model="soft", detectors=("kd",), n=40)
    gm = synthetic_records(model="gm", detectors=("kd", "gm-likelihood"), n=40, seed=1)
    write_synthetic_run(tmp_path / "soft", plain)
    write_synthetic_run(tmp_path / "gm", gm)
    summary = load_run_dir(tmp_path).summary()
    assert set(summary.loc[summary["model"] == "soft", "detector"]) == {"kd"}
    expected = pd.concat([summarize(gm), summarize(plain)], ignore_index=True)
    key = ["model", "threat", "attack", "detector"]
    pd.testing.assert_frame_equal(
        summary.sort_values(key).reset_index(drop=True), expected.sort_values(key).reset_index(drop=True)
    )
    assert len(summarize_run(plain)) == len(summarize(plain))
