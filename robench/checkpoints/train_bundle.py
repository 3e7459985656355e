"""Dataset + architecture + defense -> trained, evaluated :class:`~robench.checkpoints.bundle.ModelBundle`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from robench.checkpoints.bundle import BundleMeta, ModelBundle
from robench.checkpoints.model_factory import build_classifier, plan_backbone
from robench.checkpoints.training import SEED, train, train_config_for
from robench.core.data import DATASETS, load_dataset
from robench.core.errors import ConfigError
from robench.core.provenance import git_revision, package_versions, state_dict_hash
from robench.defenses import DEFENSES


def train_bundle(
    *,
    dataset: str = "mnist-5k",
    arch: str = "cnn",
    defense: str = "softmax",
    seed: int = 0,
    device: torch.device | str = "cpu",
    arch_kwargs: Mapping[str, Any] | None = None,
    defense_params: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    data_root: str | Path | None = None,
    download: bool = False,
    split_seed: int = 0,
    progress: bool = True,
) -> ModelBundle:
    """Train a model with the paper defaults for ``dataset`` (overridable) and return it with its metadata."""
    for what, value in (
        ("arch_kwargs", arch_kwargs),
        ("defense_params", defense_params),
        ("train_overrides", train_overrides),
    ):
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(f"{what} must be a mapping of parameter names to values, got {type(value).__name__}")
    if train_overrides and "seed" in train_overrides:
        raise ConfigError("the training seed is set with seed= (--seed), not as a training parameter")
    device = torch.device(device)
    spec = DATASETS.get(dataset)
    defense_cls = DEFENSES.get(defense)
    defense_obj = defense_cls.for_dataset(spec.family, defense_params)
    config = train_config_for(
        spec.family,
        {**defense_cls.train_defaults.get(spec.family, {}), **dict(train_overrides or {}), "seed": seed},
    )
    problem = SEED.problem("split_seed", split_seed)
    if problem is not None:
        raise ConfigError(problem)
    plan_backbone(
        arch, arch_kwargs, spec.input_shape, spec.num_classes
    )  # bad or oversized kwargs fail before the data loads
    data = load_dataset(dataset, data_root=data_root, download=download, split_seed=split_seed)
    model, resolved = build_classifier(
        arch, arch_kwargs, data.input_shape, data.spec.mean, data.spec.std, defense_obj, data.num_classes, seed=seed
    )
    result = train(model, defense_obj, data, config, device, progress=progress)
    meta = BundleMeta(
        arch=arch,
        arch_kwargs=resolved,
        defense=defense,
        defense_params=defense_obj.params(),
        dataset=dataset,
        split_seed=split_seed,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        value_range=data.value_range,
        mean=data.spec.mean,
        std=data.spec.std,
        feature_layer=model.feature_layer,
        feature_dim=model.feature_dim,
        seed=seed,
        train_config=dataclasses.asdict(config) | {"history": result.history},
        clean_accuracy=result.clean_accuracy,
        train_seconds=round(result.seconds, 3),
        versions=package_versions(),
        git_revision=git_revision(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    model.eval()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return ModelBundle(
        model=model, meta=meta, defense=defense_obj, content_hash=state_dict_hash(state, meta.identity())
    )
