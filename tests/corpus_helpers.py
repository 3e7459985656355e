"""Fixtures of tests/test_bad_input_corpus.py: one folder ("the world") of good and bad inputs, built once.

Everything a corpus case reads lives here: tiny bundles (tests/tiny.py), broken checkpoints (one of them a
pickle payload that would create ``MARKER`` if it were ever unpickled), suites, a synthetic run folder and
its baseline, broken run folders and baselines, and data roots with missing or garbage files.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from robench.checkpoints.bundle import save_bundle
from test_rundir import synthetic_records, write_synthetic_run
from tiny import Payload, make_tiny, two_model_suite

MARKER = "PWNED-marker"  # created by os.system if a payload were ever unpickled
THREAT = "semi-white-box"

# ---------------------------------------------------------------- checkpoints

BAD_CHECKPOINTS = {
    # name in the world -> what it is
    "missing.pt": "no such file",
    "notbundle.pt": "a text file",
    "empty.pt": "an empty file",
    "zeros.pt": "100 zero bytes",
    "truncated.pt": "the first half of a good bundle",
    "evil-pickle.pt": "a raw pickle whose __reduce__ runs a shell command",
    "evil-zip.pt": "a torch.save zip whose payload runs a shell command when unpickled",
    "evil-bundle.pt": "a bundle-shaped torch.save zip with a payload in the metadata",
    "state-dict.pt": "a bare state_dict, not a bundle",
    "other-format.pt": "a torch.save dict with another format tag",
    "dir.pt": "a directory",
    "accuracy-750.pt": "crafted metadata (content hash recomputed): a clean accuracy of 7.5",
    "range-inverted.pt": "crafted metadata (content hash recomputed): the value range [1, 0]",
    "std-zero.pt": "crafted metadata (content hash recomputed): a std of 0",
    "forged-line.pt": "crafted metadata (content hash recomputed): a git revision with a line break",
}

# The metadata changes of the crafted bundles above (BAD_CHECKPOINTS), applied with a valid content hash.
CRAFTED_META = {
    "accuracy-750.pt": {"clean_accuracy": 7.5},
    "range-inverted.pt": {"value_range": [1.0, 0.0]},
    "std-zero.pt": {"std": [0.0]},
    "forged-line.pt": {"git_revision": "abc\nrobench: ok"},
}


def _crafted(path: Path, meta, state, changes: dict) -> None:
    """A bundle whose metadata JSON has ``changes`` applied, hashed as an attacker would (the hash is valid)."""
    from robench.core.provenance import state_dict_hash

    raw = json.loads(meta.to_json())
    raw.update(changes)
    keys = ("arch", "arch_kwargs", "defense", "defense_params", "num_classes", "input_shape", "value_range")
    keys += ("mean", "std")
    identity = {k: raw[k] for k in keys}
    payload = {"format": "robench-bundle", "version": 1, "meta": json.dumps(raw), "state_dict": state}
    payload["content_hash"] = state_dict_hash(state, identity)
    torch.save(payload, path)


def _checkpoints(world: Path) -> None:
    marker = world / MARKER
    (world / "notbundle.pt").write_text("this is not a checkpoint\n")
    (world / "empty.pt").write_bytes(b"")
    (world / "zeros.pt").write_bytes(b"\x00" * 100)
    good = (world / "softmax.pt").read_bytes()
    (world / "truncated.pt").write_bytes(good[: len(good) // 2])
    (world / "evil-pickle.pt").write_bytes(pickle.dumps(Payload(marker)))
    torch.save({"x": Payload(marker)}, world / "evil-zip.pt")
    model, meta = make_tiny("softmax")
    torch.save(
        {
            "format": "robench-bundle",
            "version": 1,
            "meta": Payload(marker),
            "state_dict": model.state_dict(),
            "content_hash": "0" * 64,
        },
        world / "evil-bundle.pt",
    )
    torch.save(model.state_dict(), world / "state-dict.pt")
    torch.save({"format": "not-robench", "version": 1}, world / "other-format.pt")
    (world / "dir.pt").mkdir()
    for name, changes in CRAFTED_META.items():
        _crafted(world / name, meta, model.state_dict(), changes)


# ---------------------------------------------------------------- suites

NOISE = '\n[[threat]]\nname = "noise"\n'
SEMI = '\n[[threat]]\nname = "semi-white-box"\nattacks = ["FGSM"]\n'


def good_suite(threats: str = NOISE) -> str:
    return two_model_suite(4, threats)


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, (old, text)
    return text.replace(old, new, 1)


def suite_texts() -> dict[str, str | bytes]:
    """name -> the text (or bytes) of a bad suite file, next to softmax.pt and gm.pt."""
    base = good_suite()
    semi = good_suite(SEMI)
    return {
        "bad-toml": "[[model]\nname = \n",
        "not-utf8": b"\xff\xfe[defaults]\nn = 3\n",
        "empty": "",
        "unknown-top-key": "[defaultz]\nn = 1\n" + base,
        "unknown-default-key": _replace(base, "n = 4\n", "nn = 4\n"),
        "unknown-model-key": _replace(base, 'path = "softmax.pt"', 'paht = "softmax.pt"'),
        "unknown-threat-key": _replace(semi, "attacks = ", "attack = "),
        "model-name-dotdot": _replace(base, 'name = "softmax"', 'name = "../x"'),
        "model-name-abs": _replace(base, 'name = "softmax"', 'name = "/tmp/x"'),
        "model-name-dot": _replace(base, 'name = "softmax"', 'name = "."'),
        "model-name-slash": _replace(base, 'name = "softmax"', 'name = "a/b"'),
        "model-name-int": _replace(base, 'name = "softmax"', "name = 3"),
        "model-names-clash": _replace(base, 'name = "softmax"', 'name = "GM"'),
        "threat-name-dotdot": _replace(base, 'name = "noise"', 'name = "../noise"'),
        "threat-unknown": _replace(base, 'name = "noise"', 'name = "noize"'),
        "n-string": _replace(base, "n = 4\n", 'n = "10"\n'),
        "n-bool": _replace(base, "n = 4\n", "n = true\n"),
        "n-float": _replace(base, "n = 4\n", "n = 2.5\n"),
        "n-nan": _replace(base, "n = 4\n", "n = nan\n"),
        "n-inf": _replace(base, "n = 4\n", "n = inf\n"),
        "n-zero": _replace(base, "n = 4\n", "n = 0\n"),
        "n-negative": _replace(base, "n = 4\n", "n = -1\n"),
        "batch-size-zero": _replace(base, "batch_size = 4\n", "batch_size = 0\n"),
        "batch-size-list": _replace(base, "batch_size = 4\n", "batch_size = [4]\n"),
        "seed-huge": _replace(base, "n = 4\n", "n = 4\nseed = 99999999999999999999999\n"),
        "seed-string": _replace(base, "n = 4\n", 'n = 4\nseed = "x"\n'),
        "device-unknown": _replace(base, 'device = "cpu"', 'device = "tpu"'),
        "device-int": _replace(base, 'device = "cpu"', "device = 0"),
        "data-root-int": _replace(base, "n = 4\n", "n = 4\ndata_root = 3\n"),
        "detectors-string": _replace(base, 'detectors = ["max-prob"]', 'detectors = "max-prob"'),
        "detectors-ints": _replace(base, 'detectors = ["max-prob"]', "detectors = [3]"),
        "detector-unknown": _replace(base, 'detectors = ["max-prob"]', 'detectors = ["max-prb"]'),
        "attacks-string": _replace(semi, 'attacks = ["FGSM"]', 'attacks = "FGSM"'),
        "attack-unknown": _replace(semi, 'attacks = ["FGSM"]', 'attacks = ["FGSMM"]'),
        "sigmas-string": _replace(base, 'name = "noise"\n', 'name = "noise"\nsigmas = "0.1"\n'),
        "sigmas-nan": _replace(base, 'name = "noise"\n', 'name = "noise"\nsigmas = [nan]\n'),
        "sigmas-duplicate": _replace(base, 'name = "noise"\n', 'name = "noise"\nsigmas = [0.1, 0.1]\n'),
        "sigmas-negative": _replace(base, 'name = "noise"\n', 'name = "noise"\nsigmas = [-0.1]\n'),
        "set-not-table": _replace(base, 'name = "noise"\n', 'name = "noise"\nset = 3\n'),
        "set-abc": semi + '[threat.set]\n"FGSM.eps" = "abc"\n',
        "set-nan": semi + '[threat.set]\n"FGSM.eps" = nan\n',
        "set-unknown-param": semi + '[threat.set]\n"FGSM.epz" = 0.1\n',
        "set-unknown-label": semi + '[threat.set]\n"FGSN.eps" = 0.1\n',
        "threat-n-nan": _replace(base, 'name = "noise"\n', 'name = "noise"\nn = nan\n'),
        "threat-models-unknown": _replace(base, 'name = "noise"\n', 'name = "noise"\nmodels = ["nobody"]\n'),
        "threat-models-string": _replace(base, 'name = "noise"\n', 'name = "noise"\nmodels = "gm"\n'),
        "substitute-string": base + '\n[[threat]]\nname = "black-box"\nsubstitute = "softmax"\n',
        "substitute-unknown": base + '\n[[threat]]\nname = "black-box"\nsubstitute = ["nobody"]\n',
        "model-path-int": _replace(base, 'path = "softmax.pt"', "path = 3"),
        "model-path-empty": _replace(base, 'path = "softmax.pt"', 'path = ""'),
        "model-path-missing": _replace(base, 'path = "softmax.pt"', 'path = "missing.pt"'),
        "model-path-junk": _replace(base, 'path = "softmax.pt"', 'path = "notbundle.pt"'),
        "model-path-evil": _replace(base, 'path = "softmax.pt"', 'path = "evil-pickle.pt"'),
        "model-path-dir": _replace(base, 'path = "softmax.pt"', 'path = "dir.pt"'),
        "model-missing-path": _replace(base, 'path = "softmax.pt"\n', ""),
        "model-string": 'model = "gm.pt"\n' + NOISE,
        "threat-table-not-array": two_model_suite(4, '\n[threat]\nname = "noise"\n'),
        "defaults-not-table": "defaults = 3\n\n[[model]]" + base.split("[[model]]", 1)[1],
        "no-threat": base.split("[[threat]]", 1)[0],
        "no-model": "[defaults]\nn = 4\n" + NOISE,
        "set-steps-huge": semi.replace('["FGSM"]', '["BIM"]') + '[threat.set]\n"BIM.steps" = 1000000000000\n',
        "nested-arrays": "x = " + "[" * 50_000 + "]" * 50_000 + "\n",
        "dotted-key-deep": "a" + ".a" * 10_000 + " = 1\n" + base,
        "threat-name-upper-builtin": _replace(base, 'name = "noise"', 'name = "NOISE"'),
        "threat-file-fifo": 'threat_files = ["fifo.toml"]\n' + base,
    }


# ---------------------------------------------------------------- run folders and baselines


def _write_records(folder: Path, frame: pd.DataFrame, run_json: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / "records.parquet", index=False)
    if run_json is not None:
        (folder / "run.json").write_text(run_json)


def set_seed(folder: Path, seed: int, n: int = 30) -> None:
    """Give a synthetic run's run.json the config seed (and n) ``robench run`` records."""
    path = folder / "run.json"
    info = json.loads(path.read_text())
    info["config"] = {"seed": seed, "n": n, "threat": THREAT}
    info["threats"] = [{"name": THREAT, "attacks": []}]
    path.write_text(json.dumps(info))


