"""Threat models defined in TOML files: validation (one line per error), discovery, listing, runs and suites."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from robench.attacks import ATTACKS
from robench.core.errors import ConfigError, RobenchError
from robench.runs.suite import load_suite
from robench.specs import threat_files as TF
from robench.specs.threat_files import select_threats
from robench.specs.threats import THREATS
from test_cli import assert_one_line_error
from test_cli import run as run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "reports" / "threats"
LINF = EXAMPLES / "linf-adaptive.toml"
LIBRARY = EXAMPLES / "apgd-library.toml"
SOFTMAX = ROOT / "reports" / "regression" / "models" / "softmax.pt"

GOOD = """
name = "my-threat"
description = "a test threat"
access = "grey-box"
detectors = ["max-prob"]
source = "tests"

[[attack]]
label = "PGD-3"
attack = "pgd"
[attack.params]
steps = 3
"""


@pytest.fixture(autouse=True)
def _forget_loaded_threats(monkeypatch):
    """Every test starts and ends with the built-in threats only (other tests count them, e.g. --threat all)."""
    monkeypatch.delenv(TF.THREAT_PATH_ENV, raising=False)
    before = set(THREATS.names())
    yield
    for name in list(TF._LOADED):
        if name not in before:
            TF.unload(name)


def _write(tmp_path: Path, text: str, name: str = "threat.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _library_attacks_available() -> bool:
    try:
        ATTACKS.get("torchattacks:PGD")
    except RobenchError:
        return False
    return True


def test_example_file_parses_into_a_white_box_threat():
    threat = TF.parse_threat_file(LINF)
    assert threat.name == "linf-adaptive" and threat.access == "white-box" and threat.knows_detector
    assert threat.detectors == ("kd", "max-prob") and threat.default_cascade is None and not threat.needs_substitute
    assert threat.labels() == ["PGD-100", "MIM-100"]
    pgd = threat.attacks[0]
    assert (pgd.attack, dict(pgd.params), pgd.target_mode) == (
        "pgd",
        {"steps": 100, "objective": "adaptive", "random_start": True},
        "none",
    )
    assert pgd.build("mnist").params()["eps"] == 0.3  # the family's budget still applies at run time
    assert "linf-adaptive" not in THREATS  # parsing registers nothing


def test_access_sets_what_the_attacker_knows(tmp_path):
    assert not TF.parse_threat_file(_write(tmp_path, GOOD)).knows_detector
    black = GOOD.replace('access = "grey-box"', 'access = "black-box"')
    assert not TF.parse_threat_file(_write(tmp_path, black)).knows_detector  # black-box default: it does not know
    knows = black.replace(
        'source = "tests"', 'source = "tests"\nknows_detector = true\nsubstitute = true\ncascade = "misclassified"'
    )
    threat = TF.parse_threat_file(_write(tmp_path, knows))
    assert threat.knows_detector and threat.needs_substitute and threat.default_cascade == "misclassified"
    assert TF.parse_threat_file(_write(tmp_path, GOOD.replace('"grey-box"', '"white-box"'))).knows_detector


def test_a_file_threat_declares_copies_per_budget_and_per_detector(tmp_path):
    text = (
        'name = "joint"\naccess = "white-box"\n'
        '[[attack]]\nlabel = "J"\nattack = "selective-pgd"\nper_budget = true\nper_detector = true\n'
        '[[attack]]\nlabel = "P"\nattack = "pgd"\nper_budget = true\n'
        '[[attack]]\nlabel = "C"\nattack = "cw-l2"\n'
    )
    threat = TF.parse_threat_file(_write(tmp_path, text))
    assert threat.per_budget == ("J", "P") and threat.per_detector == ("J",)
    expanded = threat.at_detectors(("kd", "max-prob")).at_budgets("mnist")
    labels = expanded.labels()
    assert {"J[kd]", "J[max-prob]", "J[kd]@Linf 0.1", "J[max-prob]@Linf 0.2", "P@Linf 0.1"} <= set(labels)
    assert "J" not in labels and not any(label.startswith("C@") for label in labels)
    spec = {s.label: s for s in expanded.attacks}["J[kd]@Linf 0.2"]
    assert spec.params == {"detector": "kd", "eps": 0.2}


def _attack(body: str, label: str = "A") -> str:
    return f'name = "t"\naccess = "grey-box"\n[[attack]]\nlabel = "{label}"\n{body}\n'


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (GOOD.replace("access =", "acess ="), ["unknown key 'acess'", "did you mean 'access'"]),
        (GOOD.replace("[[attack]]", "[[attacks]]"), ["unknown key 'attacks'", "did you mean 'attack'"]),
        (GOOD.replace('name = "my-threat"', ""), ["needs a name"]),
        (GOOD.replace('name = "my-threat"', "name = 3"), ["'name' must be a string"]),
        (GOOD.replace('access = "grey-box"', ""), ["needs an access", "white-box"]),
        (GOOD.replace('"grey-box"', '"gray-box"'), ["access 'gray-box'", "did you mean 'grey-box'"]),
        (GOOD.split("[[attack]]")[0], ["needs at least one attack"]),
        (GOOD.split("[[attack]]")[0] + 'attack = "pgd"\n', ["must be an array of tables"]),
        (GOOD.replace('["max-prob"]', '["kdd"]'), ["unknown detector 'kdd'", "did you mean 'kd'"]),
        (GOOD.replace('["max-prob"]', "[]"), ["non-empty list"]),
        (GOOD.replace('["max-prob"]', '["kd", "kd"]'), ["listed twice: kd"]),
        (
            GOOD.replace('source = "tests"', 'cascade = "misclasified"'),
            ["cascade must be one of", "did you mean 'misclassified'"],
        ),
        (GOOD.replace('source = "tests"', "substitute = true"), ['substitute = true needs access = "black-box"']),
        (GOOD.replace('source = "tests"', "knows_detector = true"), ["contradicts access 'grey-box'"]),
        (
            GOOD.replace('"grey-box"', '"white-box"').replace('source = "tests"', "knows_detector = false"),
            ["contradicts access 'white-box'"],
        ),
        (GOOD.replace('name = "my-threat"', 'name = "../up"'), ["cannot name a folder"]),
        (GOOD.replace('name = "my-threat"', 'name = "all"'), ["reserved"]),
        (_attack('attack = "pgdd"'), ["attack 'A'", "unknown attack 'pgdd'", "did you mean 'pgd'"]),
        (
            _attack('attack = "pgd"\ntarget_mode = "randm"'),
            ["attack 'A'", "target mode 'randm'", "did you mean 'random'"],
        ),
        (
            _attack('attack = "pgd"\nparams = {stpes = 3}'),
            ["attack 'A'", "no parameter 'stpes'", "did you mean 'steps'"],
        ),
        (_attack('attack = "pgd"\nparams = {steps = "many"}'), ["attack 'A'", "'steps' must be int"]),
        (_attack('attack = "pgd"\nparams = {steps = 0}'), ["attack 'A'", "steps must be an integer >= 1"]),
        (_attack('attack = "pgd"\nparams = {objective = "adaptiv"}'), ["attack 'A'", "did you mean 'adaptive'"]),
        (
            _attack('attack = "pgd"\nparams = {steps = {deep = 1}}'),
            ["attack 'A'", "parameter 'steps' must be a number"],
        ),
        (_attack('attack = "pgd"\nparams = 3'), ["attack 'A'", "'params' must be a table"]),
        (
            _attack('attack = "pgd"\nparms = {steps = 3}'),
            ["attack 'A'", "unknown key 'parms'", "did you mean 'params'"],
        ),
        (_attack('target_mode = "none"'), ["attack 'A'", "needs an attack"]),
        (_attack('attack = "pgd"', label="worst-case"), ["reserved"]),
        (_attack('attack = "pgd"', label="x=1"), ["cannot contain '='"]),
        (_attack('attack = "pgd"') + '[[attack]]\nlabel = "A"\nattack = "fgsm"\n', ["attack 'A'", "label used twice"]),
        ('name = "t"\naccess = "grey-box"\n[[attack]]\nattack = "pgd"\n', ["attack #1 needs a label"]),
        (_attack('attack = "cw-wb"'), ["attack 'A'", "attacks the detector", "grey-box"]),
        (_attack('attack = "pgd"').replace('"grey-box"', '"none"'), ["attack 'A'", "access 'none' is for corruptions"]),
        (_attack('attack = "cw-l2"\nper_budget = true'), ["attack 'A'", "per_budget", "no eps budget"]),
        (_attack('attack = "pgd"\nper_budget = "yes"'), ["attack 'A'", "'per_budget' must be true or false"]),
        (
            _attack('attack = "pgd"\nper_detector = true').replace('"grey-box"', '"white-box"'),
            ["attack 'A'", "per_detector", "no detector parameter"],
        ),
        (  # per_detector does not get an attack on the detector past a threat that does not know it
            _attack('attack = "selective-pgd"\nper_detector = true\nparams = {detector = "kd"}'),
            ["attack 'A'", "attacks the detector", "grey-box"],
        ),
        (
            _attack('attack = "cw-wb"\nper_detector = true').replace(
                'access = "grey-box"', 'access = "black-box"\nsubstitute = true\nknows_detector = true'
            ),
            ["attack 'A'", "per_detector", "crafting on a substitute does not know"],
        ),
        ('name = "t"\naccess = \n', ["not valid TOML", "line 2"]),
        ('name = "t"\n[[attack]\n', ["not valid TOML", "line 2"]),
    ],
)
def test_every_bad_file_is_one_line_naming_the_file(tmp_path, text, fragments):
    path = _write(tmp_path, text)
    with pytest.raises(RobenchError) as info:
        TF.load_threat_file(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}:"), message
    for fragment in fragments:
        assert fragment in message, message
    assert "t" not in THREATS and "my-threat" not in THREATS  # nothing half-registered


def test_unreadable_files_are_one_line_errors(tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes(GOOD.replace("a test threat", "caf\xe9").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.toml: not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        TF.load_threat_file(latin)
    with pytest.raises(ConfigError, match="no such threat file"):
        TF.load_threat_file(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is a folder"):
        TF.load_threat_file(tmp_path)
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())  # a byte-order mark is fine
    assert TF.parse_threat_file(bom).name == "my-threat"


def test_loading_registers_once_and_refuses_clashes(tmp_path):
    path = _write(tmp_path, GOOD)
    threat = TF.load_threat_file(path)
    assert THREATS.get("my-threat") is threat and TF.threat_file("my-threat").path == path.resolve()
    assert TF.load_threat_file(path) is threat  # the same file again: a no-op
    copy = _write(tmp_path, "# a copy\n" + GOOD, "copy.toml")
    assert TF.load_threat_file(copy) is threat  # the same definition from another file: a no-op too
    other = _write(tmp_path, GOOD.replace("steps = 3", "steps = 4"), "other.toml")
    with pytest.raises(
        ConfigError, match=r"other\.toml: threat 'my-threat' is already defined differently by .*threat\.toml"
    ):
        TF.load_threat_file(other)
    builtin = _write(tmp_path, GOOD.replace('"my-threat"', '"white-box"'), "builtin.toml")
    with pytest.raises(ConfigError, match="builtin.toml: threat name 'white-box' is a built-in threat model's"):
        TF.load_threat_file(builtin)
    assert THREATS.get("white-box").access == "white-box" and THREATS.get("my-threat").attacks[0].params == {"steps": 3}


def test_folders_and_the_environment_variable(tmp_path):
    folder = tmp_path / "threats"
    folder.mkdir()
    shutil.copy(LINF, folder / LINF.name)
    _write(folder, GOOD, "mine.toml")
    (folder / "notes.txt").write_text("not a threat")
    loaded = TF.load_threat_paths([folder])
    assert [t.name for t in loaded] == ["linf-adaptive", "my-threat"]  # *.toml in name order
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="--threats: folder .*empty holds no \\*.toml threat file"):
        TF.load_threat_paths([empty], "--threats")
    with pytest.raises(ConfigError, match=f"{TF.THREAT_PATH_ENV}: no such threat file or folder: .*nowhere"):
        TF.load_env({TF.THREAT_PATH_ENV: os.pathsep.join([str(folder), str(tmp_path / "nowhere")])})
    TF.unload("linf-adaptive"), TF.unload("my-threat")
    env = {TF.THREAT_PATH_ENV: os.pathsep.join([str(folder / "mine.toml"), "", str(LINF)])}
    assert [t.name for t in TF.load_env(env)] == ["my-threat", "linf-adaptive"]
    assert TF.load_env({}) == []


def test_list_shows_file_threats_with_their_path(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "threats"
    folder.mkdir()
    _write(folder, GOOD, "mine.toml")
    code, out, _ = run_cli(capsys, "list", "threats", "--threats", str(folder))
    assert code == 0
    row = next(line for line in out.splitlines() if line.strip().startswith("my-threat"))
    assert (
        "a test threat; attacks: PGD-3; access: grey-box; file: " in row
        and str((folder / "mine.toml").resolve()) in row
    )
    builtin = next(line for line in out.splitlines() if line.strip().startswith("semi-white-box"))
    assert "file:" not in builtin and "attacks: FGSM" in builtin  # built-ins as before
    TF.unload("my-threat")
    monkeypatch.setenv(TF.THREAT_PATH_ENV, str(LINF))  # discovered when the command starts
    code, out, _ = run_cli(capsys, "list", "threats")
    assert code == 0 and f"file: {LINF}" in out and "linf-adaptive" in out
    monkeypatch.setenv(TF.THREAT_PATH_ENV, str(tmp_path / "nowhere.toml"))
    code, _, err = run_cli(capsys, "list", "threats")
    assert_one_line_error(code, err, TF.THREAT_PATH_ENV, "nowhere.toml")
    monkeypatch.delenv(TF.THREAT_PATH_ENV)
    code, _, err = run_cli(
        capsys, "list", "threats", "--threats", str(_write(tmp_path, GOOD.replace("pgd", "pgdd"), "bad.toml"))
    )
    assert_one_line_error(code, err, "bad.toml: attack 'PGD-3'", "did you mean 'pgd'")


def test_select_threats_takes_a_file_and_explains_unknown_names():
    (threat,) = select_threats(str(LINF), substitute=False)
    assert threat.name == "linf-adaptive" and THREATS.get("linf-adaptive") is threat
    TF.unload("linf-adaptive")
    with pytest.raises(RobenchError, match="unknown threat model 'linf-adaptive'.*--threats FILE_OR_FOLDER"):
        select_threats("linf-adaptive", substitute=False)


@pytest.fixture
def softmax(tmp_path):
    """The committed regression softmax bundle, copied with its detector cache (a run writes nothing into reports/)."""
    shutil.copy(SOFTMAX, tmp_path / "softmax.pt")
    shutil.copytree(SOFTMAX.parent / "softmax.pt.detectors", tmp_path / "softmax.pt.detectors")
    return tmp_path / "softmax.pt"


FAST_LINF = [
    "--set",
    "PGD-100.steps=3",
    "--set",
    "MIM-100.steps=3",
    "--set",
    "PGD-100.step=0.1",
    "--set",
    "MIM-100.step=0.1",
]
RUN = ["--n", "8", "--batch-size", "8", "--device", "cpu", "--no-sanity", "--no-progress"]


def test_run_a_threat_file_end_to_end_then_resume_by_name(softmax, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        capsys, "run", "--model", str(softmax), "--threat", str(LINF), "--out", str(out), *FAST_LINF, *RUN
    )
    assert code == 0, err
    records = pd.read_parquet(out / "records.parquet")
    assert (
        set(records["threat"]) == {"linf-adaptive"}
        and set(records["attack"]) == {"PGD-100", "MIM-100"}
        and len(records) == 16
    )
    assert records["success"].any()  # eps 0.3 in 3 steps of 0.1 breaks some of a plain softmax model's inputs
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["threat"] == "linf-adaptive"
    (recorded,) = info["threats"]
    assert (
        recorded["access"] == "white-box"
        and recorded["knows_detector"] is True
        and recorded["detectors"] == ["kd", "max-prob"]
    )
    assert recorded["file"] == str(LINF) and len(recorded["file_sha256"]) == 64 and recorded["source"].startswith("004")
    assert {a["label"]: a["params"]["steps"] for a in recorded["attacks"]} == {"PGD-100": 3, "MIM-100": 3}
    assert set(info["detectors"]) == {"kd", "max-prob"}  # the threat's own detectors, without --detector
    # a rerun without the file is refused (one line saying how to load it); with it, it resumes
    TF.unload("linf-adaptive")
    code, _, err = run_cli(
        capsys, "run", "--model", str(softmax), "--threat", "linf-adaptive", "--out", str(out), *FAST_LINF, *RUN
    )
    assert_one_line_error(code, err, "unknown threat model 'linf-adaptive'", "--threats")
    code, stdout, err = run_cli(
        capsys,
        "run",
        "--model",
        str(softmax),
        "--threats",
        str(EXAMPLES / "linf-adaptive.toml"),
        "--threat",
        "linf-adaptive",
        "--out",
        str(out),
        *FAST_LINF,
        *RUN,
    )
    assert code == 0, err
    assert "reused 2 of 2 finished parts" in stdout
    assert pd.read_parquet(out / "records.parquet").equals(records)


def test_run_refuses_a_missing_or_bad_threat_file(softmax, tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "--model", str(softmax), "--threat", str(tmp_path / "nope.toml"), *RUN)
    assert_one_line_error(code, err, "nope.toml: no such threat file")
    bad = _write(tmp_path, GOOD.replace("steps = 3", "steps = -1"))
    code, _, err = run_cli(capsys, "run", "--model", str(softmax), "--threat", str(bad), *RUN)
    assert_one_line_error(code, err, "threat.toml: attack 'PGD-3'", "steps must be an integer >= 1")
    code, _, err = run_cli(
        capsys, "run", "--model", str(softmax), "--threats", str(tmp_path / "gone"), "--threat", "x", *RUN
    )
    assert_one_line_error(code, err, "--threats: no such threat file or folder")


def _suite(tmp_path: Path, softmax: Path, body: str) -> Path:
    header = f'[defaults]\nn = 8\nbatch_size = 8\ndevice = "cpu"\n\n[[model]]\nname = "softmax"\npath = "{softmax}"\n'
    return _write(
        tmp_path,
        body.split("\n[[threat]]", 1)[0] + "\n" + header + "\n[[threat]]" + body.split("\n[[threat]]", 1)[1],
        "suite.toml",
    )


def test_suite_with_threat_files_and_a_threat_file_entry(softmax, tmp_path, capsys, monkeypatch):
    import robench.runs.plan as plan_module

    # a suite always runs the model probes (its unbounded-budget probe alone takes ~30 s on 2 cores);
    # they are not what this tests
    monkeypatch.setattr(plan_module, "_sanity", lambda *args, **kwargs: pd.DataFrame())
    threats = tmp_path / "threats"
    threats.mkdir()
    shutil.copy(LINF, threats / LINF.name)
    _write(tmp_path, GOOD, "mine.toml")
    suite = _suite(
        tmp_path,
        softmax,
        'threat_files = ["threats/*.toml"]\n'
        '\n[[threat]]\nname = "linf-adaptive"\nattacks = ["PGD-100"]\n[threat.set]\n"PGD-100.steps" = 2\n'
        '\n[[threat]]\nfile = "mine.toml"\n[threat.set]\n"PGD-3.steps" = 1\n',
    )
    pairs = load_suite(suite)
    assert [(p.config.threat, p.folder) for p in pairs] == [
        ("linf-adaptive", "linf-adaptive"),
        ("my-threat", "my-threat"),
    ]
    code, stdout, err = run_cli(capsys, "suite", str(suite), "--out", str(tmp_path / "out"), "--no-progress")
    assert code == 0, err
    combined = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert set(zip(combined["threat"], combined["attack"])) >= {("linf-adaptive", "PGD-100"), ("my-threat", "PGD-3")}
    assert set(combined.loc[combined["threat"] == "my-threat", "detector"]) == {"max-prob"}  # the file's detectors
    info = json.loads((tmp_path / "out" / "softmax" / "my-threat" / "run.json").read_text())
    assert (
        info["threats"][0]["file"] == str((tmp_path / "mine.toml").resolve())
        and info["threats"][0]["access"] == "grey-box"
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            'threat_files = ["nothing/*.toml"]\n\n[[threat]]\nname = "noise"\n',
            "pattern 'nothing/*.toml' matches no file",
        ),
        ('threat_files = ["missing.toml"]\n\n[[threat]]\nname = "noise"\n', "no such threat file or folder"),
        ('threat_files = "threats"\n\n[[threat]]\nname = "noise"\n', "threat_files must be a list"),
        ('\n[[threat]]\nfile = "mine.toml"\nname = "other"\n', "name 'other' differs from the threat 'my-threat'"),
        ('\n[[threat]]\nfile = "gone.toml"\n', "gone.toml: no such threat file"),
    ],
)
def test_bad_suite_threat_files_are_one_line_errors(softmax, tmp_path, body, fragment):
    _write(tmp_path, GOOD, "mine.toml")
    with pytest.raises(ConfigError) as info:
        load_suite(_suite(tmp_path, softmax, body))
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(
    not _library_attacks_available(), reason="needs robench's torchattacks adapters (ATTACKS.get('torchattacks:PGD'))"
)
def test_library_example_loads_and_runs(softmax, tmp_path, capsys):
    threat = TF.parse_threat_file(LIBRARY)
    assert threat.access == "grey-box" and threat.default_cascade == "misclassified"
    assert [a.attack for a in threat.attacks] == ["torchattacks:APGD", "torchattacks:APGD"]
    out = tmp_path / "lib"
    fast = ["--set", "APGD-CE.steps=2", "--set", "APGD-DLR.steps=2"]
    code, _, err = run_cli(
        capsys, "run", "--model", str(softmax), "--threat", str(LIBRARY), "--out", str(out), *fast, *RUN
    )
    assert code == 0, err
    records = pd.read_parquet(out / "records.parquet")
    assert set(records["threat"]) == {"apgd-library"} and "APGD-CE" in set(records["attack"])
    assert json.loads((out / "run.json").read_text())["threats"][0]["default_cascade"] == "misclassified"


@pytest.mark.skipif(
    not _library_attacks_available(), reason="needs robench's torchattacks adapters (ATTACKS.get('torchattacks:PGD'))"
)
@pytest.mark.parametrize(
    ("access", "attack", "target_mode", "fragment"),
    [
        ("black-box", "torchattacks:PGD", "none", "takes the model's gradients"),  # queries only, no substitute
        ("grey-box", "torchattacks:SPSA", "random", "cannot run targeted"),
        ("grey-box", "torchattacks:PDG", "none", "did you mean 'torchattacks:PGD'"),
    ],
)
def test_library_attacks_the_library_refuses_are_file_errors(tmp_path, access, attack, target_mode, fragment):
    path = _write(
        tmp_path,
        f'name = "lib"\naccess = "{access}"\n[[attack]]\n'
        f'label = "L"\nattack = "{attack}"\ntarget_mode = "{target_mode}"\n',
    )
    with pytest.raises(RobenchError) as info:
        TF.load_threat_file(path)
    assert (
        str(info.value).startswith(f"{path}: attack 'L': ")
        and fragment in str(info.value)
        and "\n" not in str(info.value)
    )


# ------------------------------------------------------------ bounded, regular-file-only reading (robench.core.files)

_DRIVER = """
import contextlib, io, json, sys
from robench.cli.commands import main
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def run_in_subprocess(cases: list[list[str]], cwd: Path, timeout: float = 60) -> list[tuple[int, str]]:
    """Run robench command lines one after another in one fresh process (a hang fails the test after ``timeout``):
    [(exit, stderr)]."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(TF.THREAT_PATH_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(cases)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [(code, err) for code, err in json.loads(done.stdout.strip().splitlines()[-1])]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifos_and_devices_are_refused_without_reading(tmp_path):
    """A FIFO blocked forever and /dev/zero grew until killed; both are refused from their file type before any read."""
    os.mkfifo(tmp_path / "pipe.toml")
    folder = tmp_path / "threats"
    folder.mkdir()
    os.mkfifo(folder / "pipe.toml")  # in a --threats folder: refused, not skipped
    run = [
        "run",
        "--model",
        str(SOFTMAX),
        "--n",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(tmp_path / "out"),
    ]
    cases = [
        [*run, "--threat", "pipe.toml"],
        [*run, "--threats", "pipe.toml", "--threat", "noise"],
        [*run, "--threats", str(folder), "--threat", "noise"],
        [*run, "--threats", "/dev/zero", "--threat", "noise"],
        ["list", "threats", "--threats", "/dev/null"],
    ]
    results = run_in_subprocess(cases, tmp_path)
    for (code, err), kind in zip(results, ["FIFO", "FIFO", "FIFO", "character device", "character device"]):
        assert code == 1, err
        assert_one_line_error(code, err, f"is a {kind}", "not a regular file")
    assert not (tmp_path / "out").exists()


def test_read_user_file_refuses_non_regular_files_and_bounds_the_size(tmp_path):
    from robench.core.files import MAX_TEXT_BYTES, UserFileError, read_user_file

    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe")
        with pytest.raises(UserFileError, match="pipe: is a FIFO"):  # refused from os.stat: never opened, never blocks
            read_user_file(tmp_path / "pipe", "threat file")
    if os.path.exists("/dev/zero"):
        with pytest.raises(UserFileError, match="is a character device"):
            read_user_file("/dev/zero", "threat file")
    with pytest.raises(
        UserFileError,
        match="is a folder, not a regular file; a threat file must be a regular file \\(--threats takes folders\\)",
    ):
        read_user_file(tmp_path, "threat file", "--threats takes folders")
    with pytest.raises(UserFileError, match="not a valid file path"):
        read_user_file(tmp_path / "a\0b", "threat file")
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_TEXT_BYTES + 1))
    with pytest.raises(UserFileError, match="big.toml: larger than 1 MiB, the most robench reads of a threat file"):
        read_user_file(big, "threat file")
    big.write_bytes(b"#" * MAX_TEXT_BYTES)
    assert len(read_user_file(big, "threat file")) == MAX_TEXT_BYTES  # exactly the bound is fine
    link = tmp_path / "link.toml"
    link.symlink_to(_write(tmp_path, GOOD))
    assert TF.parse_threat_file(link).name == "my-threat"  # a symlink to a regular file is a regular file


def _attacks_file(count: int, attack: str = "fgsm") -> str:
    return 'name = "many"\naccess = "grey-box"\n' + "".join(
        f'[[attack]]\nlabel = "A{i}"\nattack = "{attack}"\n' for i in range(count)
    )


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("x = " + "[" * 50_000, ["nested more than 32 deep"]),  # was internal error: RecursionError
        ("x = " + "{a = " * 40 + "1" + "}" * 40, ["nested more than 32 deep"]),
        (
            "a" + ".a" * 100_000 + " = 1\n",
            ["a key of more than 32 dotted parts"],
        ),  # tomllib's memory is quadratic in it
        ("[" + "a." * 40 + "a]\n", ["a key of more than 32 dotted parts"]),
        ("x = " + "9" * 5000 + "\n", ["not valid TOML", "4300 digits"]),  # int() refuses it with a ValueError
        (_attacks_file(257), ["threat 'many' has 257 attacks", "at most 256"]),
        ("#" * (1 << 20) + "\n", ["larger than 1 MiB"]),
    ],
    ids=["deep-arrays", "deep-tables", "dotted-key", "dotted-header", "huge-int", "257-attacks", "over-1-MiB"],
)
def test_absurd_files_are_refused_fast_in_one_line(tmp_path, capsys, text, fragments):
    import time

    path = _write(tmp_path, text)
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "list", "threats", "--threats", str(path))
    assert time.perf_counter() - start < 10
    assert code == 1
    assert_one_line_error(code, err, "threat.toml: ", *fragments)
    assert "internal error" not in err


def test_the_bounds_keep_files_within_them_working(tmp_path):
    assert len(TF.parse_threat_file(_write(tmp_path, _attacks_file(256))).attacks) == 256
    nested = _attack('attack = "pgd"') + "[attack.params]\nsteps = 100000\n"
    assert TF.parse_threat_file(_write(tmp_path, nested)).attacks[0].params == {"steps": 100_000}
    dotted = 'name = "t"\naccess = "grey-box"\n[[attack]]\nlabel = "A"\nattack = "pgd"\nparams.steps = 3\n'
    assert TF.parse_threat_file(_write(tmp_path, dotted)).attacks[0].params == {"steps": 3}


@pytest.mark.parametrize(
    ("attack", "param", "limit", "unit"),
    [
        ("pgd", "steps", 100_000, "iterations"),
        ("spsa", "steps", 100_000, "iterations"),
        ("cw-l2", "steps", 100_000, "iterations"),
        ("apgd", "n_restarts", 1_000, "restarts"),
        ("cw-l2", "binary_search_steps", 100, "binary-search steps"),
        ("cw-wb", "first_search_steps", 100, "binary-search steps"),
        ("spsa", "samples", 65_536, "samples per iteration"),
        ("spsa", "max_batch", 65_536, "inputs per forward pass"),
        ("cw-wb", "kd_per_class", 1_000_000, "magnitude"),
        ("pgd", "eps", 1_000_000, "magnitude"),
        ("cw-l2", "kappa", 1_000_000, "magnitude"),
    ],
)
def test_attack_parameters_are_bounded(tmp_path, attack, param, limit, unit):
    access = "white-box" if attack == "cw-wb" else "grey-box"
    text = f'name = "t"\naccess = "{access}"\n[[attack]]\nlabel = "A"\nattack = "{attack}"\n[attack.params]\n'
    kind = float if param in ("eps", "kappa") else int
    assert (
        TF.parse_threat_file(_write(tmp_path, text + f"{param} = {kind(limit)!r}\n")).attacks[0].params[param] == limit
    )
    with pytest.raises(ConfigError) as info:
        TF.parse_threat_file(_write(tmp_path, text + f"{param} = {kind(limit * 10)!r}\n"))
    message = str(info.value)
    assert (
        message.startswith(f"{tmp_path / 'threat.toml'}: attack 'A': {param} must be at most {limit:,} (")
        and unit in message
    ), message


def test_huge_steps_are_refused_on_the_command_line_and_in_files(softmax, tmp_path, capsys):
    """steps = 10**12 ran until killed: refused before anything loads, from a file (exit 2) and from --set (exit 2)."""
    path = _write(tmp_path, GOOD.replace("steps = 3", f"steps = {10**12}"))
    code, _, err = run_cli(capsys, "run", "--model", str(softmax), "--threat", str(path), *RUN)
    assert_one_line_error(
        code, err, "threat.toml: attack 'PGD-3': steps must be at most 100,000 (iterations", "got 1000000000000"
    )
    code, _, err = run_cli(
        capsys, "run", "--model", str(softmax), "--threat", "semi-white-box", "--set", f"BIM.steps={10**12}", *RUN
    )
    assert code == 2
    assert_one_line_error(code, err, "attack 'BIM': steps must be at most 100,000")
    code, _, err = run_cli(capsys, "run", "--model", str(softmax), "--threat", "noise", "--sigma", "1e9", *RUN)
    assert_one_line_error(code, err, "sigma must be at most 1,000,000")


@pytest.mark.parametrize("name", ["WHITE-BOX", "White-Box", "Noise"])
def test_a_name_differing_from_a_builtin_only_in_case_is_refused(tmp_path, capsys, name):
    path = _write(tmp_path, GOOD.replace('"my-threat"', f'"{name}"'))
    code, _, err = run_cli(capsys, "list", "threats", "--threats", str(path))
    assert_one_line_error(
        code, err, f"threat name '{name}' differs only in case from '{name.lower()}', a built-in threat model's"
    )
    assert name not in THREATS


def test_a_name_differing_from_another_files_only_in_case_is_refused(tmp_path):
    TF.load_threat_file(_write(tmp_path, GOOD, "lower.toml"))
    with pytest.raises(
        ConfigError,
        match=(
            r"upper\.toml: threat name 'My-Threat' differs only in case from 'my-threat', "
            r"the threat file .*lower\.toml's"
        ),
    ):
        TF.load_threat_file(_write(tmp_path, GOOD.replace('"my-threat"', '"My-Threat"'), "upper.toml"))
    assert "My-Threat" not in THREATS


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            GOOD + '\n"bad\\nkey" = 1\n',
            "no parameter 'bad\\nkey'",
        ),  # a key with a line break (it lands under [attack.params])
        ('"top\\nkey" = 1\n' + GOOD, "unknown key 'top\\nkey'"),
        (_attack('attack = "pgd"', label="two\\nlines"), "label 'two\\nlines' cannot contain"),
        (_attack('attack = "pgd"', label="bell\\u0007"), "control characters"),
    ],
)
def test_user_text_with_line_breaks_stays_on_one_line(tmp_path, capsys, text, fragment):
    path = _write(tmp_path, text)
    code, _, err = run_cli(capsys, "list", "threats", "--threats", str(path))
    assert_one_line_error(code, err, fragment)


def test_a_path_with_a_line_break_stays_on_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "list", "threats", "--threats", str(tmp_path / "two\nlines.toml"))
    assert_one_line_error(code, err, "no such threat file or folder", "two\\nlines.toml")
    code, _, err = run_cli(capsys, "run", "--model", str(SOFTMAX), "--threat", "noi\nse", *RUN)
    assert_one_line_error(code, err, "unknown threat model 'noi\\nse'")
