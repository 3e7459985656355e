"""Output safety: names that become paths, writes inside --out, parts that must prove to be the expected ones,
one writer per folder."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from robench.core.errors import ConfigError
from robench.runs.lock import LOCK_FILE, OutputLockedError, output_lock
from robench.runs.output import contained
from robench.runs.parts import PARTS_DIR
from robench.runs.runner import RunConfig, run
from robench.runs.suite import load_suite
from robench.scoring import records as R
from tiny import two_model_suite

NOISE = '\n[[threat]]\nname = "noise"\n'


@pytest.mark.parametrize("name", ["../../x", "/abs/path", ".", "", "..", "a/b", "a\\\\b", "-x", "x" * 65, 3])
def test_suite_model_names_must_be_safe_path_parts(bundles, name):
    text = two_model_suite(8, NOISE).replace(
        'name = "softmax"', f"name = {name!r}" if isinstance(name, str) else f"name = {name}"
    )
    (bundles["gm"].parent / "s.toml").write_text(text)
    with pytest.raises(ConfigError, match="cannot name a folder") as info:
        load_suite(bundles["gm"].parent / "s.toml")
    assert "\n" not in str(info.value)


def test_suite_model_names_are_unique_ignoring_case(bundles):
    path = bundles["gm"].parent / "s.toml"
    path.write_text(two_model_suite(8, NOISE, softmax_name="GM"))
    with pytest.raises(ConfigError, match="unique"):
        load_suite(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (('detectors = ["max-prob"]', 'detectors = "max-prob"'), "'detectors' must be a list of names"),
        (('name = "noise"\n', 'name = "noise"\nsigmas = "0.1"\n'), "'sigmas' must be a list of numbers"),
        (('name = "noise"\n', 'name = "noise"\nset = "x"\n'), "must be a TOML table"),
    ],
)
def test_suite_types_get_clear_messages(bundles, edit, message):
    path = bundles["gm"].parent / "s.toml"
    text = two_model_suite(8, NOISE)
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError, match=message):
        load_suite(path)


def test_a_model_given_as_a_string_is_a_clear_error(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('model = "gm.pt"\n\n[[threat]]\nname = "noise"\n')
    with pytest.raises(ConfigError, match="model must be an array of tables"):
        load_suite(path)


def test_contained_refuses_paths_outside_the_output_folder(tmp_path):
    assert contained(tmp_path, "a", "b") == tmp_path / "a" / "b"
    for parts in (("..", "x"), ("/etc",), (".",), ("a", "..", "..", "y")):
        with pytest.raises(ConfigError, match="not inside the output folder"):
            contained(tmp_path, *parts)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(ConfigError, match="not inside"):
        contained(tmp_path, "link", "x")


def _config(path: Path, n: int = 12) -> RunConfig:
    return RunConfig(
        model=path,
        threat="semi-white-box",
        attacks=("FGSM",),
        n=n,
        batch_size=4,
        device="cpu",
        detectors=("max-prob",),
        sanity=False,
    )


def test_a_part_that_is_not_the_expected_one_is_recomputed(bundles, tmp_path):
    """Another batch's part, a foreign Parquet file or an edited part in its place: recomputed, the log says so."""
    config = _config(bundles["gm"])
    out = tmp_path / "run"
    fresh = run(config, out, progress=False)
    parts = sorted((out / PARTS_DIR).glob("*.parquet"))
    assert len(parts) == 3
    # 1: another batch's part copied over; 2: a valid Parquet file that is no part; 3: an edited part (same metadata)
    parts[0].write_bytes(parts[1].read_bytes())
    pd.DataFrame({"x": [1, 2]}).to_parquet(parts[1])
    import pyarrow.parquet as pq

    table = pq.read_table(parts[2])
    frame = table.to_pandas()
    frame[R.ADV_PRED] = (frame[R.ADV_PRED] + 1) % 10
    import pyarrow as pa

    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(table.schema.metadata), parts[2]
    )
    messages: list[str] = []
    again = run(config, out, progress=False, echo=messages.append)
    assert again.info["parts"] == {"reused": 0, "computed": 3}
    assert any("recomputed 3 finished part(s)" in m and "holds another part" in m for m in messages)
    pd.testing.assert_frame_equal(again.records, fresh.records)
    assert again.summary.equals(fresh.summary)


def _hold(out: str, ready, release) -> None:
    with output_lock(Path(out)):
        ready.set()
        release.wait(30)


def _holder(tmp_path: Path):
    """A child process holding ``tmp_path``'s lock until its ``release`` event is set: (process, release)."""
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(20)
    return holder, release


def test_one_writer_per_output_folder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    holder, _ = _holder(tmp_path)
    with pytest.raises(OutputLockedError, match=f"in use by robench process {holder.pid}") as info:
        with output_lock(tmp_path):
            pass
    assert "\n" not in str(info.value)
    os.kill(holder.pid, signal.SIGKILL)  # a killed holder: the kernel drops its lock, no clean-up needed
    holder.join(10)
    with output_lock(tmp_path) as path:
        assert path == tmp_path / LOCK_FILE and str(os.getpid()) in path.read_text()
    assert path.read_text() == ""  # released: names no holder


