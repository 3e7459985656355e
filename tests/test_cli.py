"""The command line: real commands, and every bad input ending as one line on stderr with a non-zero exit."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

from robench.checkpoints.bundle import save_bundle
from robench.cli.commands import main
from tiny import Payload, make_tiny

TINY_TRAIN = [
    "--epochs",
    "1",
    "--arch-param",
    "width=4",
    "--arch-param",
    "hidden=16",
    "--arch-param",
    "feature_dim=8",
    "--train-param",
    "batch_size=256",
    "--device",
    "cpu",
    "--no-progress",
]


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("robench: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_train_then_info_json(tmp_path, capsys):
    out = tmp_path / "gm.pt"
    code, stdout, _ = run(capsys, "train", "--defense", "gm", "--seed", "3", "--out", str(out), *TINY_TRAIN)
    assert code == 0
    assert "clean test accuracy" in stdout and out.exists()
    code, stdout, _ = run(capsys, "info", str(out), "--json")
    assert code == 0
    record = json.loads(stdout)
    assert record["defense"] == "gm" and record["arch"] == "cnn" and record["dataset"] == "mnist-5k"
    assert record["seed"] == 3 and len(record["content_hash"]) == 64
    assert 0.0 <= record["clean_accuracy"] <= 1.0
    assert record["defense_params"] == {"alpha": 1.0, "lam": 0.1}
    assert record["versions"]["torch"] and record["git_revision"]
    code, stdout, _ = run(capsys, "info", str(out))
    assert code == 0 and "clean_accuracy" in stdout and record["content_hash"] in stdout


def test_train_refuses_to_overwrite_without_force(tmp_path, capsys):
    model, meta = make_tiny()
    save_bundle(tmp_path / "m.pt", model, meta)
    before = (tmp_path / "m.pt").read_bytes()
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "m.pt"), *TINY_TRAIN)
    assert_one_line_error(code, err, "exists", "--force")
    assert (tmp_path / "m.pt").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["train", "--dataset", "mnist5k", "--out", "x.pt"], ["unknown dataset 'mnist5k'", "did you mean 'mnist-5k'"]),
        (["train", "--arch", "resnet21", "--out", "x.pt"], ["unknown architecture 'resnet21'", "did you mean"]),
        (["train", "--defense", "gmm", "--out", "x.pt"], ["unknown defense 'gmm'", "did you mean 'gm'"]),
        (
            ["train", "--defense", "gm", "--defense-param", "alhpa=1", "--out", "x.pt", *TINY_TRAIN],
            ["did you mean 'alpha'"],
        ),
        (["train", "--arch-param", "widht=4", "--out", "x.pt"], ["no parameter 'widht'", "did you mean 'width'"]),
        (["train", "--train-param", "epochs=zero", "--out", "x.pt"], ["'epochs' must be int"]),
        (["train", "--dataset", "cifar10", "--out", "x.pt"], ["--data-root"]),
        (["train", "--out", "x.pt", "--device", "tpu"], ["device"]),
        (["train"], ["Missing option '--out'"]),
        (["trian"], ["unknown command 'trian'", "did you mean 'train'"]),
        (["list", "defence"], ["unknown kind 'defence'", "did you mean 'defenses'"]),
        (["info"], ["Missing argument"]),
    ],
)
def test_bad_input_is_one_line_and_non_zero(tmp_path, capsys, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "x.pt").exists()


def test_info_on_bad_files(tmp_path, capsys):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Payload(marker)))
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    for name, fragment in [("missing.pt", "no such file"), ("junk.pt", "refused"), ("evil.pt", "refused")]:
        code, _, err = run(capsys, "info", str(tmp_path / name))
        assert_one_line_error(code, err, fragment)
    assert not marker.exists()


def test_list_shows_every_registry(capsys):
    code, stdout, _ = run(capsys, "list")
    assert code == 0
    for name in [
        "datasets:",
        "mnist-5k",
        "digits",
        "cifar10",
        "architectures:",
        "cnn",
        "resnet32",
        "defenses:",
        "softmax",
        "gm",
    ]:
        assert name in stdout


def test_console_script_runs_in_a_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "robench", "info", str(tmp_path / "none.pt")], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert result.stderr.strip().startswith("robench: error:") and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "robench", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout


def test_detect_fits_caches_and_refuses_inapplicable_detectors(tmp_path, capsys):
    model, meta = make_tiny("softmax")
    save_bundle(tmp_path / "m.pt", model, meta)
    args = [
        "detect",
        "--model",
        str(tmp_path / "m.pt"),
        "--detector",
        "kd",
        "--detector",
        "max-prob",
        "--device",
        "cpu",
    ]
    code, stdout, _ = run(capsys, *args)
    assert code == 0 and "fitted" in stdout and "max-prob" in stdout
    code, stdout, _ = run(capsys, *args)
    assert code == 0 and "cached" in stdout
    code, _, err = run(capsys, "detect", "--model", str(tmp_path / "m.pt"), "--detector", "gm-likelihood")
    assert_one_line_error(code, err, "needs a Gaussian head")
    code, _, err = run(
        capsys, "detect", "--model", str(tmp_path / "m.pt"), "--detector", "kd", "--set", "kd.bandwdith=1"
    )
    assert_one_line_error(code, err, "did you mean 'bandwidth'")
    code, _, err = run(capsys, "detect", "--model", str(tmp_path / "m.pt"), "--detector", "bu")
    assert_one_line_error(code, err, "no dropout")
