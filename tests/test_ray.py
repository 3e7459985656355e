"""Ray execution (robench.runs.ray_backend) on a local Ray of 2 CPUs: the same records as one process, resume both ways,
a killed worker retried, threads per worker, and the one-line errors of a bad address and a missing extra.

Every test here shares one Ray (started once per module, ``ray.init(num_cpus=2)``) and runs in one
xdist group, so CI's two pytest workers do not start two Rays on two cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from robench.checkpoints.bundle import save_bundle
from robench.core.errors import ConfigError
from robench.runs.runner import run
from robench.runs.suite import run_suite
from robench.specs.run_config import RunConfig
from tiny import make_tiny, two_model_suite

ray = pytest.importorskip("ray", reason="the Ray tests need robench[ray] (installed by the test command)")

from robench.runs.ray_backend import RaySettings, connect  # noqa: E402 - after pytest.importorskip

pytestmark = pytest.mark.xdist_group("ray")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def backend():
    """One local Ray of 2 CPUs for the module; each task gets 1 CPU (so 2 workers run at once)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 1024 * 1024,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield connect(RaySettings(threads=1))
    finally:
        ray.shutdown()


@pytest.fixture
def one_thread():
    """The driver at one torch thread, as the tasks: the records then match bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-models")
    for name in ("softmax", "gm"):
        model, meta = make_tiny(name)
        save_bundle(folder / f"{name}.pt", model, meta)
    return folder


SUITE_THREATS = """
[[threat]]
name = "semi-white-box"
attacks = ["FGSM", "PGD-10-un"]

