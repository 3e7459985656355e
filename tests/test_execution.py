"""How a run executes: counted passes, out-of-memory halving, channels-last, torch.compile's fallback, --threads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robench.core import execution as E
from robench.core.errors import ConfigError
from robench.runs.attack_batch import BatchResult
from robench.runs.part_work import Work as _Work
from robench.runs.part_work import attack_splitting as _attack_splitting
from robench.runs.runner import RunConfig, run
from test_cli import run as run_cli

ROOT = Path(__file__).resolve().parents[1]
SOFTMAX = ROOT / "reports" / "regression" / "models" / "softmax.pt"


def test_pass_counter_counts_images_through_the_backbone(tiny_softmax):
    model, _ = tiny_softmax
    x = torch.rand(5, *model_input_shape(tiny_softmax))
    with E.PassCounter(model) as counter:
        model(x)
        model(x[:2])
    model(x)  # not counted: the hook is gone
    assert counter.images == 7


def model_input_shape(tiny):
    return tuple(tiny[1].input_shape)


def _fake_result(index: torch.Tensor) -> BatchResult:
    ids = index.numpy()
    return BatchResult({"sample": ids.copy()}, {"d": ids * 1.0}, {"d": ids * 2.0}, {}, len(ids))


def test_out_of_memory_halves_the_batch_until_it_fits_and_logs_once():
    calls, said = [], []

    def attack(x, y, index, seeds):
        calls.append((len(index), seeds))
        if len(index) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return _fake_result(index)

    index = torch.arange(10)
    work = _Work()
    result = _attack_splitting(attack, torch.zeros(10, 1), torch.zeros(10), index, (), said.append, work)
    assert list(result.columns["sample"]) == list(range(10))  # every sample once, in order
    assert result.images == 10 and work.splits == 3  # 10 -> 5 + 5 -> (2 + 3) + (2 + 3)
    assert len(said) == 1 and "halving" in said[0]
    assert len({seeds for _, seeds in calls if seeds}) == 6  # each half draws from its own seeds


def test_out_of_memory_on_one_input_is_a_one_line_error_and_other_errors_pass_through():
    def oom(x, y, index, seeds):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(ConfigError, match="single input"):
        _attack_splitting(oom, torch.zeros(1, 1), torch.zeros(1), torch.arange(1), (), print, _Work())

    def bug(x, y, index, seeds):
        raise ValueError("a real bug")

    with pytest.raises(ValueError, match="a real bug"):
        _attack_splitting(bug, torch.zeros(4, 1), torch.zeros(4), torch.arange(4), (), print, _Work())


def test_compile_failure_falls_back_to_eager_with_one_note(tiny_softmax, monkeypatch):
    model, meta = tiny_softmax
    x = torch.rand(4, *meta.input_shape)
    expected = model(x)

    def broken(self, *args, **kwargs):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(torch.nn.Module, "compile", broken)
    notes: list[str] = []
    assert E.try_compile(model, x, notes.append) is False
    assert len(notes) == 1 and "no C++ compiler" in notes[0] and "\n" not in notes[0]
    assert torch.equal(model(x), expected)


def test_channels_last_gives_the_same_records(tmp_path):
    base = dict(
        model=SOFTMAX,
        threat="semi-white-box",
        attacks=("FGSM", "BIM"),
        n=16,
        batch_size=16,
        device="cpu",
        detectors=("max-prob",),
        sanity=False,
        settings={"BIM.steps": 3},
    )
    off = run(RunConfig(**base, channels_last="off"), progress=False)
    on = run(RunConfig(**base, channels_last="on"), progress=False)
    assert on.info["execution"]["channels_last"] is True and off.info["execution"]["channels_last"] is False
    columns = ["sample", "adv_pred", "success"]
    pd.testing.assert_frame_equal(on.records[columns], off.records[columns])
    assert np.allclose(on.records["l2"], off.records["l2"], atol=1e-4)
    with pytest.raises(ConfigError, match="channels_last"):
        RunConfig(**base, channels_last="sometimes")


def test_run_json_counts_passes_per_attack(tmp_path):
    config = RunConfig(
        model=SOFTMAX,
        threat="semi-white-box",
        attacks=("FGSM", "BIM"),
        n=10,
        batch_size=10,
        device="cpu",
        detectors=(),
        sanity=False,
        settings={"BIM.steps": 4},
    )
    info = run(config, progress=False).info
    # FGSM: one forward + backward and the judging pass per image; BIM: 4 steps + the judging pass
    assert info["image_passes"] == {"semi-white-box/FGSM": 20, "semi-white-box/BIM": 50}


def test_threads_option_and_the_shared_cores_warning(tmp_path, capsys, monkeypatch):
    import subprocess

    from robench.core import threads

    active = tmp_path / "active"
    monkeypatch.setenv("ROBENCH_ACTIVE_DIR", str(active))
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    before = torch.get_num_threads()
    other = subprocess.Popen(["sleep", "60"])
    try:
        active.mkdir()
        (active / f"{other.pid}.json").write_text(
            json.dumps({"pid": other.pid, "threads": 2, "started": "now", "command": "robench run (other)"})
        )
        args = [
            "run",
            "--model",
            str(SOFTMAX),
            "--threat",
            "noise",
            "--n",
            "8",
            "--device",
            "cpu",
            "--detector",
            "max-prob",
            "--no-sanity",
            "--no-progress",
        ]
        code, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "a"), "--threads", "1")
        assert code == 0
        lines = [line for line in err.splitlines() if "warning" in line]
        assert len(lines) == 1 and str(other.pid) in lines[0] and "cores" in lines[0]
        info = json.loads((tmp_path / "a" / "run.json").read_text())
        assert info["execution"]["threads"] == 1
    finally:
        other.kill()
        other.wait()
        torch.set_num_threads(before)
    code, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "b"), "--threads", "1")
    assert code == 0 and "warning" not in err  # the other process is gone
    torch.set_num_threads(before)


@pytest.mark.slow
def test_compile_for_real_gives_the_same_logits(tiny_softmax):
    """torch.compile on this machine's CPU (needs a C++ compiler; a failure must fall back, never break the model)."""
    model, meta = tiny_softmax
    x = torch.rand(6, *meta.input_shape)
    expected = model(x).detach()
    notes: list[str] = []
    compiled = E.try_compile(model, x, notes.append)
    assert compiled or len(notes) == 1
    assert torch.allclose(model(x), expected, atol=1e-5)
    assert torch.allclose(model(x[:3]), expected[:3], atol=1e-5)  # another batch size: dynamic shapes
