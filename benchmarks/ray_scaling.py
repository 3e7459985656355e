"""The Ray checks, measured in one run: a four-pair suite on 1 and 2 local Ray workers beside one process, and an 8-part
run with a worker killed mid-run.

    .venv/bin/python benchmarks/ray_scaling.py --out build/ray-scaling      # about 16 minutes on 2 cores
    .venv/bin/python benchmarks/ray_scaling.py --quick --out /tmp/rs        # the CPU smoke path (tests)

1. **Suite**: the committed softmax and GM models x (semi-white-box, white-box): four pairs, each command timed
   alone, each from fresh copies of the models (so every command fits its own detectors):
   - ``plain``: one process, 2 torch threads (``robench suite S --threads 2``);
   - ``one-1``: one process, 1 thread (the thread count of the Ray tasks);
   - ``ray-1``: Ray with 1 worker of 1 thread (``--ray local --ray-cpus 1 --threads 1``);
   - ``ray-2``: Ray with 2 workers of 1 thread (``--ray local --ray-cpus 2 --threads 1``).
   Checks: ``ray-1`` / ``ray-2`` >= 1.7x; ``summary.csv`` of ``ray-1`` and ``ray-2`` byte-identical to ``one-1``;
   ``robench check --two-sided`` of ``plain`` (2 threads) against a baseline of ``ray-2`` (1 thread) passes.
2. **Killed worker**: one run of 2 attacks x 4 batches = 8 parts on ``--ray local --ray-cpus 2``; a watcher
   kills (SIGKILL, by pid) the first Ray worker it sees running a part task (Ray titles it
   ``ray::robench.part_task``), among this run's own processes only. Check: the run completes and its
   records equal an unfaulted one-process run's (``--threads 1``).

Prints one line per measurement and a Markdown table (also written to OUT/ray_scaling.md); exits 1 if a goal fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "reports" / "regression" / "models"
ROBENCH = [sys.executable, "-m", "robench"]

SUITE = """# The Ray scaling benchmark's suite (benchmarks/ray_scaling.py): 2 models x 2 threats = 4 pairs
[defaults]
n = {n}
batch_size = {batch}
seed = 0
device = "cpu"
detectors = ["kd", "max-prob"]

[[model]]
name = "softmax"
path = "softmax.pt"

[[model]]
name = "gm"
path = "gm.pt"

[[threat]]
name = "semi-white-box"
attacks = ["FGSM", "BIM", "PGD-10-un", "C&W"]
[threat.set]
"C&W.steps" = {cw_steps}
"C&W.binary_search_steps" = 2

[[threat]]
name = "white-box"
attacks = ["C&W-wb", "PGD-10-tar"]
[threat.set]
"C&W-wb.steps" = {cw_steps}
"C&W-wb.binary_search_steps" = 2
"""


def _models(folder: Path) -> Path:
    """Fresh copies of the committed models (no detector cache beside them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("softmax", "gm"):
        shutil.copyfile(MODELS / f"{name}.pt", folder / f"{name}.pt")
    return folder


def _timed(args: list[str], env: dict[str, str] | None = None) -> float:
    tic = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - tic
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(args)}\n{done.stderr[-2000:]}")
    return seconds


