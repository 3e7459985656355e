"""Readers for the on-disk torchvision datasets, exercised with tiny files in the genuine formats."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import robench.core.data
from robench.core.data import DATASETS, load_dataset
from robench.core.errors import DatasetError

N_TRAIN, N_TEST = 20, 10
IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


# --------------------------------------------------------------------------- writers (torchvision's layout)


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """Write an unsigned-byte IDX file: magic 0x0000 08 ndim, big-endian uint32 dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    blob = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as handle:
            handle.write(blob)
    else:
        path.write_bytes(blob)
    return path


def make_idx_dataset(root: Path, folder: str, *, gz: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, count in (("train", N_TRAIN), ("t10k", N_TEST)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        images[0, 3, 17] = 255  # row 3, column 17
        images[1, 27, 0] = 0
        images[1, 0, 27] = 1
        labels = (np.arange(count) * 7 % 10).astype(np.uint8)
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = images, labels
    return arrays


def cifar_images(count: int, seed: int) -> np.ndarray:
    """N x 3 x 32 x 32 uint8 with a marker in the green channel at row 5, column 7 of image 0."""
    images = np.random.default_rng(seed).integers(0, 200, size=(count, 3, 32, 32), dtype=np.uint8)
    images[0, 1, 5, 7] = 250
    return images


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], label_key: bytes, protocol: int = 4) -> None:
    """A CIFAR batch: a pickled dict with bytes keys, b'data' uint8 N x 3072 (CHW-flattened rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        label_key: labels,
        b"data": images.reshape(len(images), 3072),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=protocol)


def make_cifar10(root: Path, protocol: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    train_images = cifar_images(N_TRAIN, seed=1)
    train_labels = (np.arange(N_TRAIN) % 10).astype(np.int64)
    per_batch = N_TRAIN // 5
    for i in range(5):
        part = slice(i * per_batch, (i + 1) * per_batch)
        write_cifar_batch(
            folder / f"data_batch_{i + 1}", train_images[part], train_labels[part].tolist(), b"labels", protocol
        )
    test_images = cifar_images(N_TEST, seed=2)
    test_labels = (np.arange(N_TEST)[::-1] % 10).astype(np.int64)
    write_cifar_batch(folder / "test_batch", test_images, test_labels.tolist(), b"labels", protocol)
    return train_images, train_labels, test_images, test_labels


def make_svhn(root: Path) -> dict[str, np.ndarray]:
    """SVHN .mat files: X is H x W x C x N uint8, y is N x 1 with 10 standing for digit 0."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, count in (("train", N_TRAIN), ("test", N_TEST)):
        x = rng.integers(0, 200, size=(32, 32, 3, count), dtype=np.uint8)
        x[4, 9, 2, 3] = 251  # image 3, blue channel, row 4, column 9
        y = (np.arange(count) % 10 + 1).astype(np.uint8).reshape(count, 1)  # 1..10
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x, y
    return arrays


