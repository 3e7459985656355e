"""docs/ci.md's CI recipe runs as documented, so that it cannot rot.

The page's fenced blocks are parsed: the ``toml`` block is the suite, the ``bash`` block holding
``robench baseline`` writes the baseline on the user's machine, and the two ``yaml`` blocks (read with
PyYAML, in the test extras) are the GitHub Actions workflow and the GitLab CI job.
Each is run in its own folder, as a fresh checkout of the user's repository holding the suite, the
committed baseline and the model, at the path the suite names: a tiny untrained bundle (tests/tiny.py)
stands in for the user's model; the suite runs as written. The detector fits that robench caches beside
the model in the user's folder come along into each checkout, as a CI cache would keep them: they only
save time.

From the workflow, the shell commands of the ``run:`` steps, in order; from the GitLab job, its
``script:`` and then its ``after_script:`` lines. The install lines (``pip install ...``) are skipped: the
package is installed here already, and they would reach the network. A command that is only
``robench ...`` runs in this process through the CLI's entry point (``robench.cli.commands.main``: one
torch import for the whole test), with "every core" meaning the threads this test was given; any other
step runs in bash, with this Python's scripts folder (the ``robench`` console script) first on PATH and
``GITHUB_STEP_SUMMARY`` set as on a runner. Every command must exit 0, and ``robench check`` must write
its JUnit and Markdown files where the upload steps and the report keywords expect them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
import yaml

from robench.checkpoints.bundle import save_bundle
from robench.cli.commands import main
from robench.core import threads
from tiny import make_tiny

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "ci.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)
INSTALL = re.compile(r"^(python3? -m )?pip3? install\b")
SHELL_SYNTAX = re.compile(r"[$|;&<>`(){}*?]")


def blocks(language: str) -> list[str]:
    return [text for lang, text in FENCE.findall(PAGE.read_text()) if lang == language]


def suite_text() -> str:
    (text,) = blocks("toml")
    return text


def baseline_commands() -> list[str]:
    (block,) = [b for b in blocks("bash") if "robench baseline" in b]
    return [line for line in block.splitlines() if line.strip()]


def github_workflow() -> dict:
    (workflow,) = [yaml.safe_load(b) for b in blocks("yaml") if "runs-on:" in b]
    return workflow


def gitlab_job() -> dict:
    (job,) = [yaml.safe_load(b)["robench"] for b in blocks("yaml") if "script:" in b]
    return job


def without_installs(lines: list[str]) -> tuple[list[str], list[str]]:
    """(the commands to run, the install lines skipped)."""
    lines = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return [line for line in lines if not INSTALL.match(line)], [line for line in lines if INSTALL.match(line)]


def checkout(folder: Path, user: Path | None = None) -> Path:
    """A fresh copy of the user's repository: the suite, the model at the path it names and, from the ``user``'s
    folder, the committed baseline (and the detector fits cached beside the model, as a CI cache would keep them:
    they only save time)."""
    suite = folder / "robench" / "suite.toml"
    suite.parent.mkdir(parents=True)
    suite.write_text(suite_text())
    (model,) = tomllib.loads(suite.read_text())["model"]
    path = (suite.parent / model["path"]).resolve()
    if user is None:
        bundle, meta = make_tiny("softmax")
        save_bundle(path, bundle, meta)
    else:
        shutil.copytree((user / path.relative_to(folder)).parent, path.parent)
        shutil.copy(user / "robench" / "baseline.json", suite.parent / "baseline.json")
    return folder


def run_step(script: str, folder: Path, summary: Path, monkeypatch) -> None:
    """One step: each line in this process if every line is a plain ``robench ...`` command, else bash."""
    lines = [line for line in script.splitlines() if line.strip()]
    if all(line.startswith("robench ") and not SHELL_SYNTAX.search(line) for line in lines):
        monkeypatch.chdir(folder)
        # "every core" is the cores this test was given (one thread under make test's workers), not the machine's
        cores = torch.get_num_threads()
        monkeypatch.setattr(threads, "available_cores", lambda: cores)
        for line in lines:
            with pytest.raises(SystemExit) as info:
                main(shlex.split(line)[1:])
            assert not info.value.code, f"{line!r} exited {info.value.code}"
        return
    scripts = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": scripts + os.pathsep + os.environ.get("PATH", ""), "GITHUB_STEP_SUMMARY": str(summary)}
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (script, done.stdout, done.stderr)


def check_options(commands: list[str]) -> dict[str, str]:
    """--junit and --markdown of the recipe's one ``robench check``."""
    (check,) = [shlex.split(c) for c in commands if c.startswith("robench check ")]
    return {"junit": check[check.index("--junit") + 1], "markdown": check[check.index("--markdown") + 1]}