def suite_checks(out: Path, n: int, batch: int, cw_steps: int) -> tuple[list[str], bool]:
    modes = {
        "plain": ["--threads", "2"],
        "one-1": ["--threads", "1"],
        "ray-1": ["--threads", "1", "--ray", "local", "--ray-cpus", "1"],
        "ray-2": ["--threads", "1", "--ray", "local", "--ray-cpus", "2"],
    }
    seconds: dict[str, float] = {}
    for mode, flags in modes.items():
        folder = _models(out / f"models-{mode}")
        suite = folder / "suite.toml"
        suite.write_text(SUITE.format(n=n, batch=batch, cw_steps=cw_steps))
        seconds[mode] = _timed([*ROBENCH, "suite", str(suite), "--out", str(out / mode), "--no-progress", *flags])
        print(f"suite {mode:6s} {' '.join(flags):45s} {seconds[mode]:7.1f} s", flush=True)
    summary = {mode: (out / mode / "summary.csv").read_bytes() for mode in modes}
    speedup = seconds["ray-1"] / seconds["ray-2"]
    identical = {mode: summary[mode] == summary["one-1"] for mode in ("ray-1", "ray-2")}
    baseline = out / "baseline-ray-2.json"
    subprocess.run(
        [*ROBENCH, "baseline", str(out / "ray-2"), "--out", str(baseline), "--force"], check=True, capture_output=True
    )
    check = subprocess.run(
        [*ROBENCH, "check", str(out / "plain"), "--baseline", str(baseline), "--two-sided"],
        capture_output=True,
        text=True,
    )
    verdict = (check.stdout.strip().splitlines() or ["(no output)"])[-1]
    ok = speedup >= 1.7 and all(identical.values()) and check.returncode == 0
    rows = [
        "| suite (4 pairs, n = %d, batch %d) | wall s |" % (n, batch),
        "|---|---|",
        *(f"| {mode} ({' '.join(modes[mode])}) | {seconds[mode]:.1f} |" for mode in modes),
        "",
        f"- speed-up ray-1 / ray-2: **{speedup:.2f}x** (threshold >= 1.7x); plain (2 threads) / ray-2: "
        f"{seconds['plain'] / seconds['ray-2']:.2f}x",
        f"- summary.csv byte-identical to one-1: ray-1 {identical['ray-1']}, ray-2 {identical['ray-2']}",
        f"- robench check plain (2 threads) --baseline ray-2 (1 thread) --two-sided: exit {check.returncode}: "
        f"{verdict}",
    ]
    return rows, ok


def _ancestors(pid: int) -> set[int]:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return seen


def _part_worker(root: int) -> int | None:
    """A Ray worker under process ``root`` that is running a part task now (its title is ray::robench.part_task)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::robench.part_task") and root in _ancestors(int(entry.name)):
            return int(entry.name)
    return None


def kill_goal(out: Path, steps: int) -> tuple[list[str], bool]:
    models = _models(out / "models-kill")
    common = [
        *ROBENCH, "run", "--model", str(models / "gm.pt"), "--threat", "semi-white-box",
        "--attack", "BIM", "--attack", "PGD-10-un", "--n", "32", "--batch-size", "8",
        "--set", f"BIM.steps={steps}", "--set", f"PGD-10-un.steps={steps}", "--detector", "kd",
        "--no-sanity", "--no-progress", "--threads", "1",
    ]  # fmt: skip
    _timed([*common, "--out", str(out / "kill-unfaulted")])
    run = subprocess.Popen(
        [*common, "--out", str(out / "kill-ray"), "--ray", "local", "--ray-cpus", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed: list[int] = []

    def watch() -> None:
        while run.poll() is None and not killed:
            pid = _part_worker(run.pid)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, err = run.communicate()
    watcher.join(timeout=5)
    import json

    import pandas as pd

    same = False
    if run.returncode == 0:
        a = pd.read_parquet(out / "kill-unfaulted" / "records.parquet")
        b = pd.read_parquet(out / "kill-ray" / "records.parquet")
        same = a.equals(b)
        parts = json.loads((out / "kill-ray" / "run.json").read_text())["parts"]
    else:
        parts = {}
    ok = run.returncode == 0 and bool(killed) and same
    rows = [
        f"- 8-part run (2 attacks x 4 batches) on 2 Ray workers: killed worker pid {killed[0] if killed else '-'} "
        "(SIGKILL) while it ran a part; "
        f"the run exited {run.returncode}, computed {parts.get('computed', '-')} parts, records identical to the "
        f"unfaulted one-process run: {same}"
        + ("" if run.returncode == 0 else f" ({err.strip().splitlines()[-1] if err.strip() else ''})"),
    ]
    return rows, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "ray-scaling")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Tiny settings (the CPU smoke path the tests run): the checks are printed, not enforced.",
    )
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    n, batch, cw_steps, steps = (16, 8, 5, 100) if args.quick else (200, 25, 60, 200)
    suite_rows, suite_ok = suite_checks(args.out, n, batch, cw_steps)
    kill_rows, kill_ok = kill_goal(args.out, steps)
    report = "\n".join([*suite_rows, *kill_rows]) + "\n"
    (args.out / "ray_scaling.md").write_text(report)
    print(report)
    ok = kill_ok and (suite_ok or args.quick)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
