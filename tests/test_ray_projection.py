"""benchmarks/ray_projection.py: its part counts match the suite files, its T(N) behaves, its --quick run prints
a row per suite."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ray_projection.py"
GPU_SUITES = ROOT / "reports" / "reproduce" / "gpu"


def load_script():
    spec = importlib.util.spec_from_file_location("ray_projection", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


proj = load_script()


def test_part_counts_match_the_suite_files():
    table3 = proj.plan_suite(GPU_SUITES / "004-table3.toml")
    assert (table3.pairs, len(table3.parts)) == (1, 6 * math.ceil(1000 / 100))  # 1 model x 6 SPSA attacks x 10 batches
    assert {p.images for p in table3.parts} == {100} and len(
        {p.cost for p in table3.parts}
    ) == 3  # 128, 4096, 8192 samples
    assert not table3.fits  # detectors = []
    table7 = proj.plan_suite(GPU_SUITES / "001-table7.toml")
    assert len(table7.parts) == 6 * 4 * math.ceil(10000 / 500)  # 6 models x FGSM, BIM, ILCM, C&W x 20 batches
    assert len(table7.fits) == 6 * 2  # kd and kd+bu on each model
    assert {key[1] for key in table7.fits.values()} == {"mnist", "cifar10"}
    table11 = proj.plan_suite(GPU_SUITES / "001-table11.toml")
    assert {p.key[0] for p in table11.parts} == {"resnet32"}  # crafted on the ResNet-32 substitutes
    assert {key[0] for key in table11.fits.values()} == {"resnet56"}  # the scored KD is the ResNet-56 target's
    table2 = proj.plan_suite(GPU_SUITES / "004-table2.toml")
    assert {p.key for p in table2.parts} == {("resnet32", "cifar10")}  # 004's "softmax" is models/cifar10-softmax.pt


def test_wall_time_falls_with_workers_and_is_bounded_below():
    times = {
        (a, f): proj.Timing(t_pass=0.01 if a == "resnet32" else 0.02, t_fwd=0.004)
        for a in ("resnet32", "resnet56")
        for f in ("mnist", "cifar10")
    }
    for path in proj.SUITES:
        row = proj.project(proj.plan_suite(path), times)
        ts = [row.t(n) for n in proj.WORKERS]
        assert ts == sorted(ts, reverse=True), (path.name, ts)
        assert math.isclose(ts[0], row.s + row.p) and ts[-1] >= row.s + row.p_max
        assert row.p_max <= row.p and row.parts > 0


def test_quick_run_prints_a_row_per_suite(tmp_path):
    out = tmp_path / "projection.md"
    suites = [GPU_SUITES / "004-table3.toml", GPU_SUITES / "004-table1.toml"]
    command = [sys.executable, str(SCRIPT), "--quick", "--out", str(out), *map(str, suites)]
    done = subprocess.run(
        command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| resnet32 | cifar10 |" in done.stdout and "one CPU thread" in done.stdout
    for name in ("004-table3", "004-table1", "**004 total**"):
        assert sum(line.startswith(f"| {name}") for line in done.stdout.splitlines()) == 1, name
    assert out.read_text().strip() == done.stdout.strip()
