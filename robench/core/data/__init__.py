"""Dataset registry: ``load_dataset(name)`` returns float NCHW tensors in [0, 1] with fixed splits."""

from robench.core.data import builtin, torchvision_sets  # noqa: F401  (registration side effects)
from robench.core.data.base import DATASETS, Dataset, DatasetSpec, LoadOptions, Split, load_dataset

__all__ = ["DATASETS", "Dataset", "DatasetSpec", "LoadOptions", "Split", "load_dataset"]
