"""Tiny untrained models and their bundle metadata, for tests (build in milliseconds)."""

from __future__ import annotations

from robench.bundle import BundleMeta
from robench.defenses import DEFENSES
from robench.model_factory import build_classifier

TINY_CNN = {"width": 4, "hidden": 16, "feature_dim": 12, "dropout": 0.0}


def make_tiny(defense_name: str = "softmax", seed: int = 0, dropout: float = 0.0, **defense_params):
    """A tiny untrained mnist-shaped classifier and its bundle metadata."""
    defense = DEFENSES.get(defense_name).for_dataset("mnist", defense_params)
    model, resolved = build_classifier("cnn", {**TINY_CNN, "dropout": dropout}, (1, 28, 28), (0.1307,), (0.3081,), defense, 10, seed=seed)
    meta = BundleMeta(
        arch="cnn",
        arch_kwargs=resolved,
        defense=defense_name,
        defense_params=defense.params(),
        dataset="mnist-5k",
        split_seed=0,
        num_classes=10,
        input_shape=(1, 28, 28),
        value_range=(0.0, 1.0),
        mean=(0.1307,),
        std=(0.3081,),
        feature_layer=model.feature_layer,
        feature_dim=model.feature_dim,
        seed=seed,
        clean_accuracy=0.1,
    )
    return model.eval(), meta