def test_a_second_process_can_wait_for_the_lock(tmp_path):
    holder, release = _holder(tmp_path)
    started = time.monotonic()
    multiprocessing.get_context("fork").Process(target=lambda: (time.sleep(0.5), release.set())).start()
    with output_lock(tmp_path, wait=True):
        assert time.monotonic() - started >= 0.4
    holder.join(10)


def test_two_runs_into_one_folder_the_second_is_refused(bundles, tmp_path):
    out = tmp_path / "run"
    with output_lock(out):
        with pytest.raises(OutputLockedError):
            run(_config(bundles["gm"]), out, progress=False)


# -------------------------------------------------------- the lock file is untrusted (never followed, never truncated)


def _robench(capsys, *args: str) -> tuple[int, str]:
    from robench.cli.commands import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    _, err = capsys.readouterr()
    return int(info.value.code or 0), err


def _assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("robench: error:"), err
    assert "Traceback" not in err and "internal error" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_symlinked_lock_file_is_refused_and_its_target_is_unchanged(bundles, tmp_path, capsys):
    victim = tmp_path / "victim.txt"  # a file outside --out
    victim.write_text("precious\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).symlink_to(victim)
    args = [
        "run",
        "--model",
        str(bundles["gm"]),
        "--threat",
        "semi-white-box",
        "--attack",
        "FGSM",
        "--n",
        "4",
        "--batch-size",
        "4",
    ]
    code, err = _robench(
        capsys, *args, "--device", "cpu", "--detector", "max-prob", "--no-sanity", "--no-progress", "--out", str(out)
    )
    _assert_one_line_error(code, err, "symbolic link", LOCK_FILE)
    assert victim.read_text() == "precious\n" and (out / LOCK_FILE).is_symlink()
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    dangling = tmp_path / "dangling"  # a symlink to nothing: not created through it either
    (dangling / LOCK_FILE).parent.mkdir()
    (dangling / LOCK_FILE).symlink_to(tmp_path / "created-outside")
    with pytest.raises(OutputLockedError, match="symbolic link"):
        with output_lock(dangling):
            pass
    assert not (tmp_path / "created-outside").exists()


def test_a_lock_file_robench_did_not_write_is_never_truncated(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("")
    cases = {
        "hardlink": lambda path: os.link(
            outside, path
        ),  # a second name of a file elsewhere (empty, so only the link count tells)
        "foreign": lambda path: path.write_text("not a lock\n"),  # some other file under the lock's name
        "folder": lambda path: path.mkdir(),
        "fifo": lambda path: os.mkfifo(path),
    }
    for name, make in cases.items():
        out = tmp_path / name
        out.mkdir()
        make(out / LOCK_FILE)
        with pytest.raises(OutputLockedError, match="refused to use .* as the output lock") as info:
            with output_lock(out):
                pass
        assert "\n" not in str(info.value)
    assert outside.read_text() == "" and outside.stat().st_nlink == 2
    assert (tmp_path / "foreign" / LOCK_FILE).read_text() == "not a lock\n"
    with output_lock(tmp_path / "fresh") as path:  # its own file, left by a killed run, is taken over as before
        path.write_text('{"pid": 1, "host": "h", "started": "s", "command": "c"}')
    with output_lock(tmp_path / "fresh") as path:
        assert str(os.getpid()) in path.read_text()
    assert (tmp_path / "fresh" / LOCK_FILE).stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -------------------------------------------------------- recording the git revision writes nothing into the checkout


def test_git_revision_takes_no_index_lock_and_leaves_the_index_alone(tmp_path, monkeypatch):
    import shutil
    import subprocess

    from robench.core import provenance

    if shutil.which("git") is None:
        pytest.skip("needs git")
    repo = tmp_path / "checkout"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "mod.py").write_text("x = 1\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for args in (["init", "-q", "."], ["add", "pkg/mod.py"], ["commit", "-qm", "m"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    os.utime(
        repo / "pkg" / "mod.py", (978307200, 978307200)
    )  # stale stat data: a plain 'git status' rewrites the index
    index = repo / ".git" / "index"
    before = (index.read_bytes(), index.stat().st_mtime_ns)
    calls: list[tuple[list[str], dict]] = []
    real_run = subprocess.run

    def recording_run(cmd, **kwargs):
        calls.append((list(cmd), dict(kwargs.get("env") or os.environ)))
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(provenance.subprocess, "run", recording_run)
    monkeypatch.setattr(provenance, "__file__", str(repo / "pkg" / "mod.py"))
    revision = provenance.git_revision()
    assert len(revision) == 40  # clean: the content did not change, only its stat data
    assert calls and all(
        cmd[:2] == ["git", "--no-optional-locks"] and env.get("GIT_OPTIONAL_LOCKS") == "0" for cmd, env in calls
    )
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before
    assert not (repo / ".git" / "index.lock").exists()
