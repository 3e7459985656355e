"""CIFAR-10 and CIFAR-100: the batch reader and torchvision's on-disk layout for them.

Layout: ``ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch}`` resp.
``ROOT/cifar-100-python/{train,test}``.

Format (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html): Python
pickles of dicts whose ``b"data"`` is a uint8 N x 3072 array (each row the
32 x 32 red, green, then blue planes, row-major) and whose ``b"labels"``
(CIFAR-10) resp. ``b"fine_labels"`` (CIFAR-100) is a list of N ints. The
original batches were written by Python 2's cPickle (``str`` keys, old numpy
module names); both spellings are accepted. They are read with
:class:`~robench.core.data.restricted_pickle.RestrictedUnpickler`, which can
build nothing but plain containers and numeric numpy arrays, so a malicious
batch cannot run code.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robench.core.data.base import LoadOptions, Split, split_from_uint8
from robench.core.data.download import download
from robench.core.data.files import data_root, labels_in_range, one_line, require_files
from robench.core.data.restricted_pickle import RestrictedUnpickler, unwrap
from robench.core.errors import DatasetError


def _entry(batch: dict[Any, Any], key: str) -> object:
    for candidate in (key.encode(), key):
        if candidate in batch:
            return unwrap(batch[candidate])
    return None


def read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR pickle into uint8 images (N x 3 x 32 x 32) and int64 labels (N)."""
    try:
        with open(path, "rb") as handle:
            batch = RestrictedUnpickler(handle, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DatasetError(f"{path}: not a valid CIFAR batch: {one_line(exc)}") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read CIFAR batch: {one_line(exc)}") from exc
    except Exception as exc:  # truncated or corrupt pickles fail with EOFError, ValueError, TypeError, ...
        raise DatasetError(f"{path}: corrupt CIFAR batch ({type(exc).__name__}: {one_line(exc)})") from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: a CIFAR batch must be a dict, found {type(batch).__name__}")
    try:
        data, labels = _entry(batch, "data"), _entry(batch, label_key)
    except pickle.UnpicklingError as exc:
        raise DatasetError(f"{path}: not a valid CIFAR batch: {one_line(exc)}") from exc
    if data is None or labels is None:
        raise DatasetError(f"{path}: CIFAR batch lacks the b'data' or b'{label_key}' entry")
    if isinstance(data, (bytes, bytearray)):
        if len(data) % 3072:
            raise DatasetError(
                f"{path}: b'data' holds {len(data)} bytes, not a multiple of 3072 (one 3 x 32 x 32 image)"
            )
        data = np.frombuffer(bytes(data), dtype=np.uint8).reshape(-1, 3072)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        described = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: b'data' must be a uint8 N x 3072 array, found {described}")
    try:
        label_array = np.asarray(unwrap(labels))
    except Exception as exc:
        raise DatasetError(f"{path}: b'{label_key}' is not a list of integers ({one_line(exc)})") from exc
    if label_array.ndim != 1 or label_array.dtype.kind not in "iu":
        raise DatasetError(f"{path}: b'{label_key}' must be a flat list of integers")
    if label_array.shape[0] != data.shape[0]:
        raise DatasetError(f"{path}: {label_array.shape[0]} labels for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), labels_in_range(label_array, num_classes, path)


def _load_cifar_files(paths: Sequence[Path], label_key: str, num_classes: int) -> Split:
    batches = [read_cifar_batch(path, label_key, num_classes) for path in paths]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return split_from_uint8(images, labels, channels_last=False)


def load_cifar10(options: LoadOptions) -> tuple[Split, Split]:
    """The official CIFAR-10 (train, test) splits from ``DATA_ROOT/cifar-10-batches-py``."""
    root = data_root(options, "cifar10")
    if options.download:
        download("cifar10", root, [{"train": True}])
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    paths = require_files("cifar10", root / "cifar-10-batches-py", names)
    return _load_cifar_files(paths[:5], "labels", 10), _load_cifar_files(paths[5:], "labels", 10)


def load_cifar100(options: LoadOptions) -> tuple[Split, Split]:
    """The official CIFAR-100 (train, test) splits, fine labels, from ``DATA_ROOT/cifar-100-python``."""
    root = data_root(options, "cifar100")
    if options.download:
        download("cifar100", root, [{"train": True}])
    train_path, test_path = require_files("cifar100", root / "cifar-100-python", ["train", "test"])
    return (
        _load_cifar_files([train_path], "fine_labels", 100),
        _load_cifar_files([test_path], "fine_labels", 100),
    )
