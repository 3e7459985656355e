"""Standard datasets read from ``--data-root`` in torchvision's on-disk layout.

All five use their official train/test splits (``split_seed`` is ignored) and
are read by the small readers below, never by ``torchvision.datasets``: the
data root is untrusted input, and torchvision's CIFAR loader unpickles
arbitrary pickles while its CIFAR/SVHN loaders reject files whose md5 differs
from the published archives. torchvision is used only by ``--download``, to
fetch the files into the data root.

Formats:

``mnist`` / ``fashion-mnist``
    ``ROOT/MNIST/raw/`` resp. ``ROOT/FashionMNIST/raw/`` holding
    ``{train,t10k}-images-idx3-ubyte`` and ``{train,t10k}-labels-idx1-ubyte``
    (optionally ``.gz``). IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/):
    a big-endian magic ``0x0000TTDD`` (``TT`` = element type, ``0x08`` = unsigned
    byte; ``DD`` = number of dimensions), ``DD`` big-endian uint32 sizes, then
    the row-major data.

``cifar10`` / ``cifar100``
    ``ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch}`` resp.
    ``ROOT/cifar-100-python/{train,test}`` (Krizhevsky 2009,
    https://www.cs.toronto.edu/~kriz/cifar.html): Python pickles of dicts whose
    ``b"data"`` is a uint8 N x 3072 array (each row the 32 x 32 red, green, then
    blue planes, row-major) and whose ``b"labels"`` (CIFAR-10) resp.
    ``b"fine_labels"`` (CIFAR-100) is a list of N ints. They are read with a
    restricted unpickler that can build nothing but plain containers and
    uint8-style numpy arrays.

``svhn``
    ``ROOT/{train,test}_32x32.mat`` (Netzer et al. 2011,
    http://ufldl.stanford.edu/housenumbers/): MATLAB files with ``X`` of shape
    32 x 32 x 3 x N (uint8, H x W x C x N) and ``y`` of shape N x 1, where label
    10 stands for the digit 0 (mapped to 0 here, as torchvision does).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from robench.data.base import DATASETS, DatasetSpec, LoadOptions, Split, split_from_uint8
from robench.errors import DatasetError

_CHUNK = 1 << 24  # bytes per read when streaming idx payloads


def _one_line(exc: BaseException) -> str:
    """An exception's message collapsed onto one line (with its type when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _data_root(options: LoadOptions, name: str) -> Path:
    if options.data_root is None:
        raise DatasetError(
            f"dataset '{name}' is read from disk: pass --data-root DIR (add --download to fetch it there first)"
        )
    return Path(options.data_root).expanduser()


def _require_files(name: str, folder: Path, files: Sequence[str | tuple[str, ...]]) -> list[Path]:
    """Resolve each expected file (a name, or alternatives like plain/``.gz``) under ``folder``.

    Raises a :class:`DatasetError` listing every missing file when any is absent.
    """

    def show(alternatives: tuple[str, ...]) -> str:
        if len(alternatives) == 2 and alternatives[1] == alternatives[0] + ".gz":
            return f"{alternatives[0]}[.gz]"
        return " or ".join(alternatives)

    found: list[Path] = []
    missing: list[str] = []
    for entry in files:
        alternatives = (entry,) if isinstance(entry, str) else tuple(entry)
        path = next((folder / alt for alt in alternatives if (folder / alt).is_file()), None)
        if path is None:
            missing.append(show(alternatives))
        else:
            found.append(path)
    if missing:
        where = "which does not exist" if not folder.is_dir() else f"missing {', '.join(missing)}"
        expected = ", ".join(show((e,) if isinstance(e, str) else tuple(e)) for e in files)
        raise DatasetError(
            f"dataset '{name}' not found: expected {expected} under {folder} ({where}); "
            f"add --download to fetch them there"
        )
    return found


