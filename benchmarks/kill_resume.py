"""Kill a run (and a suite) at random moments, rerun it, and check nothing was lost, duplicated or changed.

For each of ``--kills`` trials: start the command as a child process, send it SIGKILL (by its
process id) after a random delay within the uninterrupted run's duration, rerun the same command
to completion, and compare its ``summary.csv`` byte for byte with an uninterrupted run's and its
records (every record, no sample twice) with the reference records. Prints one line per trial and
a closing ``N passed, M failed`` line; exits 1 if any trial differs.

    python benchmarks/kill_resume.py --kills 20            # a run and a suite, 20 kills each
    python benchmarks/kill_resume.py --kills 2 --quick     # the CPU smoke test (tests/test_kill_resume.py)
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "reports" / "regression" / "models"
SUITE = """[defaults]
n = {n}
batch_size = 8
device = "cpu"
detectors = ["max-prob"]

{models}
[[threat]]
name = "semi-white-box"
attacks = ["FGSM", "BIM"]

[[threat]]
name = "noise"
"""


def _robench(*args: str) -> list[str]:
    return [sys.executable, "-m", "robench", *args]


def commands(work: Path, n: int) -> dict[str, list[str]]:
    suite = work / "suite.toml"
    models = "".join(f'[[model]]\nname = "{m}"\npath = "{MODELS / m}.pt"\n\n' for m in ("softmax", "gm"))
    suite.write_text(SUITE.format(n=n, models=models))
    run = _robench(
        "run", "--model", str(MODELS / "gm.pt"), "--threat", "semi-white-box", "--attack", "FGSM", "--attack", "BIM",
        "--n", str(n), "--batch-size", "8", "--detector", "max-prob", "--device", "cpu", "--no-progress",
        "--out", "{out}",
    )  # fmt: skip
    return {"run": run, "suite": _robench("suite", str(suite), "--no-progress", "--out", "{out}")}


def _run(command: list[str], out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([c.replace("{out}", str(out)) for c in command], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - started


def _records(out: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in sorted(out.rglob("records.parquet"))]
    return pd.concat(frames, ignore_index=True)


def trial(command: list[str], reference: Path, out: Path, delay: float) -> tuple[bool, str]:
    child = subprocess.Popen(
        [c.replace("{out}", str(out)) for c in command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    time.sleep(delay)
    killed = child.poll() is None
    if killed:
        child.kill()  # SIGKILL by process id: no clean-up runs
    child.wait()
    _run(command, out)
    same_summary = (out / "summary.csv").read_bytes() == (reference / "summary.csv").read_bytes()
    ours, theirs = _records(out), _records(reference)
    keys = ["model", "threat", "attack", "crafted_on", "sample"]
    no_duplicates = not ours.duplicated(subset=keys).any()
    same_records = ours.sort_values(keys).reset_index(drop=True).equals(theirs.sort_values(keys).reset_index(drop=True))
    ok = same_summary and no_duplicates and same_records
    return (
        ok,
        f"killed after {delay:.2f} s{'' if killed else ' (had finished)'}: "
        f"summary {'identical' if same_summary else 'DIFFERS'}, records "
        f"{'identical' if same_records else 'DIFFER'}, {'no' if no_duplicates else 'SOME'} duplicates",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="n = 16 and the run only (the test's smoke mode)")
    parser.add_argument("--only", choices=("run", "suite"), default=None, help="Kill only the run or only the suite.")
    parser.add_argument("--n", type=int, default=48, help="Samples per attack.")
    parser.add_argument(
        "--latest",
        type=float,
        default=1.0,
        help="Kill no later than this fraction of the uninterrupted run's duration.",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="robench-kill-"))
    passed = failed = 0
    try:
        todo = commands(work, 16 if args.quick else args.n)
        only = "run" if args.quick else args.only
        if only:
            todo = {only: todo[only]}
        for what, command in todo.items():
            reference = work / f"{what}-reference"
            duration = _run(command, reference)
            print(f"{what}: uninterrupted run {duration:.1f} s")
            for k in range(args.kills):
                out = work / f"{what}-{k}"
                ok, detail = trial(command, reference, out, rng.uniform(0.2, max(0.2, args.latest * duration)))
                passed, failed = passed + ok, failed + (not ok)
                print(f"{what} kill {k + 1}: {'ok' if ok else 'FAILED'}: {detail}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
