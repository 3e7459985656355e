"""``--download``: fetch an on-disk dataset into the data root with torchvision.

torchvision only fetches the files here (its dataset classes verify the
archives' checksums); they are always read by robench's own readers, never by
``torchvision.datasets``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from robench.core.data.files import one_line
from robench.core.errors import DatasetError

_TORCHVISION_CLASSES = {
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "svhn": "SVHN",
}


def download(name: str, root: Path, calls: Sequence[dict[str, Any]]) -> None:
    """Fetch ``name`` into ``root`` with torchvision (which verifies checksums); the data is read separately.

    Each entry of ``calls`` holds the keyword arguments of one torchvision
    constructor call (e.g. ``{"split": "train"}``).
    """
    try:
        from torchvision import datasets
    except ImportError as exc:
        raise DatasetError(f"--download needs torchvision, which cannot be imported: {one_line(exc)}") from exc
    dataset_class: Callable[..., object] = getattr(datasets, _TORCHVISION_CLASSES[name])
    try:
        root.mkdir(parents=True, exist_ok=True)
        for kwargs in calls:
            dataset_class(os.fspath(root), download=True, **kwargs)
    except Exception as exc:  # network errors, checksum mismatches, unwritable roots
        raise DatasetError(f"downloading dataset '{name}' into {root} failed: {one_line(exc)}") from exc
