"""Tiny untrained models and their bundle metadata, for tests (build in milliseconds), and small helpers tests share."""

from __future__ import annotations

import os

import torch

from robench.checkpoints.bundle import BundleMeta
from robench.checkpoints.model_factory import build_classifier
from robench.defenses import DEFENSES

TINY_CNN = {"width": 4, "hidden": 16, "feature_dim": 12, "dropout": 0.0}


def make_tiny(defense_name: str = "softmax", seed: int = 0, dropout: float = 0.0, **defense_params):
    """A tiny untrained mnist-shaped classifier and its bundle metadata."""
    defense = DEFENSES.get(defense_name).for_dataset("mnist", defense_params)
    model, resolved = build_classifier(
        "cnn", {**TINY_CNN, "dropout": dropout}, (1, 28, 28), (0.1307,), (0.3081,), defense, 10, seed=seed
    )
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


def two_model_suite(n: int, threats: str, softmax_name: str = "softmax") -> str:
    """A suite's TOML over the ``bundles`` fixture's softmax.pt (named ``softmax_name``) and gm.pt: ``n`` samples
    in one batch on the cpu, the max-prob detector, then the ``[[threat]]`` tables in ``threats``."""
    return f"""
[defaults]
n = {n}
batch_size = {n}
device = "cpu"
detectors = ["max-prob"]

[[model]]
name = "{softmax_name}"
path = "softmax.pt"

[[model]]
name = "gm"
path = "gm.pt"
{threats}"""


def assert_target_success_close(
    model, ours, theirs: torch.Tensor, targets: torch.Tensor, what: str, tolerance: float
) -> None:
    """robench's targeted success rate (``ours``, an AttackResult) within ``tolerance`` of a reference attack's
    (its adversarial inputs ``theirs`` on ``model``), and above 0.2."""
    with torch.no_grad():
        rate_theirs = float((model(theirs).argmax(1) == targets).float().mean())
    rate_ours = float(ours.success.float().mean())
    print(f"{what}: target success robench {rate_ours:.4f} torchattacks {rate_theirs:.4f}")
    assert abs(rate_ours - rate_theirs) <= tolerance
    assert rate_ours > 0.2


class Payload:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