class _Payload:
    """Unpickling this object would run ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


# --------------------------------------------------------------------------- registration


@pytest.mark.parametrize(
    ("name", "shape", "classes", "family"),
    [
        ("mnist", (1, 28, 28), 10, "mnist"),
        ("fashion-mnist", (1, 28, 28), 10, "mnist"),
        ("cifar10", (3, 32, 32), 10, "cifar10"),
        ("cifar100", (3, 32, 32), 100, "cifar100"),
        ("svhn", (3, 32, 32), 10, "svhn"),
    ],
)
def test_specs_are_registered(name: str, shape: tuple[int, int, int], classes: int, family: str) -> None:
    spec = DATASETS.get(name)
    assert spec.needs_data_root
    assert spec.input_shape == shape and spec.num_classes == classes and spec.family == family
    assert spec.value_range == (0.0, 1.0)
    assert len(spec.mean) == len(spec.std) == shape[0]
    assert robench.core.data.DATASETS is DATASETS


def test_normalization_constants() -> None:
    assert DATASETS.get("mnist").mean == (0.1307,) and DATASETS.get("mnist").std == (0.3081,)
    assert DATASETS.get("fashion-mnist").mean == (0.2860,) and DATASETS.get("fashion-mnist").std == (0.3530,)
    assert DATASETS.get("cifar10").std == (0.2470, 0.2435, 0.2616)
    assert DATASETS.get("cifar100").mean == (0.5071, 0.4865, 0.4409)
    assert DATASETS.get("svhn").mean == (0.4377, 0.4438, 0.4728)


# --------------------------------------------------------------------------- MNIST / Fashion-MNIST


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_datasets_load(tmp_path: Path, name: str, gz: bool) -> None:
    arrays = make_idx_dataset(tmp_path, IDX_FOLDERS[name], gz=gz)
    data = load_dataset(name, data_root=tmp_path)
    assert data.train.x.shape == (N_TRAIN, 1, 28, 28) and data.test.x.shape == (N_TEST, 1, 28, 28)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert data.train.x[0, 0, 3, 17].item() == 1.0
    assert data.train.x[1, 0, 0, 27].item() == np.float32(1) / np.float32(255)
    expected = torch.from_numpy(arrays["t10k_images"].astype(np.float32) / np.float32(255))
    assert torch.equal(data.test.x[:, 0], expected)
    assert data.train.y.tolist() == arrays["train_labels"].tolist()
    assert data.test.y.tolist() == arrays["t10k_labels"].tolist()


def test_plain_idx_file_preferred_over_gz(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "MNIST", gz=True, seed=1)
    arrays = make_idx_dataset(tmp_path, "MNIST", gz=False, seed=2)
    data = load_dataset("mnist", data_root=tmp_path)
    assert data.train.y.tolist() == arrays["train_labels"].tolist()
    assert torch.equal(data.train.x[:, 0] * 255, torch.from_numpy(arrays["train_images"].astype(np.float32)))


def test_truncated_idx_file(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.*truncated"):
        load_dataset("mnist", data_root=tmp_path)


def test_truncated_idx_header(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.*truncated"):
        load_dataset("mnist", data_root=tmp_path)


def test_truncated_gzip_idx_file(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "FashionMNIST", gz=True)
    path = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz"):
        load_dataset("fashion-mnist", data_root=tmp_path)


def test_gz_that_is_not_gzip(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    (raw / "train-labels-idx1-ubyte").unlink()
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(b"definitely not gzip data")
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz"):
        load_dataset("mnist", data_root=tmp_path)


def test_idx_trailing_data(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x01")
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.*trailing"):
        load_dataset("mnist", data_root=tmp_path)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (struct.pack(">HBB", 0x1F8B, 8, 3), "not an IDX file"),
        (struct.pack(">HBB", 0, 0x0D, 3), "element type 0x0d"),
        (struct.pack(">HBB", 0, 8, 2), "2 dimensions, expected 3"),
    ],
)
def test_idx_bad_magic(tmp_path: Path, header: bytes, message: str) -> None:
    make_idx_dataset(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(header + path.read_bytes()[4:])
    with pytest.raises(DatasetError, match=f"t10k-images-idx3-ubyte.*{message}"):
        load_dataset("mnist", data_root=tmp_path)


def test_idx_huge_declared_size_is_rejected_cheaply(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">HBB3I", 0, 8, 3, 2**31, 28, 28) + bytes(100))
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.*truncated"):
        load_dataset("mnist", data_root=tmp_path)


def test_idx_wrong_image_size(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "MNIST")
    write_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", np.zeros((N_TRAIN, 32, 32), np.uint8))
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.*32 x 32, expected 28 x 28"):
        load_dataset("mnist", data_root=tmp_path)


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "MNIST")
    write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.zeros(N_TRAIN - 1, np.uint8))
    with pytest.raises(DatasetError, match=f"train-labels-idx1-ubyte.*{N_TRAIN - 1} labels for the {N_TRAIN} images"):
        load_dataset("mnist", data_root=tmp_path)


def test_idx_label_out_of_range(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "MNIST")
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.full(N_TEST, 10, np.uint8))
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte.*0\.\.9"):
        load_dataset("mnist", data_root=tmp_path)


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_loads(tmp_path: Path, protocol: int) -> None:
    train_images, train_labels, test_images, test_labels = make_cifar10(tmp_path, protocol)
    data = load_dataset("cifar10", data_root=tmp_path)
    assert data.train.x.shape == (N_TRAIN, 3, 32, 32) and data.test.x.shape == (N_TEST, 3, 32, 32)
    assert data.train.x.dtype == torch.float32
    # CHW layout: the marker sits in the green channel at row 5, column 7 only
    assert data.train.x[0, 1, 5, 7].item() == np.float32(250) / np.float32(255)
    assert (data.train.x[0, [0, 2], 5, 7] * 255 < 200).all()
    assert torch.equal(data.train.x * 255, torch.from_numpy(train_images.astype(np.float32)))
    assert torch.equal(data.test.x, torch.from_numpy(test_images.astype(np.float32) / np.float32(255)))
    assert data.train.y.tolist() == train_labels.tolist()  # batches 1..5 in order
    assert data.test.y.tolist() == test_labels.tolist()


def test_cifar100_loads_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    train_images, test_images = cifar_images(N_TRAIN, seed=4), cifar_images(N_TEST, seed=5)
    train_labels = [(i * 13) % 100 for i in range(N_TRAIN)]
    train_labels[0] = 99
    write_cifar_batch(folder / "train", train_images, train_labels, b"fine_labels")
    write_cifar_batch(folder / "test", test_images, [i * 9 for i in range(N_TEST)], b"fine_labels")
    data = load_dataset("cifar100", data_root=tmp_path)
    assert data.num_classes == 100
    assert data.train.y.tolist() == train_labels
    assert data.test.y.tolist() == [i * 9 for i in range(N_TEST)]
    assert data.test.x[0, 1, 5, 7].item() == np.float32(250) / np.float32(255)
    assert torch.equal(data.train.x * 255, torch.from_numpy(train_images.astype(np.float32)))


def _python2_cifar_pickle(images: np.ndarray, labels: list[int]) -> bytes:
    """The bytes cPickle (protocol 2) wrote for the original CIFAR batches: str keys, old numpy names."""
    raw = images.reshape(len(images), 3072).tobytes()
    out = [
        b"\x80\x02}q\x00(U\x04data",
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01",
        b"M" + struct.pack("<H", len(images)) + b"M\x00\x0c\x86",
        b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
        b"\x89T" + struct.pack("<I", len(raw)) + raw + b"tb",
        b"U\x06labels](" + b"".join(b"K" + bytes([label]) for label in labels) + b"eu.",
    ]
    return b"".join(out)


def test_cifar_python2_pickles(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = []
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        images, labels = cifar_images(4, seed=10 + i), [(i + k) % 10 for k in range(4)]
        blob = _python2_cifar_pickle(images, labels)
        reference = pickle.loads(blob, encoding="bytes")  # what the CIFAR web page's snippet gets
        assert np.array_equal(reference[b"data"], images.reshape(4, 3072)) and reference[b"labels"] == labels
        (folder / name).write_bytes(blob)
        batches.append((images, labels))
    data = load_dataset("cifar10", data_root=tmp_path)
    assert torch.equal(
        data.train.x * 255, torch.from_numpy(np.concatenate([b[0] for b in batches[:5]]).astype(np.float32))
    )
    assert data.test.y.tolist() == batches[5][1]


def test_malicious_cifar_pickle_does_not_run(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as handle:
        pickle.dump({b"data": _Payload(f"touch {marker}"), b"labels": [0]}, handle)
    with pytest.raises(DatasetError, match=r"data_batch_3.*refusing to load global (posix|os|nt)\.system"):
        load_dataset("cifar10", data_root=tmp_path)
    assert not marker.exists()


def test_cifar_pickle_with_eval_or_object_array_is_refused(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": np.array([1, "x"], dtype=object), b"labels": [0, 1]}, handle)
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset("cifar10", data_root=tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x04cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(DatasetError, match="test_batch.*builtins.eval"):
        load_dataset("cifar10", data_root=tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "truncated"),
        (b"", "corrupt CIFAR batch"),
        (pickle.dumps([1, 2, 3]), "must be a dict"),
        (
            b"\x80\x04}(C\x04datacnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87Ru.",
            "without state",
        ),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "lacks"),
        (pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}), "N x 3072"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), "uint8"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "1 labels for 2 images"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), r"0\.\.9"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}), "integers"),
    ],
)
def test_bad_cifar_batches(tmp_path: Path, content: bytes | None, message: str) -> None:
    make_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:200] if content is None else content)
    with pytest.raises(DatasetError, match=f"data_batch_2.*{message}"):
        load_dataset("cifar10", data_root=tmp_path)


def test_cifar_missing_one_batch(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DatasetError, match="missing data_batch_4.*--download") as info:
        load_dataset("cifar10", data_root=tmp_path)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- SVHN


def test_svhn_loads(tmp_path: Path) -> None:
    arrays = make_svhn(tmp_path)
    data = load_dataset("svhn", data_root=tmp_path)
    assert data.train.x.shape == (N_TRAIN, 3, 32, 32) and data.test.x.shape == (N_TEST, 3, 32, 32)
    assert data.train.x.dtype == torch.float32
    # X[h, w, c, n] lands at x[n, c, h, w]
    assert data.train.x[3, 2, 4, 9].item() == np.float32(251) / np.float32(255)
    assert (data.train.x[3, :2, 4, 9] * 255 < 200).all() and data.train.x[3, 2, 9, 4] * 255 < 200
    expected = np.transpose(arrays["test_x"], (3, 2, 0, 1)).astype(np.float32) / np.float32(255)  # torchvision's order
    assert torch.equal(data.test.x, torch.from_numpy(expected))
    assert data.train.y.tolist() == [(i % 10 + 1) % 10 for i in range(N_TRAIN)]  # 10 -> 0
    assert 0 in data.train.y.tolist() and 10 not in data.train.y.tolist()


def test_svhn_missing_test_file(tmp_path: Path) -> None:
    make_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(DatasetError, match=r"test_32x32\.mat.*--download"):
        load_dataset("svhn", data_root=tmp_path)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"X": np.zeros((32, 32, 3, 4), np.uint8)}, "lacks"),
        ({"X": np.zeros((28, 28, 3, 4), np.uint8), "y": np.ones((4, 1), np.uint8)}, "32 x 32 x 3 x N"),
        ({"X": np.zeros((32, 32, 3, 4), np.float64), "y": np.ones((4, 1), np.uint8)}, "uint8"),
        ({"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1), np.uint8)}, "N = 4"),
        ({"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.full((4, 1), 11, np.uint8)}, r"0\.\.10"),
        ({"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.full((4, 1), 1.5)}, "non-integer"),
    ],
)
def test_bad_svhn_files(tmp_path: Path, variables: dict[str, np.ndarray], message: str) -> None:
    make_svhn(tmp_path)
    scipy.io.savemat(tmp_path / "train_32x32.mat", variables)
    with pytest.raises(DatasetError, match=rf"train_32x32\.mat.*{message}"):
        load_dataset("svhn", data_root=tmp_path)


def test_svhn_float_labels_accepted(tmp_path: Path) -> None:
    make_svhn(tmp_path)
    scipy.io.savemat(
        tmp_path / "test_32x32.mat",
        {"X": np.zeros((32, 32, 3, 3), np.uint8), "y": np.array([[10.0], [1.0], [9.0]])},
    )
    assert load_dataset("svhn", data_root=tmp_path).test.y.tolist() == [0, 1, 9]


@pytest.mark.parametrize("content", [b"", b"not a matlab file at all" * 10, None])
def test_corrupt_svhn_file(tmp_path: Path, content: bytes | None) -> None:
    make_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:300] if content is None else content)
    with pytest.raises(DatasetError, match=r"train_32x32\.mat"):
        load_dataset("svhn", data_root=tmp_path)


# --------------------------------------------------------------------------- missing data and --download

ALL = ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"]


@pytest.mark.parametrize("name", ALL)
def test_missing_root_mentions_download(tmp_path: Path, name: str) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="--download") as info:
        load_dataset(name, data_root=root)
    message = str(info.value)
    assert str(root) in message and "\n" not in message
    assert not root.exists()  # nothing was created or fetched


@pytest.mark.parametrize("name", ALL)
def test_no_data_root(name: str) -> None:
    with pytest.raises(DatasetError, match="--data-root"):
        load_dataset(name)


def test_no_data_root_when_called_directly() -> None:
    with pytest.raises(DatasetError, match="--data-root"):
        DATASETS.get("cifar10").load_splits(robench.core.data.LoadOptions())


def test_missing_mnist_lists_expected_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", data_root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte[.gz]" in message and "t10k-labels-idx1-ubyte" in message


def test_data_root_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="--download"):
        load_dataset("svhn", data_root=tmp_path / "file")


@pytest.fixture
def tv_datasets():
    return pytest.importorskip("torchvision.datasets")


def test_download_fetches_with_torchvision_then_reads(tmp_path: Path, monkeypatch, tv_datasets) -> None:
    calls = []

    class FakeMNIST:
        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            calls.append((root, train, download))
            make_idx_dataset(Path(root), "MNIST")

    monkeypatch.setattr(tv_datasets, "MNIST", FakeMNIST)
    root = tmp_path / "new" / "root"
    data = load_dataset("mnist", data_root=root, download=True)
    assert calls == [(str(root), True, True)]
    assert len(data.train) == N_TRAIN and len(data.test) == N_TEST


def test_svhn_download_fetches_both_splits(tmp_path: Path, monkeypatch, tv_datasets) -> None:
    calls = []

    class FakeSVHN:
        def __init__(self, root: str, split: str = "train", download: bool = False) -> None:
            calls.append((split, download))
            make_svhn(Path(root))

    monkeypatch.setattr(tv_datasets, "SVHN", FakeSVHN)
    load_dataset("svhn", data_root=tmp_path, download=True)
    assert calls == [("train", True), ("test", True)]


def test_download_failure_is_a_dataset_error(tmp_path: Path, monkeypatch, tv_datasets) -> None:
    class Offline:
        def __init__(self, *args, **kwargs) -> None:
            raise RuntimeError("Error downloading cifar-10-python.tar.gz:\nconnection refused")

    monkeypatch.setattr(tv_datasets, "CIFAR10", Offline)
    with pytest.raises(DatasetError, match="downloading dataset 'cifar10' into .* failed: Error downloading") as info:
        load_dataset("cifar10", data_root=tmp_path, download=True)
    assert "\n" not in str(info.value)


def test_no_download_never_calls_torchvision(tmp_path: Path, monkeypatch, tv_datasets) -> None:
    class Forbidden:
        def __init__(self, *args, **kwargs) -> None:
            raise AssertionError("torchvision must not be used without --download")

    for name in ("MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "SVHN"):
        monkeypatch.setattr(tv_datasets, name, Forbidden)
    make_cifar10(tmp_path)
    make_idx_dataset(tmp_path, "FashionMNIST")
    assert len(load_dataset("cifar10", data_root=tmp_path).train) == N_TRAIN
    assert len(load_dataset("fashion-mnist", data_root=tmp_path).test) == N_TEST
    with pytest.raises(DatasetError):
        load_dataset("cifar100", data_root=tmp_path)