RUN_FOLDERS = {
    "runs/missing": "no such folder",
    "runs/empty": "an empty folder",
    "runs/garbage": "records.parquet that is not parquet",
    "runs/zero-rows": "records with no rows",
    "runs/no-columns": "records lacking the required columns",
    "runs/success-strings": "'success' holds strings",
    "runs/label-float": "'label' holds non-integral floats",
    "runs/model-ints": "'model' holds integers",
    "runs/score-strings": "a score column holds strings",
    "runs/run-json-garbage": "a run.json that is not JSON",
    "runs/run-json-list": "a run.json holding a list",
    "runs/duplicated": "the same records twice",
    "runs/records.txt": "a file that is neither a folder nor .parquet",
}


def _run_folders(world: Path) -> None:
    good = world / "run" / "soft" / THREAT
    write_synthetic_run(good, synthetic_records(model="soft", attacks=("FGSM",), n=30, detectors=("max-prob",)))
    set_seed(good, 0)
    records = pd.read_parquet(good / "records.parquet")
    runs = world / "runs"
    (runs / "empty").mkdir(parents=True)
    (runs / "garbage").mkdir()
    (runs / "garbage" / "records.parquet").write_bytes(b"PAR1 not really parquet")
    _write_records(runs / "zero-rows", records.iloc[:0])
    _write_records(runs / "no-columns", records[["model", "attack"]])
    _write_records(runs / "success-strings", records.assign(success=records["success"].map({True: "yes", False: "no"})))
    _write_records(runs / "label-float", records.assign(label=records["label"] + 0.5))
    _write_records(runs / "model-ints", records.assign(model=7))
    _write_records(runs / "score-strings", records.assign(**{"score_clean:max-prob": "high"}))
    _write_records(runs / "run-json-garbage", records, "{not json")
    _write_records(runs / "run-json-list", records, "[1, 2]")
    _write_records(runs / "duplicated" / "a", records)
    _write_records(runs / "duplicated" / "b", records)
    (runs / "records.txt").write_text("model,attack\n")


