"""Typed dataset objects and the dataset registry.

Every dataset yields float32 tensors in its declared value range (``[0, 1]`` for
all built-ins), NCHW, with a fixed train/test split. Input normalization is not
applied here: it lives inside the model (see :mod:`robench.core.models.base`), so
attacks work in pixel space and clip to ``value_range``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robench.core.errors import DatasetError
from robench.core.registry import Registry


@dataclass(frozen=True)
class Split:
    """Images ``x`` (float32, N x C x H x W) and integer labels ``y`` (int64, N)."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or self.x.shape[0] != self.y.shape[0]:
            raise DatasetError(
                "a split needs x of shape N x C x H x W and y of shape N, "
                f"got {tuple(self.x.shape)} and {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: Tensor | slice) -> Split:
        return Split(self.x[index], self.y[index])


@dataclass(frozen=True)
class LoadOptions:
    """Where and how to read a dataset: ``data_root`` for on-disk sets, ``split_seed`` for carved splits."""

    data_root: Path | None = None
    download: bool = False
    split_seed: int = 0


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its shape, classes, normalization and loader.

    ``family`` keys per-dataset defaults elsewhere (GM margin alpha, KD
    bandwidth): e.g. ``mnist-5k``, ``digits`` and ``mnist`` all use the MNIST
    values from the papers.
    """

    name: str
    description: str
    num_classes: int
    input_shape: tuple[int, int, int]
    family: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load_splits: Callable[[LoadOptions], tuple[Split, Split]]
    needs_data_root: bool = False
    value_range: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset with its spec and the split seed that carved it."""

    spec: DatasetSpec
    train: Split
    test: Split
    split_seed: int

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.input_shape

    @property
    def value_range(self) -> tuple[float, float]:
        return self.spec.value_range


DATASETS: Registry[DatasetSpec] = Registry("dataset", base=DatasetSpec)


def split_from_uint8(
    images: np.ndarray, labels: np.ndarray, *, channels_last: bool = True, scale: float = 255.0
) -> Split:
    """Build a :class:`Split` from integer images (N x H x W, N x H x W x C, or N x C x H x W).

    Pixel values are divided by ``scale`` to land in [0, 1].
    """
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[:, None, :, :]
    elif array.ndim == 4 and channels_last:
        array = array.transpose(0, 3, 1, 2)
    elif array.ndim != 4:
        raise DatasetError(f"expected 3-D or 4-D image array, got shape {array.shape}")
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / np.float32(scale))
    y = torch.from_numpy(np.asarray(labels).astype(np.int64).reshape(-1))
    return Split(x, y)


def stratified_split(split: Split, test_fraction: float, seed: int) -> tuple[Split, Split]:
    """Deterministic stratified train/test split; the same seed gives the same split on any machine."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(split))
    train_idx, test_idx = train_test_split(
        index, test_size=test_fraction, stratify=split.y.numpy(), random_state=seed, shuffle=True
    )
    train_idx.sort()
    test_idx.sort()
    return split.subset(torch.from_numpy(train_idx)), split.subset(torch.from_numpy(test_idx))


def _check_split(spec: DatasetSpec, split: Split, which: str) -> None:
    if tuple(split.x.shape[1:]) != spec.input_shape:
        raise DatasetError(
            f"dataset '{spec.name}' {which} images have shape {tuple(split.x.shape[1:])}, expected {spec.input_shape}"
        )
    if len(split) == 0:
        raise DatasetError(f"dataset '{spec.name}' {which} split is empty")
    low, high = spec.value_range
    if float(split.x.min()) < low or float(split.x.max()) > high:
        raise DatasetError(f"dataset '{spec.name}' {which} images fall outside the value range {spec.value_range}")
    if int(split.y.min()) < 0 or int(split.y.max()) >= spec.num_classes:
        raise DatasetError(f"dataset '{spec.name}' {which} labels fall outside 0..{spec.num_classes - 1}")


def load_dataset(
    name: str, *, data_root: str | Path | None = None, download: bool = False, split_seed: int = 0
) -> Dataset:
    """Load a registered dataset by name, validating shapes, value range and labels."""
    spec = DATASETS.get(name)
    if spec.needs_data_root and data_root is None:
        raise DatasetError(
            f"dataset '{name}' is read from disk: pass --data-root DIR (add --download to fetch it there first)"
        )
    options = LoadOptions(
        data_root=Path(data_root) if data_root is not None else None, download=download, split_seed=split_seed
    )
    train, test = spec.load_splits(options)
    _check_split(spec, train, "train")
    _check_split(spec, test, "test")
    return Dataset(spec=spec, train=train, test=test, split_seed=split_seed)
