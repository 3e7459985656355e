"""robench.core.threads: --threads validation and the registry of live robench processes."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from robench.core import threads
from robench.core.errors import ConfigError


@pytest.fixture
def active_dir(tmp_path, monkeypatch):
    folder = tmp_path / "active"
    monkeypatch.setenv("ROBENCH_ACTIVE_DIR", str(folder))
    return folder


@pytest.fixture
def sleeper():
    """A live process that is not this one; killed and reaped afterwards (no zombie left)."""
    proc = subprocess.Popen(["sleep", "30"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _write_other(folder, pid, n_threads, command="robench run suite.toml"):
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"pid": pid, "threads": n_threads, "started": "2024-01-01T00:00:00+00:00", "command": command}
    path = folder / f"{pid}.json"
    path.write_text(json.dumps(entry), encoding="utf-8")
    return path


def _own_file(folder):
    return folder / f"{os.getpid()}.json"


def test_available_cores_is_positive():
    assert isinstance(threads.available_cores(), int)
    assert threads.available_cores() >= 1


def test_set_threads_sets_and_returns():
    original = torch.get_num_threads()
    try:
        assert threads.set_threads(1) == 1
        assert torch.get_num_threads() == 1
        n = threads.set_threads(None)
        assert n == threads.available_cores()
        assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(original)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_threads_rejects_bad_values(bad):
    original = torch.get_num_threads()
    try:
        with pytest.raises(ConfigError, match="--threads") as info:
            threads.set_threads(bad)
        assert "\n" not in str(info.value)
        assert torch.get_num_threads() == original
    finally:
        torch.set_num_threads(original)


def test_lone_process_gets_no_warning_and_cleans_up(active_dir):
    with threads.registered(1, "robench run a.toml") as warning:
        assert warning is None
        entry = json.loads(_own_file(active_dir).read_text(encoding="utf-8"))
        assert entry["pid"] == os.getpid()
        assert entry["threads"] == 1
        assert entry["command"] == "robench run a.toml"
        assert "T" in entry["started"]
    assert not _own_file(active_dir).exists()
    assert list(active_dir.iterdir()) == []  # no temp files left behind


def test_live_other_process_triggers_one_line_warning(active_dir, sleeper):
    _write_other(active_dir, sleeper.pid, threads.available_cores(), command="robench run\nother.toml")
    assert [e["pid"] for e in threads.other_processes()] == [sleeper.pid]
    with threads.registered(1, "robench run mine.toml") as warning:
        assert warning is not None
        assert "\n" not in warning
        assert warning.startswith("warning: 1 other robench process ")
        assert f"pid {sleeper.pid}" in warning
        assert "robench run other.toml" in warning
        assert "--threads 1" in warning
    assert not _own_file(active_dir).exists()
    assert (active_dir / f"{sleeper.pid}.json").exists()  # others' files are left alone


def test_fixed_core_count_message_and_fit(active_dir, sleeper, monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    _write_other(active_dir, sleeper.pid, 2, command="robench run x")
    with threads.registered(2, "robench run y") as warning:
        assert warning == (
            f"warning: 1 other robench process (pid {sleeper.pid}, 2 threads: robench run x) shares these 2 cores "
            "with this one (2 threads); runs slow down many times over (two C&W-wb runs on 2 cores ran ~15x slower): "
            "run them one after another, or give each --threads 1"
        )
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    with threads.registered(2, "robench run y") as warning:
        assert warning is None  # 2 + 2 threads fit on 8 cores


def test_dead_pid_file_is_ignored_and_removed(active_dir):
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: its pid is now free
    stale = _write_other(active_dir, proc.pid, 64)
    with threads.registered(1, "robench run a.toml") as warning:
        assert warning is None
    assert not stale.exists()


def test_corrupt_files_are_ignored(active_dir):
    active_dir.mkdir()
    (active_dir / "123.json").write_text("{not json", encoding="utf-8")
    (active_dir / "124.json").write_bytes(b"\xff\xfe\x00")
    (active_dir / "125.json").write_text(json.dumps([1, 2]), encoding="utf-8")
    (active_dir / "126.json").write_text(json.dumps({"pid": "x", "threads": 2}), encoding="utf-8")
    (active_dir / "127.json").write_text(json.dumps({"pid": 0, "threads": 2}), encoding="utf-8")
    assert threads.other_processes() == []
    with threads.registered(1, "robench run a.toml") as warning:
        assert warning is None
    assert not _own_file(active_dir).exists()


def test_unwritable_folder_yields_none(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    folder = blocker / "active"
    with threads.registered(1, "robench run a.toml", folder=folder) as warning:
        assert warning is None
    monkeypatch.setenv("ROBENCH_ACTIVE_DIR", str(folder))
    with threads.registered(1, "robench run a.toml") as warning:
        assert warning is None
    assert threads.other_processes() == []


def test_file_removed_when_body_raises(active_dir):
    with pytest.raises(RuntimeError, match="boom"):
        with threads.registered(1, "robench run a.toml"):
            assert _own_file(active_dir).exists()
            raise RuntimeError("boom")
    assert not _own_file(active_dir).exists()


def test_explicit_folder_overrides_env(active_dir, tmp_path):
    explicit = tmp_path / "explicit"
    with threads.registered(1, "robench run a.toml", folder=explicit):
        assert _own_file(explicit).exists()
        assert not active_dir.exists()
    assert not _own_file(explicit).exists()


def test_pid_alive_probe():
    assert threads._pid_alive(os.getpid())
    assert threads._pid_alive(1)  # init: alive, whether we may signal it (root) or not (PermissionError)
    assert not threads._pid_alive(0)
    assert not threads._pid_alive(-1)
