"""Code habits a linter does not check: every ``noqa`` says why, no line over the configured length, ruff passes.

ruff (lint and format, configured in pyproject.toml) runs in ``make lint``, which ``make test`` runs
first; the tests here also run it where ruff is installed, so a plain ``pytest`` run sees the same.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("robench", "attacks", "defenses", "tests", "benchmarks", "scripts", "reports")
# A suppression comment is "noqa: CODE[, CODE] - why" (or "(why)"): the codes, then a reason of a few words.
NOQA = re.compile(r"#\s*noqa(?P<codes>:\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?(?P<rest>.*)$")


def _python_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py") if ".venv" not in p.parts)


def _line_length() -> int:
    return int(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["line-length"])


def test_every_noqa_names_its_codes_and_says_why():
    bad = []
    for path in _python_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = NOQA.search(line)
            if match is None:
                continue
            reason = match.group("rest").strip().lstrip("-(—:").strip()
            if not match.group("codes") or len(reason) < 3:
                bad.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert not bad, "a suppression without its codes or its reason (write noqa: CODE - why):\n" + "\n".join(bad)


def test_no_line_is_longer_than_the_configured_length():
    limit = _line_length()
    long = [
        f"{path.relative_to(REPO)}:{number} ({len(line)})"
        for path in _python_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if len(line) > limit
    ]
    assert not long, f"lines over {limit} characters:\n" + "\n".join(long[:50])


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (REPO / ".venv/bin/ruff").exists(), reason="ruff is not installed"
)
@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(command):
    ruff = shutil.which("ruff") or str(REPO / ".venv/bin/ruff")
    result = subprocess.run([ruff, *command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