def _baselines(world: Path) -> None:
    from robench.report.regression import write_baseline

    good = world / "baseline.json"
    write_baseline(world / "run", good, n_resamples=20)
    data = json.loads(good.read_text())
    folder = world / "baselines"
    folder.mkdir()

    def edited(name: str, **changes) -> None:
        copy = json.loads(json.dumps(data))
        rows = changes.pop("rows", None)
        if rows is not None:
            copy["rows"] = rows(copy["rows"])
        for key, value in changes.items():
            if value is None:
                copy.pop(key, None)
            else:
                copy[key] = value
        (folder / f"{name}.json").write_text(json.dumps(copy))

    def first(**values):
        return lambda rows: [{**rows[0], **values}, *rows[1:]]

    (folder / "not-json.json").write_text("{ this is not json")
    (folder / "not-utf8.json").write_bytes(b"\xff\xfe{}")
    (folder / "empty-file.json").write_text("")
    (folder / "list.json").write_text("[]")
    (folder / "null.json").write_text("null")
    edited("wrong-format", format="robench-bundle")
    edited("no-format", format=None)
    edited("wrong-version", version=99)
    edited("no-version", version=None)
    edited("rows-not-list", rows=lambda rows: {"a": 1})
    edited("empty-rows", rows=lambda rows: [])
    edited("row-not-object", rows=lambda rows: [3, *rows[1:]])
    edited("row-missing-value", rows=lambda rows: [{k: v for k, v in rows[0].items() if k != "value"}, *rows[1:]])
    edited("row-value-string", rows=first(value="0.5"))
    edited("row-value-bool", rows=first(value=True))
    edited("row-value-inf", rows=first(value=math.inf))
    edited("row-low-minus-inf", rows=first(low=-math.inf))
    edited("row-high-inf", rows=first(high=math.inf))
    edited("row-n-zero", rows=first(n=0))
    edited("row-n-float", rows=first(n=2.5))
    edited("row-metric-unknown", rows=first(metric="auc_rock"))
    edited("row-metric-int", rows=first(metric=3))
    edited("row-model-int", rows=first(model=3))
    edited("row-low-above-high", rows=first(low=0.9, high=0.1))
    edited(
        "row-fraction-above-one",
        rows=lambda rows: [{**r, "value": 1.5} if r["metric"] == "clean_accuracy" else r for r in rows],
    )
    edited("row-duplicated", rows=lambda rows: [rows[0], *rows])
    edited("seeds-not-dict", seeds=[0])
    edited("seeds-strings", seeds={"soft": {THREAT: ["0"]}})
    edited("other-models", rows=lambda rows: [{**r, "model": "other"} for r in rows])
    (folder / "dir.json").mkdir()


