"""The runner and suites end to end on tiny bundles, and their one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from robench.core.errors import ConfigError, UnknownNameError
from robench.runs.runner import RunConfig, run
from robench.scoring.metrics import summarize
from test_cli import assert_one_line_error
from test_cli import run as run_cli
from tiny import two_model_suite


def test_run_writes_records_summary_and_run_json(bundles, tmp_path):
    out = tmp_path / "out"
    config = RunConfig(
        model=bundles["gm"],
        threat="semi-white-box",
        n=30,
        batch_size=16,
        attacks=("FGSM", "PGD-10-un"),
        device="cpu",
        detectors=("kd", "max-prob", "gm-likelihood"),
    )
    result = run(config, out, progress=False)
    records = pd.read_parquet(out / "records.parquet")
    assert len(records) == 60 and set(records["attack"]) == {"FGSM", "PGD-10-un"}
    for column in [
        "sample",
        "label",
        "target",
        "clean_pred",
        "adv_pred",
        "success",
        "l2",
        "linf",
        "distortion",
        "score_clean:kd",
        "score_adv:kd",
    ]:
        assert column in records
    fgsm = records[records["attack"] == "FGSM"]
    assert (fgsm["target"] != fgsm["label"]).all() and (fgsm["target"] >= 0).all()  # random wrong-class targets
    assert (fgsm["linf"] <= 0.1 + 1e-5).all()
    assert (records.loc[records["attack"] == "PGD-10-un", "target"] == -1).all()
    assert (records["distortion"] - records["l2"] / 28).abs().max() < 1e-6
    summary = pd.read_csv(out / "summary.csv")
    assert "sanity_flags" in summary
    pd.testing.assert_frame_equal(summary.drop(columns="sanity_flags"), summarize(records), check_dtype=False)
    info = json.loads((out / "run.json").read_text())
    assert (
        info["model"]["content_hash"] == result.info["model"]["content_hash"]
        and len(info["model"]["content_hash"]) == 64
    )
    assert info["config"]["seed"] == 0 and info["versions"]["torch"] and "git_revision" in info
    assert {a["label"] for a in info["threat"]["attacks"]} == {"FGSM", "PGD-10-un"}
    pgd = next(a for a in info["threat"]["attacks"] if a["label"] == "PGD-10-un")
    assert pgd["params"]["eps"] == 0.3 and pgd["params"]["step"] == 0.01  # MNIST family defaults (004 Fig. 3)
    assert records.loc[records["attack"] == "PGD-10-un", "linf"].max() <= 0.3 + 1e-5


def test_same_seed_same_records(bundles):
    config = RunConfig(
        model=bundles["softmax"], threat="rotation", n=20, batch_size=8, device="cpu", detectors=("max-prob",)
    )
    a = run(config, progress=False).records
    b = run(config, progress=False).records
    pd.testing.assert_frame_equal(a, b)
    c = run(RunConfig(**{**config.__dict__, "seed": 1}), progress=False).records
    assert not a["sample"].equals(c["sample"])


def test_noise_takes_a_list_of_sigmas(bundles):
    result = run(
        RunConfig(model=bundles["gm"], threat="noise", n=10, device="cpu", detectors=("max-prob",), sigmas=(0.0, 0.3)),
        progress=False,
    )
    assert list(result.summary["attack"]) == ["noise-0", "noise-0.3"]
    records = result.records
    assert records.loc[records["attack"] == "noise-0", "l2"].max() == 0.0
    assert records.loc[records["attack"] == "noise-0.3", "l2"].min() > 0.0
    with pytest.raises(ConfigError, match="--sigma applies to the noise threat"):
        RunConfig(model=bundles["gm"], threat="rotation", sigmas=(0.1,))


def test_noise_reports_flag_rate_on_noisy_inputs(bundles):
    result = run(
        RunConfig(model=bundles["gm"], threat="noise", n=20, device="cpu", detectors=("gm-likelihood",)), progress=False
    )
    row = result.summary.iloc[0]
    assert row["attack"] == "noise-0.05" and 0.0 <= row["flagged_rate"] <= 1.0
    assert pd.isna(row["auc_roc"])


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"threat": "semi-whitebox"}, UnknownNameError, "did you mean 'semi-white-box'"),
        ({"threat": "semi-white-box", "attacks": ("FGMS",)}, ConfigError, "did you mean 'FGSM'"),
        ({"threat": "semi-white-box", "settings": {"FGSM.epsilon": "0.2"}}, ConfigError, "did you mean 'eps'"),
        ({"threat": "semi-white-box", "settings": {"BIMM.steps": "2"}}, ConfigError, "did you mean 'BIM'"),
        ({"threat": "noise", "dataset": "digits"}, ConfigError, "expects inputs of shape (1, 28, 28)"),
        ({"threat": "noise", "detectors": ("bu",)}, ConfigError, "no dropout"),
        ({"threat": "noise", "n": 0}, ConfigError, "--n"),
    ],
)
def test_bad_runs_fail_before_attacking(bundles, kwargs, error, fragment):
    with pytest.raises(error, match=None) as info:
        run(RunConfig(model=bundles["softmax"], device="cpu", **kwargs), progress=False)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_cli_run_and_errors(bundles, tmp_path, capsys):
    out = tmp_path / "cli-run"
    code, stdout, _ = run_cli(
        capsys,
        "run",
        "--model",
        str(bundles["gm"]),
        "--threat",
        "rotation",
        "--n",
        "16",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
    )
    assert code == 0 and "rotation-30" in stdout and (out / "records.parquet").exists()
    code, _, err = run_cli(capsys, "run", "--model", str(bundles["gm"]), "--threat", "rotatoin")
    assert_one_line_error(code, err, "did you mean 'rotation'")
    code, _, err = run_cli(
        capsys, "run", "--model", str(bundles["gm"]), "--threat", "semi-white-box", "--set", "FGSM.nope=1"
    )
    assert_one_line_error(code, err, "has no parameter 'nope'")


def test_suite_of_two_models_and_three_threats(bundles, tmp_path, capsys):
    suite = tmp_path / "suite.toml"
    suite.write_text(
        two_model_suite(
            12,
            """
