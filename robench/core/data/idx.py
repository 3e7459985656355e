"""MNIST and Fashion-MNIST: the IDX reader and torchvision's on-disk layout for them.

Layout: ``ROOT/MNIST/raw/`` resp. ``ROOT/FashionMNIST/raw/`` holding
``{train,t10k}-images-idx3-ubyte`` and ``{train,t10k}-labels-idx1-ubyte``
(optionally ``.gz``; a plain file wins over its ``.gz``).

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a big-endian
magic ``0x0000TTDD`` (``TT`` = element type, ``0x08`` = unsigned byte; ``DD`` =
number of dimensions), ``DD`` big-endian uint32 sizes, then the row-major data.
Payloads are read in bounded chunks, so a header that declares a huge shape
cannot force a huge allocation.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import IO

import numpy as np

from robench.core.data.base import LoadOptions, Split, split_from_uint8
from robench.core.data.download import download
from robench.core.data.files import data_root, labels_in_range, one_line, require_files
from robench.core.errors import DatasetError

_CHUNK = 1 << 24  # bytes per read when streaming idx payloads
_IDX_UBYTE = 0x08


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_exactly(handle: IO[bytes], count: int) -> bytes:
    """Read up to ``count`` bytes in bounded chunks (so a lying header cannot force a huge allocation)."""
    chunks: list[bytes] = []
    remaining = count
    while remaining > 0:
        chunk = handle.read(min(remaining, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (plain or gzipped) with ``ndim`` dimensions as a uint8 array."""
    try:
        with _open_binary(path) as handle:
            header = _read_exactly(handle, 4)
            if len(header) < 4:
                raise DatasetError(f"{path}: truncated IDX file (no 4-byte magic number)")
            zero, dtype_code, dims = struct.unpack(">HBB", header)
            if zero != 0:
                raise DatasetError(f"{path}: not an IDX file (magic number 0x{header.hex()} does not start with 0000)")
            if dtype_code != _IDX_UBYTE:
                raise DatasetError(f"{path}: IDX element type 0x{dtype_code:02x}, expected 0x08 (unsigned byte)")
            if dims != ndim:
                raise DatasetError(f"{path}: IDX file has {dims} dimensions, expected {ndim}")
            raw_shape = _read_exactly(handle, 4 * dims)
            if len(raw_shape) < 4 * dims:
                raise DatasetError(f"{path}: truncated IDX header (expected {dims} dimension sizes)")
            shape = struct.unpack(f">{dims}I", raw_shape)
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            payload = _read_exactly(handle, count + 1)
    except DatasetError:
        raise
    except Exception as exc:  # OSError, EOFError, gzip.BadGzipFile, zlib.error: unreadable or corrupt stream
        raise DatasetError(f"{path}: cannot read IDX file ({type(exc).__name__}: {one_line(exc)})") from exc
    if len(payload) < count:
        raise DatasetError(
            f"{path}: truncated IDX file: header declares shape {shape} ({count} bytes) but only {len(payload)} follow"
        )
    if len(payload) > count:
        raise DatasetError(f"{path}: IDX file has trailing data after the {count} bytes its header declares")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def _load_idx_split(images_path: Path, labels_path: Path) -> Split:
    images = read_idx(images_path, 3)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{images_path}: images are {images.shape[1]} x {images.shape[2]}, expected 28 x 28")
    labels = read_idx(labels_path, 1)
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"{labels_path}: {labels.shape[0]} labels for the {images.shape[0]} images in {images_path.name}"
        )
    return split_from_uint8(images, labels_in_range(labels, 10, labels_path))


def load_idx_dataset(name: str, folder_name: str, options: LoadOptions) -> tuple[Split, Split]:
    """The official (train, test) splits of ``name`` from ``DATA_ROOT/<folder_name>/raw``."""
    root = data_root(options, name)
    if options.download:
        download(name, root, [{"train": True}])
    folder = root / folder_name / "raw"
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = require_files(name, folder, [(stem, stem + ".gz") for stem in stems])
    return _load_idx_split(paths[0], paths[1]), _load_idx_split(paths[2], paths[3])
