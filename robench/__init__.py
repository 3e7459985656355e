"""robench: adversarial-robustness evaluation harness for PyTorch image classifiers.

Python API::

    import robench
    bundle = robench.train_bundle(dataset="mnist-5k", defense="gm")
    robench.save_bundle("gm.pt", bundle.model, bundle.meta)
    bundle = robench.load_bundle("gm.pt")
"""

from robench.bundle import BundleMeta, ModelBundle, load_bundle, save_bundle
from robench.train_bundle import train_bundle

__all__ = ["BundleMeta", "ModelBundle", "load_bundle", "save_bundle", "train_bundle"]
__version__ = "0.1.0"