[[threat]]
name = "semi-white-box"
attacks = ["FGSM", "BIM"]
[threat.set]
"BIM.steps" = 3

[[threat]]
name = "noise"

[[threat]]
name = "rotation"
""",
        )
    )
    code, stdout, _ = run_cli(capsys, "suite", str(suite), "--out", str(tmp_path / "suite-out"), "--no-progress")
    assert code == 0
    combined = pd.read_csv(tmp_path / "suite-out" / "summary.csv")
    assert set(combined["model"]) == {"softmax", "gm"}
    assert set(combined["threat"]) == {"semi-white-box", "noise", "rotation"}
    assert len(combined) == 2 * (2 + 3 + 1 + 1)  # FGSM, BIM, their worst cases at L-inf 0.1/0.2/0.3, noise, rotation
    assert set(combined.loc[combined["threat"] == "semi-white-box", "attack"]) == {
        "FGSM",
        "BIM",
        "worst-case Linf 0.1",
        "worst-case Linf 0.2",
        "worst-case Linf 0.3",
    }
    assert (tmp_path / "suite-out" / "gm" / "noise" / "run.json").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(suite.read_text().replace('name = "noise"', 'name = "noize"'))
    code, _, err = run_cli(capsys, "suite", str(bad), "--out", str(tmp_path / "bad-out"))
    assert_one_line_error(code, err, "did you mean 'noise'")
    assert not (tmp_path / "bad-out").exists()


def test_settings_are_validated_together_whatever_their_order():
    from robench.specs.threats import THREATS

    threat = THREATS.get("semi-white-box")
    for order in (["C&W.likelihood_weight", "C&W.objective"], ["C&W.objective", "C&W.likelihood_weight"]):
        values = {"C&W.likelihood_weight": "1", "C&W.objective": "adaptive-margin"}
        updated = threat.with_overrides({key: values[key] for key in order})
        cw = next(a for a in updated.attacks if a.label == "C&W").build("mnist")
        assert cw.objective == "adaptive-margin" and cw.likelihood_weight == 1.0


def test_kd_bu_without_dropout_is_refused_before_any_fit(bundles):
    with pytest.raises(ConfigError, match="dropout"):
        run(RunConfig(model=bundles["gm"], threat="noise", n=4, device="cpu", detectors=("kd+bu",)), progress=False)
    assert not (bundles["gm"].parent / "gm.pt.detectors").exists()


def test_suite_refuses_a_pair_twice_and_non_list_fields(bundles, tmp_path):
    from robench.runs.suite import load_suite

    base = '[[model]]\nname = "gm"\npath = "gm.pt"\n'
    twice = tmp_path / "twice.toml"
    twice.write_text(base + '[[threat]]\nname = "noise"\n[[threat]]\nname = "noise"\n')
    with pytest.raises(ConfigError, match="twice"):
        load_suite(twice)
    scalar = tmp_path / "scalar.toml"
    scalar.write_text(base + '[[threat]]\nname = "semi-white-box"\nattacks = "FGSM"\n')
    with pytest.raises(ConfigError, match="must be a list"):
        load_suite(scalar)