[[threat]]
name = "white-box"
attacks = ["C&W-wb", "PGD-10-tar"]
detectors = ["kd", "max-prob"]
[threat.set]
"C&W-wb.steps" = 8
"C&W-wb.binary_search_steps" = 1
"""


def _suite(models: Path, n: int = 24) -> Path:
    text = two_model_suite(n, SUITE_THREATS).replace(f"batch_size = {n}", "batch_size = 8")
    path = models / f"suite-{n}.toml"
    path.write_text(text)
    return path


def test_a_suite_on_ray_writes_the_same_bytes_as_one_process(backend, models, tmp_path, one_thread):
    suite = _suite(models)
    local = run_suite(suite, tmp_path / "local", progress=False, echo=lambda _: None)
    on_ray = run_suite(suite, tmp_path / "ray", progress=False, echo=lambda _: None, ray=backend)
    assert (tmp_path / "local" / "summary.csv").read_bytes() == (tmp_path / "ray" / "summary.csv").read_bytes()
    pd.testing.assert_frame_equal(local, on_ray)
    for pair in ("softmax/semi-white-box", "gm/white-box"):
        a = pd.read_parquet(tmp_path / "local" / pair / "records.parquet")
        b = pd.read_parquet(tmp_path / "ray" / pair / "records.parquet")
        pd.testing.assert_frame_equal(a, b)
    import json

    info = json.loads((tmp_path / "ray" / "gm" / "white-box" / "run.json").read_text())
    assert info["execution"]["backend"] == "ray" and info["execution"]["ray"]["worker_threads"] == [1]
    assert info["parts"] == {"reused": 0, "computed": 6}  # 3 batches x 2 attacks, every one a Ray task
    assert info["attacker_density"] and info["attacker_density"][0]["fit"] == "scored detector"
    local_info = json.loads((tmp_path / "local" / "gm" / "white-box" / "run.json").read_text())
    assert info["attacker_density"] == local_info["attacker_density"]
    assert (
        local_info["detectors"]["kd"]["fit"] == "fitted" and info["detectors"]["kd"]["fit"] == "cached"
    )  # the local run's fit, cached by the bundle


def test_ray_and_local_runs_resume_each_other(backend, models, tmp_path, one_thread):
    config = RunConfig(
        model=models / "gm.pt",
        threat="semi-white-box",
        n=24,
        batch_size=8,
        device="cpu",
        detectors=("max-prob",),
        attacks=("FGSM", "PGD-10-un"),
    )
    out = tmp_path / "run"
    local = run(config, out, progress=False, echo=lambda _: None)
    assert local.info["parts"] == {"reused": 0, "computed": 6}
    on_ray = run(config, out, progress=False, echo=lambda _: None, ray=backend)
    assert on_ray.info["parts"] == {"reused": 6, "computed": 0}  # the local parts, by the same keys
    parts = sorted((out / "parts").glob("*.parquet"))
    for path in parts[:2]:
        path.unlink()  # as if the Ray run had been killed before writing these
    resumed = run(config, out, progress=False, echo=lambda _: None, ray=backend)
    assert resumed.info["parts"] == {"reused": 4, "computed": 2}
    again = run(config, out, progress=False, echo=lambda _: None)
    assert again.info["parts"] == {"reused": 6, "computed": 0}  # the parts Ray wrote, reused locally
    pd.testing.assert_frame_equal(local.records, resumed.records)
    pd.testing.assert_frame_equal(local.summary, again.summary)


def test_a_cascade_and_a_transfer_threat_on_ray_equal_one_process(backend, models, tmp_path, one_thread):
    """A cascade's later stages (re-packed batches, clean rows from the first stage's batches) and a substitute's
    bytes."""
    config = RunConfig(
        model=models / "gm.pt", threat="black-box", substitute=models / "softmax.pt", n=24, batch_size=8, device="cpu",
        detectors=("kd",), attacks=("PGD-10-un", "MIM-10-un"), cascade="misclassified",
    )  # fmt: skip
    local = run(config, tmp_path / "local", progress=False, echo=lambda _: None)
    on_ray = run(config, tmp_path / "ray", progress=False, echo=lambda _: None, ray=backend)
    pd.testing.assert_frame_equal(local.records, on_ray.records)
    assert (tmp_path / "local" / "summary.csv").read_bytes() == (tmp_path / "ray" / "summary.csv").read_bytes()
    assert set(local.records["crafted_on"]) == {"softmax"}


def _part_workers() -> list[int]:
    """Pids of the Ray workers running a part task now (Ray titles a busy worker ray::<task name>)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::robench.part_task"):
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker by its /proc title")
def test_a_worker_killed_mid_run_is_retried_and_the_records_are_those_of_an_unfaulted_run(
    backend, models, tmp_path, one_thread
):
    config = RunConfig(
        model=models / "gm.pt", threat="semi-white-box", n=32, batch_size=8, device="cpu", detectors=("max-prob",),
        attacks=("BIM", "PGD-10-un"), settings={"BIM.steps": 60, "PGD-10-un.steps": 60}, sanity=False,
    )  # fmt: skip
    unfaulted = run(config, tmp_path / "unfaulted", progress=False, echo=lambda _: None)
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for pid in _part_workers():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    faulted = run(config, tmp_path / "faulted", progress=False, echo=lambda _: None, ray=backend)
    killer.join(timeout=5)
    assert killed, "no part task was seen running"
    assert faulted.info["parts"]["computed"] == 8
    pd.testing.assert_frame_equal(unfaulted.records, faulted.records)
    assert (tmp_path / "unfaulted" / "summary.csv").read_bytes() == (tmp_path / "faulted" / "summary.csv").read_bytes()
    assert len(list((tmp_path / "faulted" / "parts").glob("*.parquet"))) == 8  # each key written once


def test_each_task_runs_torch_with_the_cpus_it_declared(backend, models, tmp_path, one_thread):
    config = RunConfig(
        model=models / "softmax.pt",
        threat="semi-white-box",
        n=16,
        batch_size=8,
        device="cpu",
        detectors=("max-prob",),
        attacks=("FGSM",),
        sanity=False,
    )
    two = connect(RaySettings(threads=2))  # the module's Ray again (2 CPUs): one task of 2 CPUs at a time
    result = run(config, tmp_path / "two", progress=False, echo=lambda _: None, ray=two)
    assert result.info["execution"]["ray"]["worker_threads"] == [2]
    assert result.info["execution"]["ray"]["cpus_per_task"] == 2
    with pytest.raises(ConfigError, match="more CPUs than the cluster has"):
        connect(RaySettings(threads=3))


