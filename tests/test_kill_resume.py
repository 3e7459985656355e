"""The kill-and-resume benchmark's quick mode: a run killed by SIGKILL at a random moment resumes to identical
records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_killed_run_resumes_to_identical_summary_and_records():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kill_resume.py"), "--kills", "1", "--quick", "--seed", "3"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 0 failed" in done.stdout and "summary identical" in done.stdout
