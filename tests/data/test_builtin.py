import pytest
import torch

from robench.core.data import DATASETS, load_dataset
from robench.core.errors import DatasetError, UnknownNameError


def test_mnist_5k_is_balanced_stratified_and_in_range():
    data = load_dataset("mnist-5k")
    assert data.train.x.shape == (4000, 1, 28, 28) and data.test.x.shape == (1000, 1, 28, 28)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert data.train.y.bincount().tolist() == [400] * 10
    assert data.test.y.bincount().tolist() == [100] * 10
    assert data.train.x.min() >= 0 and data.train.x.max() == 1.0
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and data.value_range == (0.0, 1.0)


def test_split_is_fixed_by_its_seed():
    a, b = load_dataset("mnist-5k"), load_dataset("mnist-5k")
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)
    c = load_dataset("mnist-5k", split_seed=1)
    assert not torch.equal(a.test.x, c.test.x)
    # train and test are disjoint and cover all 5,000 images
    together = torch.cat([a.train.x, a.test.x]).flatten(1)
    assert (
        torch.unique(together, dim=0).shape[0]
        == torch.unique(torch.cat([c.train.x, c.test.x]).flatten(1), dim=0).shape[0]
    )


def test_digits():
    data = load_dataset("digits")
    assert data.train.x.shape[1:] == (1, 8, 8)
    assert len(data.train) + len(data.test) == 1797
    assert data.train.x.max() == 1.0 and data.train.x.min() == 0.0


def test_unknown_dataset_and_missing_root():
    with pytest.raises(UnknownNameError, match="did you mean 'mnist-5k'"):
        load_dataset("mnist5k")
    with pytest.raises(DatasetError, match="--data-root"):
        load_dataset("cifar10")


def test_registry_lists_builtin_and_torchvision_sets():
    for name in ["mnist-5k", "digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"]:
        assert name in DATASETS
