"""Checkpoint bundles: round trip, and every kind of bad file refused with a one-line BundleError."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle

import pytest
import torch

from robench.checkpoints.bundle import BundleMeta, load_bundle, save_bundle
from robench.core.errors import BundleError
from robench.core.provenance import state_dict_hash
from tiny import Payload, make_tiny


@pytest.mark.parametrize("defense", ["softmax", "gm"])
def test_round_trip_gives_identical_logits_and_metadata(tmp_path, defense):
    model, meta = make_tiny(defense)
    path = tmp_path / "m.pt"
    written_hash = save_bundle(path, model, meta)
    bundle = load_bundle(path)
    x = torch.rand(7, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), bundle.model(x))
        assert torch.equal(model.features(x), bundle.model.features(x))
    assert bundle.meta == meta
    assert bundle.content_hash == written_hash
    assert bundle.defense.params() == meta.defense_params
    if defense == "gm":
        torch.testing.assert_close(bundle.model.head.means, model.head.means)


def test_content_hash_depends_on_weights_not_on_serialisation(tmp_path):
    model, meta = make_tiny("softmax", seed=0)
    other, _ = make_tiny("softmax", seed=1)
    assert save_bundle(tmp_path / "a.pt", model, meta) == save_bundle(tmp_path / "b.pt", model, meta)
    assert save_bundle(tmp_path / "c.pt", other, meta) != save_bundle(tmp_path / "a.pt", model, meta)


def _write_payload(path, meta: BundleMeta, state, content_hash=None):
    payload = {
        "format": "robench-bundle",
        "version": 1,
        "meta": meta.to_json(),
        "state_dict": state,
        "content_hash": content_hash or state_dict_hash(state, meta.identity()),
    }
    torch.save(payload, path)


def assert_refused(path, match):
    with pytest.raises(BundleError, match=match) as info:
        load_bundle(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_file_and_directory(tmp_path):
    assert_refused(tmp_path / "nope.pt", "no such file")
    assert_refused(tmp_path, "not a file")


def test_random_bytes_and_text_are_not_bundles(tmp_path):
    (tmp_path / "junk.pt").write_bytes(os.urandom(2000))
    assert_refused(tmp_path / "junk.pt", "not a readable checkpoint")
    (tmp_path / "text.pt").write_text("hello")
    assert_refused(tmp_path / "text.pt", "not a readable checkpoint")


def test_plain_torch_checkpoint_is_not_a_bundle(tmp_path):
    model, _ = make_tiny()
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    assert_refused(tmp_path / "plain.pt", "not a robench bundle")


def test_truncated_file_is_refused(tmp_path):
    model, meta = make_tiny()
    save_bundle(tmp_path / "m.pt", model, meta)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    assert_refused(tmp_path / "cut.pt", "not a readable checkpoint")


def test_edited_weights_fail_the_content_hash(tmp_path):
    model, meta = make_tiny()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    honest_hash = state_dict_hash(state, meta.identity())
    state["head.weight"][0, 0] += 1.0
    _write_payload(tmp_path / "edited.pt", meta, state, content_hash=honest_hash)
    assert_refused(tmp_path / "edited.pt", "content hash mismatch")


def test_unknown_architecture_gets_did_you_mean(tmp_path):
    model, meta = make_tiny()
    bad = dataclasses.replace(meta, arch="cnm")
    _write_payload(tmp_path / "arch.pt", bad, model.state_dict())
    message = assert_refused(tmp_path / "arch.pt", "unknown architecture 'cnm'")
    assert "did you mean 'cnn'" in message


def test_unknown_defense_is_refused(tmp_path):
    model, meta = make_tiny()
    _write_payload(tmp_path / "d.pt", dataclasses.replace(meta, defense="magic"), model.state_dict())
    assert_refused(tmp_path / "d.pt", "unknown defense 'magic'")


def test_mismatched_shapes_are_refused(tmp_path):
    model, meta = make_tiny()
    wider = dataclasses.replace(meta, arch_kwargs={**meta.arch_kwargs, "width": 6})
    _write_payload(tmp_path / "shape.pt", wider, model.state_dict())
    assert_refused(tmp_path / "shape.pt", "do not fit architecture 'cnn'")
    other_input = dataclasses.replace(meta, input_shape=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    _write_payload(tmp_path / "input.pt", other_input, model.state_dict())
    assert_refused(tmp_path / "input.pt", "do not fit architecture 'cnn'")


def test_malformed_metadata_is_refused(tmp_path):
    model, meta = make_tiny()
    state = model.state_dict()
    payload = {"format": "robench-bundle", "version": 1, "meta": "{not json", "state_dict": state, "content_hash": "x"}
    torch.save(payload, tmp_path / "j.pt")
    assert_refused(tmp_path / "j.pt", "not valid JSON")
    raw = json.loads(meta.to_json())
    del raw["arch"]
    payload["meta"] = json.dumps(raw)
    torch.save(payload, tmp_path / "k.pt")
    assert_refused(tmp_path / "k.pt", "lacks arch")
    raw = json.loads(meta.to_json())
    raw["num_classes"] = "ten"
    payload["meta"] = json.dumps(raw)
    torch.save(payload, tmp_path / "l.pt")
    assert_refused(tmp_path / "l.pt", "'num_classes' has the wrong type")
    torch.save({**payload, "version": 99}, tmp_path / "v.pt")
    assert_refused(tmp_path / "v.pt", "version 99 is not supported")


def test_raw_pickle_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    for protocol in (2, pickle.DEFAULT_PROTOCOL):
        (tmp_path / "evil.pt").write_bytes(pickle.dumps(Payload(marker), protocol=protocol))
        assert_refused(tmp_path / "evil.pt", "refused")
    assert not marker.exists()


def test_payload_inside_a_torch_zip_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    model, meta = make_tiny()
    buffer = io.BytesIO()
    torch.save(
        {
            "format": "robench-bundle",
            "version": 1,
            "meta": meta.to_json(),
            "state_dict": model.state_dict(),
            "content_hash": "x",
            "extra": Payload(marker),
        },
        buffer,
    )
    (tmp_path / "evil.pt").write_bytes(buffer.getvalue())
    assert_refused(tmp_path / "evil.pt", r"refused: the file references \S*system")
    assert not marker.exists()


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    model, meta = make_tiny()
    save_bundle(tmp_path / "m.pt", model, meta)
    save_bundle(tmp_path / "m.pt", model, meta)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


# ---------------------------------------------------------------- crafted metadata with a valid content hash


def _craft(path, meta: BundleMeta, state, **changes):
    """A bundle whose metadata JSON has ``changes`` applied, hashed as an attacker would (the hash is valid)."""
    raw = json.loads(meta.to_json())
    raw.update(changes)
    identity = {
        k: raw[k]
        for k in (
            "arch",
            "arch_kwargs",
            "defense",
            "defense_params",
            "num_classes",
            "input_shape",
            "value_range",
            "mean",
            "std",
        )
    }
    payload = {
        "format": "robench-bundle",
        "version": 1,
        "meta": json.dumps(raw),
        "state_dict": state,
        "content_hash": state_dict_hash(state, identity),
    }
    torch.save(payload, path)


def _nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"clean_accuracy": 7.5}, "'clean_accuracy' is 7.5, outside [0.0, 1.0]"),
        ({"clean_accuracy": -0.25}, "'clean_accuracy' is -0.25"),
        ({"clean_accuracy": float("nan")}, "'clean_accuracy' holds a non-finite number"),
        ({"clean_accuracy": "99%"}, "'clean_accuracy' has the wrong type"),
        ({"clean_accuracy": True}, "'clean_accuracy' has the wrong type"),
        ({"value_range": [1.0, 0.0]}, "'value_range' is [1, 0]: it needs low < high"),
        ({"value_range": [0.5, 0.5]}, "'value_range' is [0.5, 0.5]"),
        ({"value_range": [0.0, float("inf")]}, "'value_range' holds a non-finite number"),
        ({"value_range": [-1e300, 1e300]}, "'value_range' is [-1e+300, 1e+300]"),
        ({"mean": [0.1, 0.2], "std": [0.3, 0.3]}, "one value per input channel (1), got 2 and 2"),
        ({"std": [0.0]}, "'std' is 0.0, outside [1e-06, 1000000.0]"),
        ({"std": [-0.3]}, "'std' is -0.3"),
        ({"std": [float("nan")]}, "'std' holds a non-finite number"),
        ({"mean": [1e300]}, "'mean' is 1e+300"),
        ({"train_seconds": -1.0}, "'train_seconds' is -1.0"),
        ({"train_seconds": float("inf")}, "'train_seconds' holds a non-finite number"),
        ({"train_config": [1, 2]}, "'train_config' has the wrong type"),
        ({"train_config": {"history": 5}}, "'train_config' has a malformed history"),
        ({"train_config": {"lr": float("nan")}}, "'train_config' holds a non-finite number"),
        ({"train_config": {"history": [{"loss": float("-inf")}]}}, "'train_config' holds a non-finite number"),
        ({"versions": {"torch": 2}}, "'versions' has the wrong type"),
        ({"versions": []}, "'versions' has the wrong type"),
        ({"git_revision": 5}, "'git_revision' has the wrong type"),
        ({"git_revision": "abc\nclean_accuracy  99.00%"}, "'git_revision' holds a control character"),
        ({"created_at": "x\rclean_accuracy  99.00%"}, "'created_at' holds a control character"),
        ({"train_config": {"x": _nested(40)}}, "nests deeper than 32 levels"),
        (
            {"input_shape": [64, 512, 513], "mean": [0.0] * 64, "std": [1.0] * 64},
            "more than robench allocates (16,777,216 = 2**24)",
        ),
    ],
)
def test_crafted_metadata_values_are_refused_at_load_and_by_info(tmp_path, capsys, changes, fragment):
    from test_cli import assert_one_line_error, run

    model, meta = make_tiny()
    _craft(tmp_path / "crafted.pt", meta, model.state_dict(), **changes)
    message = assert_refused(tmp_path / "crafted.pt", "bundle metadata")
    assert fragment in message
    code, out, err = run(capsys, "info", str(tmp_path / "crafted.pt"))
    assert_one_line_error(code, err, fragment)
    assert out == "" and "internal error" not in err


def test_deeply_nested_metadata_json_is_one_line(tmp_path):
    model, meta = make_tiny()
    state = model.state_dict()
    text = meta.to_json()[:-1] + ', "train_config": ' + "[" * 100_000 + "]" * 100_000 + "}"
    torch.save(
        {"format": "robench-bundle", "version": 1, "meta": text, "state_dict": state, "content_hash": "x"},
        tmp_path / "deep.pt",
    )
    assert_refused(tmp_path / "deep.pt", "nests too deeply")


def test_valid_edge_metadata_still_loads(tmp_path, capsys):
    from test_cli import run

    model, meta = make_tiny()
    for changes in (
        {"clean_accuracy": 1.0},
        {"clean_accuracy": 0},
        {"clean_accuracy": None},
        {"value_range": [-1.0, 1.0]},
        {"train_seconds": None},
    ):
        _craft(tmp_path / "ok.pt", meta, model.state_dict(), **changes)
        load_bundle(tmp_path / "ok.pt")
    _craft(tmp_path / "ok.pt", meta, model.state_dict(), clean_accuracy=0.75)
    code, out, _ = run(capsys, "info", str(tmp_path / "ok.pt"))
    assert code == 0 and "75.00%" in out


# ------------------------------------------------ --input-shape is bounded before anything of that shape is allocated


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        (
            "64,4096,4096",
            "1,073,741,824 values per image is more than robench allocates (16,777,216 = 2**24",
        ),  # 4 probe rows: 17 GB
        ("3,2365,2365", "16,779,675 values per image"),
        ("65,8,8", "65 channels is outside [1, 64]"),
        ("1,4097,8", "a side of 4097 pixels is outside [1, 4096]"),
        ("1,8,-3", "a side of -3 pixels"),
    ],
)
def test_import_input_shape_is_bounded_before_allocating(tmp_path, capsys, monkeypatch, shape, fragment):
    from robench.checkpoints.imported import importer
    from test_cli import assert_one_line_error, run

    def no_probe(*args, **kwargs):
        raise AssertionError("a probe batch of that shape was allocated")

    monkeypatch.setattr(importer, "probe_inputs", no_probe)
    out = tmp_path / "m.pt"
    args = [
        "import",
        "tests.import_fixtures:nothing",
        "--feature-layer",
        "fc",
        "--input-shape",
        shape,
        "--num-classes",
        "10",
        "--out",
        str(out),
    ]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert_one_line_error(code, err, f"--input-shape {shape}: ", fragment)
    assert not out.exists()