def assert_passing_reports(folder: Path, options: dict[str, str]) -> None:
    suite = ET.parse(folder / options["junit"]).getroot().find("testsuite")
    assert suite.get("name") == "robench check" and int(suite.get("tests")) > 0
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0")
    summary = (folder / options["markdown"]).read_text()
    assert summary.startswith("### robench check: pass") and "nothing moved" in summary


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    """The user's folder after the page's baseline block ran there."""
    folder = checkout(tmp_path_factory.mktemp("user"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_step("\n".join(baseline_commands()), folder, folder / "unused.md", monkeypatch)
    assert (folder / "robench" / "baseline.json").exists()
    return folder


def test_the_page_documents_each_part() -> None:
    commands = baseline_commands()
    assert [c.split()[:2] for c in commands] == [["robench", "suite"], ["robench", "baseline"]]
    steps = github_workflow()["jobs"]["robench"]["steps"]
    runs, installs = without_installs([line for s in steps if "run" in s for line in s["run"].splitlines()])
    assert any("robench @ git+https://" in line for line in installs)
    script, installs = without_installs(gitlab_job()["script"])
    assert any("robench @ git+https://" in line for line in installs)
    for commands in (runs, script):
        assert [c.split()[:2] for c in commands if c.startswith("robench ")] == [
            ["robench", "suite"],
            ["robench", "check"],
        ]


def test_github_actions_workflow_runs(user: Path, tmp_path: Path, monkeypatch) -> None:
    folder = checkout(tmp_path / "github", user)
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step's summary\n")
    steps = github_workflow()["jobs"]["robench"]["steps"]
    commands = []
    for step in steps:
        if "run" in step:
            lines, _ = without_installs(step["run"].splitlines())
            if lines:
                commands += lines
                run_step("\n".join(lines), folder, summary, monkeypatch)
    options = check_options(commands)
    assert_passing_reports(folder, options)
    # the summary step appended the Markdown to the shared step-summary file
    assert summary.read_text() == "earlier step's summary\n" + (folder / options["markdown"]).read_text()
    # the upload and the test reporter read the files check wrote
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert {options["junit"], options["markdown"]} <= set(upload["with"]["path"].split())
    reporter = next(s for s in steps if s.get("with", {}).get("reporter") == "java-junit")
    assert reporter["with"]["path"] == options["junit"]
    assert all(s.get("if") == "${{ !cancelled() }}" for s in steps[steps.index(upload) - 1 :])


def test_gitlab_job_runs(user: Path, tmp_path: Path, monkeypatch) -> None:
    folder = checkout(tmp_path / "gitlab", user)
    job = gitlab_job()
    commands, _ = without_installs(job["script"])
    for line in commands + job.get("after_script", []):
        run_step(line, folder, tmp_path / "unused.md", monkeypatch)
    options = check_options(commands)
    assert_passing_reports(folder, options)
    assert job["artifacts"]["reports"]["junit"] == options["junit"]
    assert job["artifacts"]["when"] == "always" and options["markdown"] in job["artifacts"]["paths"]
