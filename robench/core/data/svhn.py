"""SVHN: the ``.mat`` reader and torchvision's on-disk layout for it.

Layout: ``ROOT/{train,test}_32x32.mat``.

Format (Netzer et al. 2011, http://ufldl.stanford.edu/housenumbers/): MATLAB
(v5) files, read with ``scipy.io.loadmat``, holding ``X`` of shape
32 x 32 x 3 x N (uint8, H x W x C x N) and ``y`` of shape N x 1, where label
10 stands for the digit 0 (mapped to 0 here, as torchvision does).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from robench.core.data.base import LoadOptions, Split, split_from_uint8
from robench.core.data.download import download
from robench.core.data.files import data_root, labels_in_range, one_line, require_files
from robench.core.errors import DatasetError


def read_svhn_mat(path: Path) -> Split:
    """Read one SVHN ``*_32x32.mat`` file; label 10 becomes digit 0."""
    from scipy.io import loadmat

    try:
        contents = loadmat(os.fspath(path), variable_names=["X", "y"])
    except Exception as exc:  # scipy raises ValueError, MatReadError, NotImplementedError (v7.3), OSError, ...
        raise DatasetError(f"{path}: cannot read MATLAB file ({type(exc).__name__}: {one_line(exc)})") from exc
    images, labels = contents.get("X"), contents.get("y")
    if not isinstance(images, np.ndarray) or not isinstance(labels, np.ndarray):
        raise DatasetError(f"{path}: SVHN file lacks the 'X' or 'y' variable")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise DatasetError(f"{path}: 'X' must be a uint8 32 x 32 x 3 x N array, found {images.dtype} {images.shape}")
    count = images.shape[3]
    if labels.ndim not in (1, 2) or labels.size != count or (labels.ndim == 2 and 1 not in labels.shape):
        raise DatasetError(
            f"{path}: 'y' must be N x 1 with N = {count} (the images in 'X'), found shape {labels.shape}"
        )
    labels = labels.reshape(-1)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
            raise DatasetError(f"{path}: 'y' holds non-integer labels")
    elif labels.dtype.kind not in "iu":
        raise DatasetError(f"{path}: 'y' must hold integer labels, found {labels.dtype}")
    labels = labels_in_range(labels, 11, path)  # SVHN uses 1..10 (10 = digit 0); accept 0 too
    labels = np.where(labels == 10, 0, labels)
    return split_from_uint8(images.transpose(3, 0, 1, 2), labels, channels_last=True)


def load_svhn(options: LoadOptions) -> tuple[Split, Split]:
    """The official SVHN (train, test) splits from ``DATA_ROOT/{train,test}_32x32.mat``."""
    root = data_root(options, "svhn")
    if options.download:
        download("svhn", root, [{"split": "train"}, {"split": "test"}])
    train_path, test_path = require_files("svhn", root, ["train_32x32.mat", "test_32x32.mat"])
    return read_svhn_mat(train_path), read_svhn_mat(test_path)
