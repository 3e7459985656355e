"""``robench run --attack torchattacks:NAME --attack foolbox:NAME``: the command, reruns, suites, listings, errors.

On a copy of the committed GM regression bundle (reports/regression/models/gm.pt), a few test
images and shortened attacks (``--set torchattacks:APGD.steps=10``), scoring only the max-prob
detector so that nothing is fitted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from robench.core.errors import ConfigError
from test_cli import assert_one_line_error, run

MODELS = Path(__file__).resolve().parents[1] / "reports" / "regression" / "models"
FAST = [
    "--set",
    "torchattacks:APGD.steps=10",
    "--set",
    "foolbox:L2DeepFoolAttack.steps=5",
    "--set",
    "foolbox:L2DeepFoolAttack.candidates=3",
]
COMMON = ["--n", "8", "--batch-size", "8", "--device", "cpu", "--detector", "max-prob", "--no-sanity", "--no-progress"]


@pytest.fixture
def gm(tmp_path: Path) -> Path:
    path = tmp_path / "gm.pt"
    shutil.copyfile(MODELS / "gm.pt", path)  # the run may cache next to the bundle: never next to the committed one
    return path


def _issue_command(model: Path, out: Path) -> list[str]:
    return [
        "run",
        "--model",
        str(model),
        "--threat",
        "semi-white-box",
        "--attack",
        "torchattacks:APGD",
        "--attack",
        "foolbox:L2DeepFoolAttack",
        "--out",
        str(out),
    ]


def test_the_issue_command_runs_writes_records_and_reruns_identically(gm, tmp_path, capsys):
    code, out, err = run(capsys, *_issue_command(gm, tmp_path / "a"), *FAST, *COMMON)
    assert code == 0, err
    assert "torchattacks:APGD" in out and "foolbox:L2DeepFoolAttack" in out
    records = pd.read_parquet(tmp_path / "a" / "records.parquet")
    assert sorted(set(records["attack"])) == ["foolbox:L2DeepFoolAttack", "torchattacks:APGD"] and len(records) == 16
    apgd = records[records["attack"] == "torchattacks:APGD"]
    assert (apgd["linf"] <= 0.3 + 1e-5).all() and apgd[
        "success"
    ].mean() > 0.5  # MNIST-family budget; APGD breaks GM at 0.3
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    (apgd_config,) = [a for a in info["threat"]["attacks"] if a["label"] == "torchattacks:APGD"]
    assert apgd_config["params"]["steps"] == 10 and apgd_config["params"]["eps"] == 0.3
    code, _, err = run(capsys, *_issue_command(gm, tmp_path / "b"), *FAST, *COMMON)
    assert code == 0, err
    again = pd.read_parquet(tmp_path / "b" / "records.parquet")
    columns = ["attack", "sample", "adv_pred", "success", "l2", "linf"]
    pd.testing.assert_frame_equal(
        records[columns].sort_values(["attack", "sample"]).reset_index(drop=True),
        again[columns].sort_values(["attack", "sample"]).reset_index(drop=True),
    )


def test_a_gradient_free_library_attack_runs_on_the_query_only_threat(gm, tmp_path, capsys):
    args = [
        "run",
        "--model",
        str(gm),
        "--threat",
        "spsa",
        "--attack",
        "torchattacks:Square",
        "--set",
        "torchattacks:Square.n_queries=20",
        "--out",
        str(tmp_path / "sq"),
    ]
    code, _, err = run(capsys, *args, *COMMON)
    assert code == 0, err
    assert set(pd.read_parquet(tmp_path / "sq" / "records.parquet")["attack"]) == {"torchattacks:Square"}


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--attack", "torchattacks:APGX"], ("did you mean 'torchattacks:APGD'",)),
        (["--attack", "foolbox:LinfPDG"], ("did you mean 'foolbox:LinfPGD'",)),
        (
            ["--attack", "torchattacks:APGD", "--set", "torchattacks:APGD.target_mode=random"],
            ("cannot run targeted", "supported_mode"),
        ),
        (["--attack", "torchattacks:APGD", "--set", "torchattacks:APGD.loss=drl"], ("did you mean 'dlr'",)),
        (
            ["--attack", "torchattacks:CW", "--set", "torchattacks:CW.steps=2"],
            ("cw-l2",),
        ),  # GM's logits are all negative
    ],
)
def test_bad_library_attacks_are_one_line_errors(gm, tmp_path, capsys, extra, fragments):
    code, _, err = run(
        capsys, "run", "--model", str(gm), "--threat", "semi-white-box", "--out", str(tmp_path / "x"), *extra, *COMMON
    )
    assert_one_line_error(code, err, *fragments)


def test_a_gradient_attack_on_the_query_only_threat_is_refused(gm, tmp_path, capsys):
    code, _, err = run(
        capsys,
        "run",
        "--model",
        str(gm),
        "--threat",
        "spsa",
        "--attack",
        "torchattacks:PGD",
        "--out",
        str(tmp_path / "x"),
        *COMMON,
    )
    assert_one_line_error(code, err, "black-box with queries only")


def test_list_attacks_mentions_the_library_prefixes(capsys):
    code, out, _ = run(capsys, "list", "attacks")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "APGD" in lines["torchattacks:NAME"] and "L2DeepFoolAttack" in lines["foolbox:NAME"] and "pgd" in lines


SUITE = """
[defaults]
n = 6
batch_size = 6
device = "cpu"
detectors = ["max-prob"]

[[model]]
name = "gm"
path = "gm.pt"

[[threat]]
name = "semi-white-box"
attacks = ["APGD-lib", "torchattacks:PGD"]
[threat.set]
"torchattacks:PGD.steps" = 2

[[threat.add]]
label = "APGD-lib"
attack = "torchattacks:APGD"
params = {steps = 3}
"""


def test_a_suite_adds_library_attacks_and_sets_their_parameters(gm, tmp_path):
    from robench.runs.prepare import prepare
    from robench.runs.suite import load_suite

    (tmp_path / "suite.toml").write_text(SUITE)
    (pair,) = load_suite(tmp_path / "suite.toml")
    attacks = {spec.label: (spec.attack, attack) for spec, attack in prepare(pair.config).attacks}
    assert set(attacks) == {"APGD-lib", "torchattacks:PGD"}
    assert (
        attacks["APGD-lib"][0] == "torchattacks:APGD"
        and attacks["APGD-lib"][1].steps == 3
        and attacks["APGD-lib"][1].eps == 0.3
    )
    assert attacks["torchattacks:PGD"][1].steps == 2
    (tmp_path / "bad.toml").write_text(
        SUITE.replace("params = {steps = 3}", 'params = {steps = 3}\ntarget_mode = "random"')
    )
    (bad,) = load_suite(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="'APGD-lib'.*cannot run targeted"):
        prepare(bad.config)


@pytest.mark.slow  # ~40 s on 2 shared cores: the suite also runs the sanity probes
def test_a_suite_with_library_attacks_runs(gm, tmp_path, capsys):
    (tmp_path / "suite.toml").write_text(SUITE)
    code, _, err = run(
        capsys, "suite", str(tmp_path / "suite.toml"), "--out", str(tmp_path / "suite-out"), "--no-progress"
    )
    assert code == 0, err
    summary = pd.read_csv(tmp_path / "suite-out" / "summary.csv")
    assert {"APGD-lib", "torchattacks:PGD"} <= set(summary["attack"])