def _robench(capsys, *args: str) -> tuple[int, str]:
    """``robench ARGS`` in this process: (exit code, stderr)."""
    from robench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return int(exit_.value.code), capsys.readouterr().err


def test_an_unreachable_address_and_a_missing_extra_are_one_line_errors(models, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ROBENCH_DEBUG", raising=False)
    common = [
        "run",
        "--model",
        str(models / "gm.pt"),
        "--threat",
        "semi-white-box",
        "--n",
        "4",
        "--out",
        str(tmp_path / "x"),
        "--no-progress",
    ]
    code, err = _robench(capsys, *common, "--ray", "127.0.0.1:1")
    assert (
        code != 0
        and err.strip().count("\n") == 0
        and "cannot reach a Ray cluster at 127.0.0.1:1" in err
        and "ray start --head" in err
    )
    code, err = _robench(capsys, *common, "--ray", "not an address")
    assert code != 0 and err.strip().count("\n") == 0 and "not a cluster address" in err
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the extra: an ImportError
    code, err = _robench(capsys, *common[:-2], str(tmp_path / "y"), "--no-progress", "--ray")
    assert code != 0
    assert err.strip() == "robench: error: --ray needs Ray, which is not installed here: pip install 'robench[ray]'"
    assert not (tmp_path / "y").exists()  # refused before anything was loaded or written


def test_without_ray_nothing_imports_ray():
    code = (
        "import sys; import robench, robench.cli.commands, robench.runs.runner, robench.runs.suite; "
        "assert 'ray' not in sys.modules and 'robench.runs.ray_backend' not in sys.modules, "
        "sorted(m for m in sys.modules if 'ray' in m)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


_PRIVATE_RAY_PROBE = """
import json, os, sys
from robench.runs import ray_backend

seen = {}
close = ray_backend.RayBackend.close

def recording_close(self):
    private = getattr(self, "private", None)
    if private is not None:
        folder = private.folder
        token = os.environ.get("RAY_AUTH_TOKEN_PATH")
        seen.update(folder=str(folder), mode=os.stat(folder).st_mode & 0o777, token=token, \
token_mode=token and os.stat(token).st_mode & 0o777)
    close(self)

ray_backend.RayBackend.close = recording_close
from robench.cli.commands import main

try:
    main(sys.argv[1:])
finally:
    print("SEEN " + json.dumps(seen), file=sys.stderr)
"""


def test_a_private_ray_writes_nothing_in_home_and_removes_its_folder(models, tmp_path):
    """--ray local: Ray's token (mode 0600) and session folders live in one 0700 folder robench makes and removes; HOME
    stays empty."""
    import json
    import shutil
    import tempfile

    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
        env.update(HOME=str(home), RAY_TMPDIR=str(ray_tmp), OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
        out = tmp_path / "out"
        args = [
            "run",
            "--model",
            str(models / "softmax.pt"),
            "--threat",
            "noise",
            "--n",
            "4",
            "--batch-size",
            "4",
            "--device",
            "cpu",
        ]
        args += [
            "--detector",
            "max-prob",
            "--no-sanity",
            "--no-progress",
            "--ray",
            "local",
            "--ray-cpus",
            "1",
            "--out",
            str(out),
        ]
        done = subprocess.run(
            [sys.executable, "-c", _PRIVATE_RAY_PROBE, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert (out / "summary.csv").exists()
        assert sorted(p.relative_to(home) for p in home.rglob("*")) == []  # no ~/.ray/auth_token
        assert sorted(ray_tmp.iterdir()) == []  # the private folder, Ray's sessions and the token are gone
        seen = json.loads(next(line for line in done.stderr.splitlines() if line.startswith("SEEN "))[5:])
        folder = Path(seen["folder"])  # while it ran: one 0700 folder holding Ray's files and its 0600 token
        assert folder.parent == ray_tmp and folder.name.startswith("robench-ray-") and seen["mode"] == 0o700
        assert Path(seen["token"]).parent == folder and seen["token_mode"] == 0o600
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
