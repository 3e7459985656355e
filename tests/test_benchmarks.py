"""The benchmark harness runs: bench_attacks.py --quick writes a finite row per attack, cw_tail.py --quick a finite
ratio per model, gpu_check.sh's CPU path passes."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "reports" / "regression" / "models" / "softmax.pt"
ATTACKS = ["FGSM", "BIM", "PGD-10", "PGD-50", "MIM-10", "C&W-L2", "C&W-wb", "SPSA"]
STEP_HEADERS = [f"=== step {k}:" for k in range(7)]


def one_thread_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(extra)
    return env


def positive(value: str) -> bool:
    number = float(value)
    return math.isfinite(number) and number > 0


def test_bench_attacks_quick_writes_a_finite_row_per_attack(tmp_path):
    out = tmp_path / "rows.csv"
    command = [
        sys.executable,
        "benchmarks/bench_attacks.py",
        "--quick",
        "--model",
        str(MODEL),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--csv",
        str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, env=one_thread_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "global RNG left as it was: yes" in done.stdout
    assert (
        "threads 1" in done.stdout
        and "n = 16" in done.stdout
        and "precision: robench and bare loop fp32" in done.stdout
    )

    with out.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        columns = reader.fieldnames or []
    for column in (
        "attack",
        "robench_img_steps_per_s",
        "bare_img_steps_per_s",
        "robench_over_bare",
        "peer",
        "peer_img_steps_per_s",
        "robench_over_peer",
        "robench_success",
        "peer_success",
    ):
        assert column in columns
    assert {row["attack"] for row in rows} == set(ATTACKS)
    for row in rows:
        assert not row["error"], row
        assert (
            positive(row["robench_img_steps_per_s"])
            and positive(row["bare_img_steps_per_s"])
            and positive(row["robench_over_bare"])
        ), row
        assert int(row["img_steps"]) > 0 and 0.0 <= float(row["robench_success"]) <= 1.0
        if row["peer"]:
            assert positive(row["peer_img_steps_per_s"]) and positive(row["robench_over_peer"]), row
            assert 0.0 <= float(row["peer_success"]) <= 1.0
    peers = {row["peer"].split(" (")[0] for row in rows if row["peer"]}
    assert {"torchattacks PGD", "foolbox LinfPGD", "torchattacks SPSA", "foolbox L2CarliniWagnerAttack"} <= peers
    assert not next(row for row in rows if row["attack"] == "C&W-wb")["peer"]  # robench only
    spsa = next(row for row in rows if row["attack"] == "SPSA")
    assert spsa["unit"] == "fwd" and int(spsa["img_steps"]) == 16 * 2 * 2 * 8  # n x steps x 2 x samples forwards


def test_cw_tail_quick_prints_a_finite_ratio_per_model():
    command = [sys.executable, "benchmarks/cw_tail.py", "--quick", "--device", "cpu", "--threads", "1"]
    done = subprocess.run(command, cwd=ROOT, env=one_thread_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for model in ("gm.pt", "softmax.pt"):
        assert f"{model}: cw-l2 2 x 20 lr 0.01 (untargeted), n 8:" in done.stdout, done.stdout
    ratios = done.stdout.split("robench / bare: ")[-1].strip().split(", ")
    assert len(ratios) == 2 and all(positive(r) for r in ratios), done.stdout


def test_min_norm_quick_writes_a_finite_row_per_attack_and_peer(tmp_path):
    out = tmp_path / "min_norm.csv"
    command = [sys.executable, "benchmarks/min_norm.py", "--quick", "--device", "cpu", "--threads", "1", "--csv", out]
    done = subprocess.run(command, cwd=ROOT, env=one_thread_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "n = 8, steps = 5, device cpu, threads 1" in done.stdout and "bare gradient loop" in done.stdout
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(row["attack"], row["peer"]) for row in rows] == [
        ("FMN-L2", "foolbox"),
        ("FMN-L2", "foolbox-projected"),
        ("DDN", "foolbox"),
    ]
    for row in rows:
        assert all(positive(row[c]) for c in ("robench_s", "peer_s", "speed_ratio", "bare_s", "robench_over_bare"))
        assert float(row["robench_median"]) > 0 and float(row["peer_median"]) > 0  # +inf where most samples failed
        assert 0.0 <= float(row["robench_success"]) <= 1.0 and 0.0 <= float(row["peer_success"]) <= 1.0


def run_gpu_check(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    robench = Path(sys.executable).with_name("robench")
    env = one_thread_env(
        QUICK="1", DEVICE="cpu", OUT=str(tmp_path / "gpu_check"), THREADS="1", PYTHON=sys.executable, **extra
    )
    if robench.exists():
        env["ROBENCH"] = str(robench)
    return subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )


def assert_passed(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for header in STEP_HEADERS:
        assert header in done.stdout, header
    assert "all steps ok" in done.stdout


def test_gpu_check_quick_cpu_path_of_the_cheap_steps(tmp_path):
    """Setup, machine, gpu tests (skipped on cpu) and the ResNet-56 row; the others print their header and skip."""
    done = run_gpu_check(tmp_path, STEPS="0 1 2 6")
    assert_passed(done)
    assert "skipped: the gpu tests need CUDA" in done.stdout
    assert "ResNet-56" in done.stdout and "robench PGD-2" in done.stdout
    assert done.stdout.count("skipped: not in STEPS") == 3


@pytest.mark.slow
def test_gpu_check_quick_cpu_path(tmp_path):
    """Every step of the CPU quick path (about 3 minutes on a shared 2-core machine: a dozen robench processes)."""
    done = run_gpu_check(tmp_path)
    assert_passed(done)
    assert "wrote 13 rows" in done.stdout  # the benchmark's rows (softmax.pt; gm.pt the same)
    assert (tmp_path / "gpu_check" / "bench-softmax.csv").exists() and (
        tmp_path / "gpu_check" / "bench-gm.csv"
    ).exists()