BAD_BASELINES = [
    "not-json", "not-utf8", "empty-file", "list", "null", "wrong-format", "no-format", "wrong-version", "no-version",
    "rows-not-list", "empty-rows", "row-not-object", "row-missing-value", "row-value-string", "row-value-bool",
    "row-value-inf", "row-low-minus-inf", "row-high-inf", "row-n-zero", "row-n-float", "row-metric-unknown",
    "row-metric-int", "row-model-int", "row-low-above-high", "row-fraction-above-one", "row-duplicated",
    "seeds-not-dict", "seeds-strings", "other-models", "dir", "missing",
]  # fmt: skip


# ---------------------------------------------------------------- data roots

_MNIST = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def _idx(dims: tuple[int, ...], payload: bytes | None = None) -> bytes:
    header = b"\x00\x00\x08" + bytes([len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    count = int(np.prod(dims)) if dims else 0
    return header + (payload if payload is not None else b"\x00" * count)


DATA_ROOTS = {
    "data/missing": "no such folder",
    "data/empty": "an empty folder",
    "data/garbage": "four IDX files of random bytes",
    "data/bad-magic": "IDX files whose magic number does not start with 0000",
    "data/truncated": "IDX headers that declare more bytes than follow",
    "data/trailing": "IDX files with bytes after the declared payload",
    "data/wrong-type": "IDX files of element type int32",
    "data/wrong-shape": "images of 5 x 5, not 28 x 28",
    "data/gz-garbage": "files named .gz that are not gzip",
    "data/gz-truncated": "gzip files cut in the middle",
    "data/labels-out-of-range": "labels of 200",
    "data/count-mismatch": "10 images but 7 labels",
}


def _data_roots(world: Path) -> None:
    rng = np.random.default_rng(0)

    def mnist(name: str, files: dict[str, bytes]) -> None:
        raw = world / "data" / name / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for stem, content in files.items():
            (raw / stem).write_bytes(content)

    (world / "data" / "empty").mkdir(parents=True)
    mnist("garbage", {s: rng.bytes(256) for s in _MNIST})
    mnist("bad-magic", {s: b"\x12\x34\x08\x03" + b"\x00" * 64 for s in _MNIST})
    mnist("truncated", {s: _idx((10000, 28, 28) if "images" in s else (10000,), b"\x00" * 100) for s in _MNIST})
    mnist("trailing", {s: _idx((2, 28, 28) if "images" in s else (2,)) + b"extra" for s in _MNIST})
    mnist("wrong-type", {s: b"\x00\x00\x0c" + _idx((2, 28, 28) if "images" in s else (2,))[3:] for s in _MNIST})
    mnist("wrong-shape", {s: _idx((2, 5, 5) if "images" in s else (2,)) for s in _MNIST})
    mnist("gz-garbage", {s + ".gz": b"not gzip at all" for s in _MNIST})
    mnist(
        "gz-truncated", {s + ".gz": gzip.compress(_idx((20, 28, 28) if "images" in s else (20,)))[:40] for s in _MNIST}
    )
    mnist("labels-out-of-range", {s: _idx((2, 28, 28)) if "images" in s else _idx((2,), b"\xc8\xc8") for s in _MNIST})
    mnist("count-mismatch", {s: _idx((10, 28, 28)) if "images" in s else _idx((7,)) for s in _MNIST})
    # CIFAR-10 batches that are pickle payloads: the restricted unpickler must refuse them without running them.
    cifar = world / "data" / "cifar-evil" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (cifar / name).write_bytes(pickle.dumps(Payload(world / MARKER)))
    (world / "data" / "a-file").write_text("not a folder\n")


# ---------------------------------------------------------------- the world


def build_world(world: Path) -> Path:
    """Create every input of the corpus under ``world`` and return it."""
    world.mkdir(parents=True, exist_ok=True)
    for name, kwargs in (("softmax", {}), ("gm", {}), ("dropout", {"dropout": 0.1})):
        model, meta = make_tiny("gm" if name == "gm" else "softmax", **kwargs)
        save_bundle(world / f"{name}.pt", model, meta)
    _checkpoints(world)
    (world / "good-suite.toml").write_text(good_suite())
    for name, text in suite_texts().items():
        target = world / f"suite-{name}.toml"
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text)
    (world / "suite-dir.toml").mkdir()
    _run_folders(world)
    _baselines(world)
    _data_roots(world)
    (world / "a-file").write_text("a plain file\n")
    os.mkfifo(world / "fifo.toml")  # a threat file or suite that would block a reader forever
    return world


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``root`` (relative) -> (size, mtime in ns); folders have size -1."""
    found: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            found[str(path.relative_to(root))] = (
                -1 if path.is_dir() else info.st_size,
                0 if path.is_dir() else info.st_mtime_ns,
            )
    return found
