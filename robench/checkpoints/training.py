"""Training a (backbone, defense) pair on a dataset: typed config, seeded, batched augmentation.

Reproducibility: shuffling and augmentation draw from an explicit
``torch.Generator``; weight init and dropout run under
``torch.random.fork_rng`` seeded with the config's seed, so the same seed gives
the same model on the same device and the caller's global RNG is untouched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from robench.core.config import (
    Constraint,
    boolean,
    choice,
    constrained,
    finite,
    integer,
    positive_int,
    replace_fields,
    validate_fields,
)
from robench.core.data import Dataset
from robench.core.errors import ConfigError
from robench.core.inference import accuracy
from robench.core.models import Classifier
from robench.defenses import Defense

SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts
SEED = Constraint(
    "an integer in [-2**63, 2**64 - 1] (a torch generator seed)",
    lambda v: isinstance(v, int) and not isinstance(v, bool) and SEED_RANGE[0] <= v <= SEED_RANGE[1],
)


def seed_field(default: int = 0) -> Any:
    """A dataclass field holding a seed (:data:`SEED`)."""
    return constrained(default, SEED)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``shift`` is random translation in pixels; ``hflip`` random horizontal flips."""

    epochs: int = positive_int(20)
    batch_size: int = positive_int(64)
    optimizer: str = choice("adam", "adam", "sgd")
    lr: float = finite(2e-3, low=0, low_open=True)
    momentum: float = finite(0.9, low=0, high=1, high_open=True)
    weight_decay: float = finite(0.0, low=0)
    shift: int = integer(2, low=0, high=64, note="pixels")
    hflip: bool = boolean(False)
    seed: int = seed_field(0)

    def __post_init__(self) -> None:
        validate_fields(self, "training config")
        if self.optimizer == "sgd" and self.momentum == 0:
            raise ConfigError("training config: sgd uses Nesterov momentum, which needs momentum > 0")


# Per dataset family; CIFAR-style settings follow He et al. 2016 / paper 001 Sec. 4.1 in spirit
# (SGD, momentum 0.9, weight decay 5e-4, flips and 4-pixel shifts), with a cosine schedule.
FAMILY_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {},
    "cifar10": {
        "optimizer": "sgd",
        "lr": 0.1,
        "weight_decay": 5e-4,
        "shift": 4,
        "hflip": True,
        "batch_size": 128,
        "epochs": 100,
    },
    "cifar100": {
        "optimizer": "sgd",
        "lr": 0.1,
        "weight_decay": 5e-4,
        "shift": 4,
        "hflip": True,
        "batch_size": 128,
        "epochs": 100,
    },
    "svhn": {"optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "shift": 2, "batch_size": 128, "epochs": 30},
}


def train_config_for(family: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults for a dataset family, then user overrides."""
    base = replace_fields(TrainConfig(), FAMILY_TRAIN_DEFAULTS.get(family, {}), "training config")
    return replace_fields(base, overrides or {}, "training config")


def augment(x: Tensor, shift: int, hflip: bool, generator: torch.Generator) -> Tensor:
    """Random translation by up to ``shift`` pixels (zero padding) and optional flips, per sample, batched."""
    n, _, h, w = x.shape
    if shift > 0:
        padded = torch.nn.functional.pad(x, (shift, shift, shift, shift)).flatten(2)
        dy = torch.randint(0, 2 * shift + 1, (n, 1, 1), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * shift + 1, (n, 1, 1), generator=generator).to(x.device)
        rows = dy + torch.arange(h, device=x.device)[None, :, None]
        cols = dx + torch.arange(w, device=x.device)[None, None, :]
        index = (rows * (w + 2 * shift) + cols).flatten(1)[:, None, :].expand(n, x.shape[1], h * w)
        x = padded.gather(2, index).view(n, x.shape[1], h, w)
    if hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


@dataclass
class TrainResult:
    seconds: float
    clean_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)


def train(
    model: Classifier,
    defense: Defense,
    dataset: Dataset,
    config: TrainConfig,
    device: torch.device,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place with ``defense.loss``; returns timing, history and clean test accuracy."""
    model.to(device)
    params = list(model.parameters())
    if config.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
        )
    x_train, y_train = dataset.train.x, dataset.train.y
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(config.seed)
        # disable=None: tqdm shows the bar on a terminal and stays silent in logs.
        bar = tqdm(
            total=config.epochs * steps_per_epoch,
            desc="train",
            unit="batch",
            disable=None if progress else True,
            leave=False,
            mininterval=0.5,
        )
        for epoch in range(config.epochs):
            model.train()
            order = torch.randperm(len(y_train), generator=generator)
            total, correct, loss_sum = 0, 0, 0.0
            for i in range(0, len(order), config.batch_size):
                idx = order[i : i + config.batch_size]
                xb = augment(x_train[idx].to(device), config.shift, config.hflip, generator)
                yb = y_train[idx].to(device)
                z = model.features(xb)
                terms = defense.loss(model.head, z, yb)
                if not torch.isfinite(terms.total.detach()):
                    raise ConfigError(f"training diverged (loss {float(terms.total)}) in epoch {epoch + 1}: lower --lr")
                optimizer.zero_grad(set_to_none=True)
                terms.total.backward()
                optimizer.step()
                scheduler.step()
                with torch.no_grad():
                    correct += int((model.head(z).argmax(1) == yb).sum())
                total += len(yb)
                loss_sum += float(terms.total.detach()) * len(yb)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / total:.3f}", acc=f"{correct / total:.3f}")
            history.append({"epoch": epoch + 1, "loss": loss_sum / total, "train_accuracy": correct / total})
        bar.close()
    seconds = time.perf_counter() - start
    model.eval()
    clean = accuracy(model, dataset.test.x, dataset.test.y, device)
    return TrainResult(seconds=seconds, clean_accuracy=clean, history=history)
