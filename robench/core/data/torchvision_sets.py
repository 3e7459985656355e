"""Registrations of the standard datasets read from ``--data-root`` in torchvision's on-disk layout.

All five use their official train/test splits (``split_seed`` is ignored) and
are read by robench's own small readers, never by ``torchvision.datasets``: the
data root is untrusted input, and torchvision's CIFAR loader unpickles
arbitrary pickles while its CIFAR/SVHN loaders reject files whose md5 differs
from the published archives. torchvision is used only by ``--download``
(:mod:`robench.core.data.download`), to fetch the files into the data root.

Each format has its own module, whose docstring gives the layout and cites
the format:

``mnist`` / ``fashion-mnist``
    IDX files under ``ROOT/MNIST/raw/`` resp. ``ROOT/FashionMNIST/raw/``:
    :mod:`robench.core.data.idx`.

``cifar10`` / ``cifar100``
    Python pickles under ``ROOT/cifar-10-batches-py/`` resp.
    ``ROOT/cifar-100-python/``, read with a restricted unpickler that can build
    nothing but plain containers and numeric numpy arrays:
    :mod:`robench.core.data.cifar` (and :mod:`robench.core.data.restricted_pickle`).

``svhn``
    MATLAB files ``ROOT/{train,test}_32x32.mat``: :mod:`robench.core.data.svhn`.
"""

from __future__ import annotations

from functools import partial

from robench.core.data.base import DATASETS, DatasetSpec
from robench.core.data.cifar import load_cifar10, load_cifar100
from robench.core.data.idx import load_idx_dataset
from robench.core.data.svhn import load_svhn

# DatasetSpec fields in order: name, description, num_classes, input_shape, family, mean, std, load_splits
_on_disk = partial(DatasetSpec, needs_data_root=True)

_SPECS: tuple[DatasetSpec, ...] = (
    _on_disk(
        "mnist",
        "MNIST handwritten digits (60,000 train / 10,000 test) from DATA_ROOT/MNIST/raw",
        10,
        (1, 28, 28),
        "mnist",
        (0.1307,),
        (0.3081,),
        partial(load_idx_dataset, "mnist", "MNIST"),
    ),
    _on_disk(
        "fashion-mnist",
        "Fashion-MNIST clothing images (60,000 train / 10,000 test) from DATA_ROOT/FashionMNIST/raw",
        10,
        (1, 28, 28),
        "mnist",
        (0.2860,),
        (0.3530,),
        partial(load_idx_dataset, "fashion-mnist", "FashionMNIST"),
    ),
    _on_disk(
        "cifar10",
        "CIFAR-10 (50,000 train / 10,000 test) from DATA_ROOT/cifar-10-batches-py",
        10,
        (3, 32, 32),
        "cifar10",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        load_cifar10,
    ),
    _on_disk(
        "cifar100",
        "CIFAR-100, fine labels (50,000 train / 10,000 test) from DATA_ROOT/cifar-100-python",
        100,
        (3, 32, 32),
        "cifar100",
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        load_cifar100,
    ),
    _on_disk(
        "svhn",
        "SVHN house-number digits (73,257 train / 26,032 test) from DATA_ROOT/{train,test}_32x32.mat",
        10,
        (3, 32, 32),
        "svhn",
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
        load_svhn,
    ),
)

for _spec in _SPECS:
    DATASETS.register(_spec)
