"""Output safety: names that become paths, writes inside --out, parts that must prove to be the expected ones, one writer per folder."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from robench.core.errors import ConfigError
from robench.eval import records as R
from robench.eval.lock import LOCK_FILE, OutputLockedError, output_lock
from robench.eval.output import contained
from robench.eval.parts import PARTS_DIR
from robench.eval.runner import RunConfig, run
from robench.eval.suite import load_suite
from tiny import two_model_suite

NOISE = '\n[[threat]]\nname = "noise"\n'


@pytest.mark.parametrize("name", ["../../x", "/abs/path", ".", "", "..", "a/b", "a\\\\b", "-x", "x" * 65, 3])
def test_suite_model_names_must_be_safe_path_parts(bundles, name):
    text = two_model_suite(8, NOISE).replace('name = "softmax"', f"name = {name!r}" if isinstance(name, str) else f"name = {name}")
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
    return RunConfig(model=path, threat="semi-white-box", attacks=("FGSM",), n=n, batch_size=4, device="cpu", detectors=("max-prob",), sanity=False)


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

    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(table.schema.metadata), parts[2])
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