def _labels_in_range(labels: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """Check that integer ``labels`` are in 0..num_classes-1 and return them as int64."""
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DatasetError(
            f"{path}: labels must lie in 0..{num_classes - 1}, found {int(labels.min())}..{int(labels.max())}"
        )
    return labels.astype(np.int64, copy=False)


# --------------------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

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
                raise DatasetError(
                    f"{path}: IDX element type 0x{dtype_code:02x}, expected 0x08 (unsigned byte)"
                )
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
        raise DatasetError(f"{path}: cannot read IDX file ({type(exc).__name__}: {_one_line(exc)})") from exc
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
    return split_from_uint8(images, _labels_in_range(labels, 10, labels_path))


def _load_idx_dataset(name: str, folder_name: str, options: LoadOptions) -> tuple[Split, Split]:
    root = _data_root(options, name)
    if options.download:
        _download(name, root, [{"train": True}])
    folder = root / folder_name / "raw"
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = _require_files(name, folder, [(stem, stem + ".gz") for stem in stems])
    return _load_idx_split(paths[0], paths[1]), _load_idx_split(paths[2], paths[3])


# --------------------------------------------------------------------------- restricted unpickling (CIFAR)


class _NdarrayMarker:
    """Stands in for ``numpy.ndarray`` in a pickle; it is only ever an argument to ``_reconstruct``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise pickle.UnpicklingError("numpy.ndarray may only appear as the type argument of _reconstruct")


_DTYPE_KINDS = frozenset("biuf")  # bool, signed, unsigned, float: plain numbers, no objects or records


def _plain_dtype(spec: object) -> np.dtype:
    if isinstance(spec, bytes):
        spec = spec.decode("latin-1")
    if not isinstance(spec, str) or len(spec) > 8:
        raise pickle.UnpicklingError(f"unsupported dtype specification {spec!r}")
    dtype = np.dtype(spec)
    if dtype.kind not in _DTYPE_KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"unsupported dtype {dtype}")
    return dtype


class _PickledDtype:
    """A numpy dtype rebuilt from a pickle; only plain numeric types are accepted."""

    def __init__(self, spec: object, align: object = False, copy: object = True) -> None:
        self.dtype = _plain_dtype(spec)

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) < 5 or any(item is not None for item in state[2:5]):
            raise pickle.UnpicklingError("unsupported dtype state (structured or sub-array dtype)")
        endian = state[1].decode("latin-1") if isinstance(state[1], bytes) else state[1]
        if endian in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(endian)
        elif endian not in ("|", "="):
            raise pickle.UnpicklingError(f"unsupported dtype byte order {endian!r}")


class _PickledArray:
    """A numpy array rebuilt from ``_reconstruct`` + ``__setstate__`` without numpy's own unpickling code."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, is_fortran, data)
        if not isinstance(state, tuple) or len(state) != 4:
            raise pickle.UnpicklingError("unsupported ndarray state")
        shape, dtype, fortran, data = state
        if not isinstance(dtype, _PickledDtype) or not isinstance(data, (bytes, bytearray)):
            raise pickle.UnpicklingError("unsupported ndarray state (only plain numeric arrays are allowed)")
        self.array = _array_from_bytes(data, dtype, shape, "F" if fortran else "C")


def _array_from_bytes(data: object, dtype: object, shape: object, order: object) -> np.ndarray:
    if not isinstance(dtype, _PickledDtype) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("unsupported array data")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise pickle.UnpicklingError(f"invalid array shape {shape!r}")
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"invalid array order {order!r}")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * dtype.dtype.itemsize != len(data):
        raise pickle.UnpicklingError(f"array of shape {shape} needs {count * dtype.dtype.itemsize} bytes, got {len(data)}")
    return np.frombuffer(bytes(data), dtype=dtype.dtype).reshape(shape, order=order)


def _reconstruct(subtype: object, shape: object, dtype_spec: object) -> _PickledArray:
    if subtype is not _NdarrayMarker:
        raise pickle.UnpicklingError("_reconstruct may only build numpy.ndarray")
    return _PickledArray()


