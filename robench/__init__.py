"""robench: adversarial-robustness evaluation harness for PyTorch image classifiers.

Python API::

    import robench
    bundle = robench.train_bundle(dataset="mnist-5k", defense="gm")
    robench.save_bundle("gm.pt", bundle.model, bundle.meta)
    bundle = robench.load_bundle("gm.pt")
    result = robench.run(robench.RunConfig(model="gm.pt", threat="noise", n=500))
    result.summary, result.records                     # pandas DataFrames

New attacks, threat models, defenses and detectors register themselves in
``robench.attacks.ATTACKS``, ``robench.specs.threats.THREATS``,
``robench.defenses.DEFENSES`` and ``robench.detectors.DETECTORS``.
"""

from robench.checkpoints.bundle import BundleMeta, ModelBundle, load_bundle, save_bundle
from robench.checkpoints.train_bundle import train_bundle
from robench.runs.runner import RunResult, run
from robench.specs.run_config import RunConfig

__all__ = ["BundleMeta", "ModelBundle", "RunConfig", "RunResult", "load_bundle", "run", "save_bundle", "train_bundle"]
__version__ = "0.1.0"
