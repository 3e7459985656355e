"""User-caused errors through the CLI and the Python API: one line, exit 2 (names, options) or 1 (files),
never a traceback."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest
import torch

from robench.checkpoints import bundle as bundle_module
from robench.checkpoints.bundle import load_bundle, save_bundle
from robench.checkpoints.training import TrainConfig, train_config_for
from robench.core.errors import BundleError, ConfigError
from robench.specs.run_config import RunConfig
from test_bundle import _write_payload
from test_cli import TINY_TRAIN, assert_one_line_error, run
from tiny import make_tiny

HUGE_SEED = "99999999999999999999999"  # beyond what torch.Generator.manual_seed accepts


def _exit(capsys, *args: str, code: int, fragments: tuple[str, ...] = ()) -> None:
    got, _, err = run(capsys, *args)
    assert got == code, err
    assert_one_line_error(got, err, *fragments)


# ---------------------------------------------------------------- 1. finite weights


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_save_load_and_info(tmp_path, capsys, value):
    model, meta = make_tiny()
    with torch.no_grad():
        model.backbone.mlp[2].weight[0, 0] = value
    with pytest.raises(BundleError, match=r"weight 'backbone\.mlp\.2\.weight' holds NaN or inf") as info:
        save_bundle(tmp_path / "bad.pt", model, meta)
    assert "\n" not in str(info.value) and not (tmp_path / "bad.pt").exists()
    _write_payload(tmp_path / "crafted.pt", meta, model.state_dict())  # a correct hash over the bad weights
    with pytest.raises(BundleError, match="backbone.mlp.2.weight"):
        load_bundle(tmp_path / "crafted.pt")
    _exit(capsys, "info", str(tmp_path / "crafted.pt"), code=1, fragments=("NaN or inf", "backbone.mlp.2.weight"))


# ---------------------------------------------------------------- 2. crafted metadata sizes


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"num_classes": 10**12}, "'num_classes' is 1000000000000"),
        ({"input_shape": (1, 10**6, 28)}, "input_shape side"),
        ({"input_shape": (10**4, 28, 28), "mean": (0.1,), "std": (0.3,)}, "input_shape channels"),
        ({"feature_dim": 10**9}, "'feature_dim'"),
        (
            {"arch_kwargs": {"width": 10**9, "hidden": 16, "feature_dim": 12, "dropout": 0.0}},
            "width must be an integer in [1, 4096]",
        ),
        ({"arch_kwargs": {"width": 4, "hidden": 10**9, "feature_dim": 12, "dropout": 0.0}}, "hidden must be"),
        ({"arch_kwargs": {"width": 4000, "hidden": 16, "feature_dim": 12, "dropout": 0.0}}, "more than robench builds"),
        ({"input_shape": (1, 4096, 4096)}, "more than robench builds"),
        (
            {"arch": "resnet20", "arch_kwargs": {"width": 3000, "feature_dim": None, "shortcut": "A", "dropout": 0.0}},
            "more than robench builds",
        ),
        ({"seed": 2**64}, "'seed'"),
        ({"split_seed": -(2**63) - 1}, "'split_seed'"),
    ],
)
def test_crafted_sizes_are_refused_before_anything_is_built(tmp_path, capsys, monkeypatch, change, fragment):
    model, meta = make_tiny()
    _write_payload(tmp_path / "crafted.pt", dataclasses.replace(meta, **change), model.state_dict())

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(bundle_module, "build_classifier", no_build)
    with pytest.raises(BundleError) as info:
        load_bundle(tmp_path / "crafted.pt")
    assert fragment in str(info.value) and "\n" not in str(info.value)
    _exit(capsys, "info", str(tmp_path / "crafted.pt"), code=1, fragments=(fragment,))


def test_weights_that_do_not_fit_are_refused_before_the_real_build(tmp_path, monkeypatch):
    model, meta = make_tiny()
    wide = dataclasses.replace(meta, arch_kwargs={**meta.arch_kwargs, "hidden": 60000})
    _write_payload(tmp_path / "wide.pt", wide, model.state_dict())
    monkeypatch.setattr(bundle_module, "build_classifier", lambda *a, **k: pytest.fail("the model was built"))
    with pytest.raises(
        BundleError,
        match=r"do not fit architecture 'cnn': backbone\.mlp\.2\.bias has shape \[16\] in the file but \[60000\]",
    ):
        load_bundle(tmp_path / "wide.pt")


# ---------------------------------------------------------------- 3. train options


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--arch-param", "width=0"], "width must be an integer in [1, 4096], got 0"),
        (["--arch-param", "feature_dim=-3"], "feature_dim must be"),
        (["--arch-param", "width=1000000000"], "width must be"),
        (["--arch-param", "width=2000"], "more than robench builds"),
        (["--lr", "nan"], "lr must be a finite number > 0, got nan"),
        (["--lr", "inf"], "lr must be a finite number > 0, got inf"),
        (["--lr", "-1"], "lr must be a finite number > 0"),
        (["--epochs", "0"], "epochs must be an integer >= 1"),
        (["--batch-size", "0"], "batch_size must be an integer >= 1"),
        (["--train-param", "weight_decay=nan"], "weight_decay must be a finite number"),
        (["--train-param", "optimizer=sgd", "--train-param", "momentum=0"], "momentum > 0"),
        (["--seed", HUGE_SEED], "Invalid value for '--seed'"),
        (["--seed", "-" + HUGE_SEED], "Invalid value for '--seed'"),
        (["--split-seed", HUGE_SEED], "Invalid value for '--split-seed'"),
    ],
)
def test_bad_train_options_exit_2_before_training(tmp_path, capsys, args, fragment):
    out = tmp_path / "x.pt"
    _exit(capsys, "train", "--out", str(out), *TINY_TRAIN, *args, code=2, fragments=(fragment,))
    assert not out.exists()


@pytest.mark.parametrize(
    "param", ["width=0", "width=5000", "feature_dim=0", "feature_dim=100000", "width=true", "width=2.5"]
)
def test_bad_resnet_kwargs_exit_2(tmp_path, capsys, param):
    args = [
        "train",
        "--arch",
        "resnet20",
        "--dataset",
        "digits",
        "--arch-param",
        param,
        "--out",
        str(tmp_path / "x.pt"),
        "--device",
        "cpu",
    ]
    _exit(capsys, *args, code=2, fragments=(f"{param.split('=')[0]} must be an integer in [1, ",))


def test_train_config_python_api_is_validated():
    for bad in (
        {"lr": float("nan")},
        {"lr": 0.0},
        {"momentum": float("inf")},
        {"shift": -1},
        {"hflip": 1},
        {"seed": 2**64},
        {"seed": True},
    ):
        with pytest.raises(ConfigError) as info:
            TrainConfig(**bad)
        assert "\n" not in str(info.value)
    assert train_config_for("mnist") == TrainConfig()  # defaults unchanged
    assert TrainConfig(seed=-(2**63)).seed == -(2**63) and TrainConfig(seed=2**64 - 1).seed == 2**64 - 1


def test_train_bundle_refuses_a_split_seed_out_of_range():
    from robench.checkpoints.train_bundle import train_bundle

    with pytest.raises(ConfigError, match="split_seed must be an integer in"):
        train_bundle(split_seed=2**64, progress=False)


# ---------------------------------------------------------------- seeds and --out on every command


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--model", "m.pt", "--threat", "noise", "--seed", HUGE_SEED],
        ["demo", "--seed", HUGE_SEED],
        ["train", "--out", "x.pt", "--seed", HUGE_SEED],
        ["train", "--out", "x.pt", "--split-seed", HUGE_SEED],
    ],
)
def test_seed_out_of_range_is_exit_2_everywhere(tmp_path, capsys, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    _exit(capsys, *args, code=2, fragments=("is not in the range",))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--out", ""],
        ["run", "--model", "m.pt", "--threat", "noise", "--out", ""],
        ["suite", "s.toml", "--out", ""],
        ["demo", "--out", ""],
        ["demo", "--models-dir", ""],
    ],
)
def test_empty_out_is_refused(tmp_path, capsys, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    _exit(capsys, *args, code=2, fragments=("must not be empty",))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 4. run options


@pytest.mark.parametrize("sigma", ["nan", "inf", "-0.1"])
def test_bad_sigma_is_exit_2(bundles, capsys, sigma):
    args = [
        "run",
        "--model",
        str(bundles["gm"]),
        "--threat",
        "noise",
        "--sigma",
        "0.1",
        "--sigma",
        sigma,
        "--device",
        "cpu",
    ]
    _exit(capsys, *args, code=2, fragments=("sigmas (--sigma) must be", "finite numbers >= 0"))


@pytest.mark.parametrize("flag", [["--n", "0"], ["--batch-size", "0"], ["--n", "-5"]])
def test_non_positive_n_is_exit_2(bundles, capsys, flag):
    _exit(
        capsys,
        "run",
        "--model",
        str(bundles["gm"]),
        "--threat",
        "noise",
        *flag,
        code=2,
        fragments=("must be an integer >= 1",),
    )


def test_substitute_equal_to_the_model_is_exit_2(bundles, tmp_path, capsys):
    shutil.copy(bundles["gm"], tmp_path / "copy.pt")
    for substitute in (bundles["gm"], tmp_path / "copy.pt"):
        args = [
            "run",
            "--model",
            str(bundles["gm"]),
            "--threat",
            "black-box",
            "--substitute",
            str(substitute),
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "o"),
        ]
        _exit(capsys, *args, code=2, fragments=("is the model", "white-box"))
    assert not (tmp_path / "o").exists()


def test_n_beyond_the_test_split_runs_on_all_of_it_and_says_so(bundles, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["run", "--model", str(bundles["softmax"]), "--threat", "noise", "--n", "5000", "--batch-size", "1000",
            "--detector", "max-prob", "--no-sanity", "--device", "cpu", "--out", str(out), "--no-progress"]  # fmt: skip
    code, _, err = run(capsys, *args)
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.strip()]
    assert notes == [
        "robench: note: --n 5000 is more than the 1000 test samples of "
        "'mnist-5k': running on all 1000 (run.json records samples = 1000)"
    ]
    info = json.loads((out / "run.json").read_text())
    assert info["samples"] == 1000 and info["config"]["n"] == 5000


# ---------------------------------------------------------------- 5. RunConfig types


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"attacks": "BIM"}, "attacks must be a tuple or list of names, got str 'BIM' (pass attacks=('BIM',) for one)"),
        ({"detectors": "kd"}, "detectors must be a tuple or list of names"),
        ({"attacks": ("BIM", 3)}, "attacks must be a tuple or list of names"),
        ({"n": True}, "n must be an integer >= 1"),
        ({"n": 2.5}, "n must be an integer >= 1"),
        ({"n": "10"}, "n must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"seed": 2**64}, "seed must be an integer in [-2**63, 2**64 - 1]"),
        ({"seed": 1.0}, "seed must be an integer"),
        ({"seed": False}, "seed must be an integer"),
        ({"model": 3}, "model must be a str or Path, got int 3"),
        ({"threat": None}, "threat must be a str"),
        ({"device": 0}, "device must be a str"),
        ({"substitute": ["a.pt"]}, "substitute must be a str or Path or None"),
        ({"settings": [("BIM.steps", 2)]}, "settings must be a mapping"),
        ({"detector_settings": {"kd": 1.0}}, "detector_settings must be a mapping"),
        ({"sigmas": (float("nan"),), "threat": "noise"}, "sigmas (--sigma) must be"),
        ({"sigmas": 0.1, "threat": "noise"}, "sigmas (--sigma) must be"),
        ({"sanity": "yes"}, "sanity must be true or false"),
    ],
)
def test_run_config_refuses_wrong_types_in_one_line(kwargs, fragment):
    base = {"model": "m.pt", "threat": "semi-white-box"}
    with pytest.raises(ConfigError) as info:
        RunConfig(**{**base, **kwargs})
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_run_config_takes_lists_for_tuples():
    config = RunConfig(model="m.pt", threat="noise", attacks=["noise-0.1"], detectors=["kd"], sigmas=[0.1, 0])
    assert config.attacks == ("noise-0.1",) and config.detectors == ("kd",) and config.sigmas == (0.1, 0)
    assert dataclasses.replace(config, n=5) == RunConfig(
        model="m.pt", threat="noise", n=5, attacks=("noise-0.1",), detectors=("kd",), sigmas=(0.1, 0)
    )


# ---------------------------------------------------------------- 6. a read-only model folder


def test_uncachable_detector_fit_is_one_note_and_goes_on(bundles, capsys, monkeypatch):
    from robench.detectors import cache

    def read_only(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache, "atomic_write_bytes", read_only)
    code, stdout, err = run(capsys, "detect", "--model", str(bundles["softmax"]), "--detector", "kd", "--device", "cpu")
    assert code == 0 and "fitted" in stdout
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [
        "robench: note: cannot cache detector 'kd' next to "
        f"{bundles['softmax']} (Permission denied); fitting it again next time"
    ]
    assert not (bundles["softmax"].parent / "softmax.pt.detectors").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_model_folder_is_one_note(tmp_path, capsys):
    model, meta = make_tiny()
    folder = tmp_path / "ro"
    folder.mkdir()
    save_bundle(folder / "m.pt", model, meta)
    folder.chmod(0o555)
    try:
        code, _, err = run(capsys, "detect", "--model", str(folder / "m.pt"), "--detector", "kd", "--device", "cpu")
    finally:
        folder.chmod(0o755)
    assert code == 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("robench: note: cannot cache detector 'kd' next to"), err
