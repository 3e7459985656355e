"""Suite files as untrusted input: regular files only, bounded, one line per error;
[[threat.add]] beside attacks = [...]; --ray ADDRESS."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from robench.core.files import MAX_TEXT_BYTES
from robench.runs.prepare import config_threats
from robench.specs import threat_files as TF
from robench.specs.suite_file import MAX_MODELS, MAX_PAIRS, MAX_THREATS, load_suite
from robench.specs.threats import THREATS
from test_cli import assert_one_line_error
from test_cli import run as run_cli
from test_threat_files import (
    GOOD,
    SOFTMAX,
    _forget_loaded_threats,  # noqa: F401 - the autouse fixture, shared
    run_in_subprocess,
)
from tiny import two_model_suite

NOISE = '\n[[threat]]\nname = "noise"\n'
# attacks = [...] picks the threat's own noise-0.05; [[threat.add]] adds another noise level: both must run
SELECT_AND_ADD = (
    '\n[[threat]]\nname = "noise"\nmodels = ["softmax"]\nattacks = ["noise-0.05"]\n'
    '[[threat.add]]\nlabel = "noise-big"\nattack = "gaussian-noise"\nparams = {sigma = 0.3}\n'
)


def _suite(folder: Path, threats: str = NOISE, name: str = "suite.toml") -> Path:
    path = folder / name
    path.write_text(two_model_suite(4, threats))
    return path


def test_attacks_and_added_attacks_run_together(bundles, tmp_path, capsys, monkeypatch):
    """With attacks = [...] on a threat, its [[threat.add]] attacks were dropped in silence (exit 0):
    now the union runs."""
    import robench.runs.plan as plan_module

    suite = _suite(tmp_path, SELECT_AND_ADD)
    (pair,) = load_suite(suite)
    assert pair.config.attacks == ("noise-0.05", "noise-big")
    (threat,) = config_threats(pair.config)
    assert threat.labels() == ["noise-0.05", "noise-big"] and threat.attacks[1].params == {"sigma": 0.3}
    # an added label also listed in attacks is not repeated; without attacks every attack runs, as before
    listed = _suite(tmp_path, SELECT_AND_ADD.replace('["noise-0.05"]', '["noise-big", "noise-0.05"]'), "listed.toml")
    assert load_suite(listed)[0].config.attacks == ("noise-big", "noise-0.05")
    everything = _suite(tmp_path, SELECT_AND_ADD.replace('attacks = ["noise-0.05"]\n', ""), "all.toml")
    assert load_suite(everything)[0].config.attacks == ()
    monkeypatch.setattr(
        plan_module, "_sanity", lambda *args, **kwargs: pd.DataFrame()
    )  # the model probes are not what this tests
    code, _, err = run_cli(capsys, "suite", str(suite), "--out", str(tmp_path / "out"), "--no-progress")
    assert code == 0, err
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert {"noise-0.05", "noise-big"} <= set(summary["attack"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifos_and_devices_as_suites_or_in_them_are_refused(bundles, tmp_path):
    """A FIFO given as the suite, or named by it as a threat file, blocked forever; /dev/zero grew until killed."""
    os.mkfifo(tmp_path / "pipe.toml")
    os.mkfifo(tmp_path / "threat-pipe.toml")
    listed = _suite(tmp_path, NOISE, "listed.toml")
    listed.write_text('threat_files = ["threat-pipe.toml"]\n' + listed.read_text())
    _suite(tmp_path, '\n[[threat]]\nfile = "threat-pipe.toml"\n', "entry.toml")
    pattern = _suite(tmp_path, NOISE, "pattern.toml")
    pattern.write_text('threat_files = ["threat-*.toml"]\n' + pattern.read_text())
    cases = [
        ["suite", "pipe.toml", "--out", "o"],
        ["suite", "/dev/zero", "--out", "o"],
        ["suite", "listed.toml", "--out", "o"],
        ["suite", "entry.toml", "--out", "o"],
        ["suite", "pattern.toml", "--out", "o"],
        ["suite", str(_suite(tmp_path)), "--out", "o", "--threats", "pipe.toml"],
    ]
    results = run_in_subprocess(cases, tmp_path)
    kinds = [
        "pipe.toml: is a FIFO",
        "/dev/zero: is a character device",
        *["threat-pipe.toml: is a FIFO"] * 3,
        "pipe.toml: is a FIFO",
    ]
    for (code, err), kind in zip(results, kinds):
        assert code == 1, err
        assert_one_line_error(code, err, kind, "must be a regular file")
    assert not (tmp_path / "o").exists()


def _big_suite(models: int, threats: int) -> str:
    text = '[defaults]\nn = 4\ndevice = "cpu"\n'
    text += "".join(f'[[model]]\nname = "m{i}"\npath = "softmax.pt"\n' for i in range(models))
    return text + "".join(f'[[threat]]\nname = "noise"\nmodels = ["m{i % models}"]\n' for i in range(threats))


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("x = " + "[" * 50_000, ["nested more than 32 deep"]),  # was internal error: RecursionError
        ("a" + ".a" * 100_000 + " = 1\n", ["a key of more than 32 dotted parts"]),
        ("#" * (MAX_TEXT_BYTES + 1), ["larger than 1 MiB, the most robench reads of a suite file"]),
        (b"\xff\xfe[defaults]\n", ["not UTF-8 text (byte 0xff at offset 0)"]),
        (_big_suite(MAX_MODELS + 1, 1), [f"model: {MAX_MODELS + 1} tables; a suite holds at most {MAX_MODELS}"]),
        (_big_suite(1, MAX_THREATS + 1), [f"threat: {MAX_THREATS + 1} tables; a suite holds at most {MAX_THREATS}"]),
        (
            two_model_suite(
                4, '\n[[threat]]\nname = "noise"\n' + '[[threat.add]]\nattack = "gaussian-noise"\nlabel = "x"\n' * 257
            ),
            ["257 [[threat.add]] attacks; a threat takes at most 256"],
        ),
        (
            two_model_suite(
                4, '\n[[threat]]\nname = "noise"\nsigmas = [' + ", ".join(f"0.{i:03d}1" for i in range(257)) + "]\n"
            ),
            ["257 sigmas"],
        ),
    ],
    ids=[
        "deep",
        "dotted-key",
        "over-1-MiB",
        "not-utf8",
        "too-many-models",
        "too-many-threats",
        "too-many-added",
        "too-many-sigmas",
    ],
)
def test_absurd_suites_are_refused_fast_in_one_line(bundles, tmp_path, capsys, text, fragments):
    path = tmp_path / "suite.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "suite", str(path), "--out", str(tmp_path / "out"))
    assert time.perf_counter() - start < 10
    assert code == 1
    assert_one_line_error(code, err, "suite.toml", *fragments)
    assert not (tmp_path / "out").exists()


def test_pairs_are_bounded(bundles, tmp_path):
    # 70 models, the black-box threat from each of them as substitute: 70 x 69 = 4,830 pairs, above MAX_PAIRS
    names = [f"m{i}" for i in range(70)]
    text = '[defaults]\nn = 4\ndevice = "cpu"\n' + "".join(
        f'[[model]]\nname = "{name}"\npath = "softmax.pt"\n' for name in names
    )
    text += f'[[threat]]\nname = "black-box"\nsubstitute = {names!r}\n'.replace("'", '"')
    path = tmp_path / "suite.toml"
    path.write_text(text)
    with pytest.raises(Exception, match=f"more than {MAX_PAIRS} model x threat pairs"):
        load_suite(path)


def test_suite_threat_files_patterns_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(TF, "MAX_THREAT_FILES", 3)
    for i in range(4):
        (tmp_path / "threats").mkdir(exist_ok=True)
        (tmp_path / "threats" / f"t{i}.toml").write_text(GOOD.replace("my-threat", f"t{i}"))
    with pytest.raises(Exception, match="threat_files match more than 3 files"):
        TF.load_threat_patterns(["threats/*.toml"], tmp_path, "suite.toml")
    with pytest.raises(Exception, match="--threats: more than 3 threat files"):
        TF.load_threat_paths([tmp_path / "threats"], "--threats")
    assert not any(f"t{i}" in THREATS for i in range(4))  # refused before any was loaded


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('"top\\nkey" = 1\n', "unknown key 'top\\nkey'"),
        ('[defaults]\n"n\\r" = 1\n', "unknown key 'n\\r'"),
        ('\n[[threat]]\nname = "noi\\nse"\n', "name 'noi\\nse' cannot name a folder"),
        ('\n[[threat]]\nfile = "two\\nlines.toml"\n', "two\\nlines.toml': no such threat file"),
        ('\n[[threat]]\nfile = "nul\\u0000.toml"\n', "not a valid file path"),
    ],
)
def test_user_text_with_line_breaks_stays_on_one_line(bundles, tmp_path, capsys, text, fragment):
    path = tmp_path / "suite.toml"
    path.write_text(
        text + two_model_suite(4, NOISE)
        if text.startswith('"')
        else two_model_suite(4, text)
        if "[[threat]]" in text
        else text + "\n"
    )
    code, _, err = run_cli(capsys, "suite", str(path), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, fragment)


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("10.0.0.5:6379\nINJECTED", "'10.0.0.5:6379\\nINJECTED'"),
        ("10.0.0.5:6379\r", "'10.0.0.5:6379\\r'"),
        ("10.0.0.5 6379", "'10.0.0.5 6379'"),
        ("host\x1b[31m:1", "'host\\x1b[31m:1'"),
        ("h" * 300 + ":1", "... (302 characters)"),
        ("", "''"),
    ],
)
def test_ray_addresses_are_checked_before_use(bundles, tmp_path, capsys, address, fragment):
    """A --ray address with a line break turned the one-line error into two: now it is refused first, escaped."""
    suite = _suite(tmp_path)
    for command in (
        ["run", "--model", str(SOFTMAX), "--threat", "noise", "--n", "2", "--out", str(tmp_path / "run")],
        ["suite", str(suite), "--out", str(tmp_path / "suite-out")],
    ):
        code, _, err = run_cli(capsys, *command, "--ray", address)
        assert code == 2
        assert_one_line_error(code, err, "--ray", fragment, "not a cluster address")
    assert not (tmp_path / "run").exists() and not (tmp_path / "suite-out").exists()