def _frombuffer(buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
    """Protocol-5 ndarray pickles: ``numpy._core.numeric._frombuffer(buffer, dtype, shape, order)``."""
    return _array_from_bytes(buffer, dtype, shape, order)


def _codecs_encode(text: object, encoding: object = "utf-8") -> bytes:
    """Protocol-2 pickles written by Python 3 spell ``bytes`` as ``_codecs.encode(str, "latin1")``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin-1 strings")
    return text.encode("latin-1")


_PLAIN_BUILTINS = {"dict": dict, "list": list, "tuple": tuple, "bytes": bytes, "bytearray": bytearray,
                   "str": str, "int": int, "float": float, "set": set, "frozenset": frozenset}

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, key): value for module in ("builtins", "__builtin__") for key, value in _PLAIN_BUILTINS.items()},
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "ndarray"): _NdarrayMarker,
    ("numpy", "dtype"): _PickledDtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: plain containers, strings, numbers and numeric numpy arrays.

    Any other global (``os.system``, ``builtins.eval``, arbitrary classes, ...)
    is refused before it is imported, so a malicious file cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None

    def persistent_load(self, pid: object) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _unwrap(value: object) -> object:
    if isinstance(value, _PickledArray):
        if value.array is None:
            raise pickle.UnpicklingError("ndarray without state")
        return value.array
    return value


def _entry(batch: dict[Any, Any], key: str) -> object:
    for candidate in (key.encode(), key):
        if candidate in batch:
            return _unwrap(batch[candidate])
    return None


def read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR pickle into uint8 images (N x 3 x 32 x 32) and int64 labels (N)."""
    try:
        with open(path, "rb") as handle:
            batch = _RestrictedUnpickler(handle, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DatasetError(f"{path}: not a valid CIFAR batch: {_one_line(exc)}") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read CIFAR batch: {_one_line(exc)}") from exc
    except Exception as exc:  # truncated or corrupt pickles fail with EOFError, ValueError, TypeError, ...
        raise DatasetError(f"{path}: corrupt CIFAR batch ({type(exc).__name__}: {_one_line(exc)})") from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: a CIFAR batch must be a dict, found {type(batch).__name__}")
    try:
        data, labels = _entry(batch, "data"), _entry(batch, label_key)
    except pickle.UnpicklingError as exc:
        raise DatasetError(f"{path}: not a valid CIFAR batch: {_one_line(exc)}") from exc
    if data is None or labels is None:
        raise DatasetError(f"{path}: CIFAR batch lacks the b'data' or b'{label_key}' entry")
    if isinstance(data, (bytes, bytearray)):
        if len(data) % 3072:
            raise DatasetError(f"{path}: b'data' holds {len(data)} bytes, not a multiple of 3072 (one 3 x 32 x 32 image)")
        data = np.frombuffer(bytes(data), dtype=np.uint8).reshape(-1, 3072)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        described = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: b'data' must be a uint8 N x 3072 array, found {described}")
    try:
        label_array = np.asarray(_unwrap(labels))
    except Exception as exc:
        raise DatasetError(f"{path}: b'{label_key}' is not a list of integers ({_one_line(exc)})") from exc
    if label_array.ndim != 1 or label_array.dtype.kind not in "iu":
        raise DatasetError(f"{path}: b'{label_key}' must be a flat list of integers")
    if label_array.shape[0] != data.shape[0]:
        raise DatasetError(f"{path}: {label_array.shape[0]} labels for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), _labels_in_range(label_array, num_classes, path)


def _load_cifar_files(paths: Sequence[Path], label_key: str, num_classes: int) -> Split:
    batches = [read_cifar_batch(path, label_key, num_classes) for path in paths]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return split_from_uint8(images, labels, channels_last=False)


def _load_cifar10(options: LoadOptions) -> tuple[Split, Split]:
    root = _data_root(options, "cifar10")
    if options.download:
        _download("cifar10", root, [{"train": True}])
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    paths = _require_files("cifar10", root / "cifar-10-batches-py", names)
    return _load_cifar_files(paths[:5], "labels", 10), _load_cifar_files(paths[5:], "labels", 10)


def _load_cifar100(options: LoadOptions) -> tuple[Split, Split]:
    root = _data_root(options, "cifar100")
    if options.download:
        _download("cifar100", root, [{"train": True}])
    train_path, test_path = _require_files("cifar100", root / "cifar-100-python", ["train", "test"])
    return (
        _load_cifar_files([train_path], "fine_labels", 100),
        _load_cifar_files([test_path], "fine_labels", 100),
    )


# --------------------------------------------------------------------------- MATLAB (SVHN)


def read_svhn_mat(path: Path) -> Split:
    """Read one SVHN ``*_32x32.mat`` file; label 10 becomes digit 0."""
    from scipy.io import loadmat

    try:
        contents = loadmat(os.fspath(path), variable_names=["X", "y"])
    except Exception as exc:  # scipy raises ValueError, MatReadError, NotImplementedError (v7.3), OSError, ...
        raise DatasetError(f"{path}: cannot read MATLAB file ({type(exc).__name__}: {_one_line(exc)})") from exc
    images, labels = contents.get("X"), contents.get("y")
    if not isinstance(images, np.ndarray) or not isinstance(labels, np.ndarray):
        raise DatasetError(f"{path}: SVHN file lacks the 'X' or 'y' variable")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise DatasetError(f"{path}: 'X' must be a uint8 32 x 32 x 3 x N array, found {images.dtype} {images.shape}")
    count = images.shape[3]
    if labels.ndim not in (1, 2) or labels.size != count or (labels.ndim == 2 and 1 not in labels.shape):
        raise DatasetError(f"{path}: 'y' must be N x 1 with N = {count} (the images in 'X'), found shape {labels.shape}")
    labels = labels.reshape(-1)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
            raise DatasetError(f"{path}: 'y' holds non-integer labels")
    elif labels.dtype.kind not in "iu":
        raise DatasetError(f"{path}: 'y' must hold integer labels, found {labels.dtype}")
    labels = _labels_in_range(labels, 11, path)  # SVHN uses 1..10 (10 = digit 0); accept 0 too
    labels = np.where(labels == 10, 0, labels)
    return split_from_uint8(images.transpose(3, 0, 1, 2), labels, channels_last=True)


def _load_svhn(options: LoadOptions) -> tuple[Split, Split]:
    root = _data_root(options, "svhn")
    if options.download:
        _download("svhn", root, [{"split": "train"}, {"split": "test"}])
    train_path, test_path = _require_files("svhn", root, ["train_32x32.mat", "test_32x32.mat"])
    return read_svhn_mat(train_path), read_svhn_mat(test_path)


# --------------------------------------------------------------------------- download and registration

_TORCHVISION_CLASSES = {
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "svhn": "SVHN",
}


def _download(name: str, root: Path, calls: Sequence[dict[str, Any]]) -> None:
    """Fetch ``name`` into ``root`` with torchvision (which verifies checksums); the data is read separately."""
    try:
        from torchvision import datasets
    except ImportError as exc:
        raise DatasetError(f"--download needs torchvision, which cannot be imported: {_one_line(exc)}") from exc
    dataset_class: Callable[..., object] = getattr(datasets, _TORCHVISION_CLASSES[name])
    try:
        root.mkdir(parents=True, exist_ok=True)
        for kwargs in calls:
            dataset_class(os.fspath(root), download=True, **kwargs)
    except Exception as exc:  # network errors, checksum mismatches, unwritable roots
        raise DatasetError(f"downloading dataset '{name}' into {root} failed: {_one_line(exc)}") from exc


@dataclass(frozen=True)
class _Info:
    description: str
    num_classes: int
    input_shape: tuple[int, int, int]
    family: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    loader: Callable[[LoadOptions], tuple[Split, Split]]


_SPECS: dict[str, _Info] = {
    "mnist": _Info(
        "MNIST handwritten digits (60,000 train / 10,000 test) from DATA_ROOT/MNIST/raw",
        10, (1, 28, 28), "mnist", (0.1307,), (0.3081,),
        partial(_load_idx_dataset, "mnist", "MNIST"),
    ),
    "fashion-mnist": _Info(
        "Fashion-MNIST clothing images (60,000 train / 10,000 test) from DATA_ROOT/FashionMNIST/raw",
        10, (1, 28, 28), "mnist", (0.2860,), (0.3530,),
        partial(_load_idx_dataset, "fashion-mnist", "FashionMNIST"),
    ),
    "cifar10": _Info(
        "CIFAR-10 (50,000 train / 10,000 test) from DATA_ROOT/cifar-10-batches-py",
        10, (3, 32, 32), "cifar10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        _load_cifar10,
    ),
    "cifar100": _Info(
        "CIFAR-100, fine labels (50,000 train / 10,000 test) from DATA_ROOT/cifar-100-python",
        100, (3, 32, 32), "cifar100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        _load_cifar100,
    ),
    "svhn": _Info(
        "SVHN house-number digits (73,257 train / 26,032 test) from DATA_ROOT/{train,test}_32x32.mat",
        10, (3, 32, 32), "svhn", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
        _load_svhn,
    ),
}

for _name, _info in _SPECS.items():
    DATASETS.register(
        _name,
        DatasetSpec(
            name=_name,
            description=_info.description,
            num_classes=_info.num_classes,
            input_shape=_info.input_shape,
            family=_info.family,
            mean=_info.mean,
            std=_info.std,
            load_splits=_info.loader,
            needs_data_root=True,
        ),
    )
