"""``robench import``: a user's model (exported program, TorchScript, factory + weights, timm + weights) -> a verified
bundle.

Every source becomes a ``torch.export`` program at import time. The model is probed once
(:mod:`robench.checkpoints.imported.probe`): it must be a logit classifier on the declared inputs, and the
named feature layer must give flat features. If its last layer, applied to those features,
reproduces the logits and loads into the defense's head, the program is cut at the feature layer
(x -> z) and that layer becomes a robench head ("separate": the defense's adaptive objective and the
likelihood detector work); otherwise the program returns z and the logits in one pass ("joint": a
softmax classifier, attacked through its logits). The exported program is then checked like any
untrusted archive, rebuilt exactly as ``load_bundle`` rebuilds it, and must reproduce the source
model on the probe batch before the bundle is written.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robench.checkpoints.bundle import (
    MAX_CLASSES,
    BundleMeta,
    ModelBundle,
    input_shape_problem,
    load_bundle,
    save_bundle,
)
from robench.checkpoints.imported import sources
from robench.checkpoints.imported.archive import load_checked_program
from robench.checkpoints.imported.loading import make_head
from robench.checkpoints.imported.probe import close, fit_head, probe, probe_inputs
from robench.checkpoints.imported.program import (
    IMPORTED_ARCH,
    SOURCE_KINDS,
    assemble,
    program_bytes,
    total_size,
    weight_specs,
)
from robench.checkpoints.model_factory import MAX_PARAMETERS
from robench.core.data import DATASETS, load_dataset
from robench.core.errors import BundleError, ConfigError, RobenchError
from robench.core.models import Normalize
from robench.core.provenance import git_revision, package_versions, state_dict_hash
from robench.defenses import DEFENSES

KINDS = ("auto", *SOURCE_KINDS)
UNSPECIFIED_DATASET = "unspecified"


@dataclass(frozen=True)
class ImportRequest:
    """What ``robench import`` was asked: the source, its weights, the inputs it takes and the feature layer."""

    source: str
    feature_layer: str
    kind: str = "auto"
    weights: Path | None = None
    dataset: str | None = None
    input_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None
    value_range: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    defense: str = "softmax"
    defense_params: dict[str, Any] = field(default_factory=dict)
    factory_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Declared:
    """The inputs and classes the model is declared to take (from --dataset or given directly)."""

    dataset: str
    family: str
    input_shape: tuple[int, int, int]
    num_classes: int
    value_range: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def declared_inputs(request: ImportRequest) -> Declared:
    """Resolve --dataset / --input-shape / --num-classes / --value-range / --mean / --std; one-line errors."""
    family = ""
    shape, classes, value_range = request.input_shape, request.num_classes, request.value_range
    if request.dataset is not None:
        spec = DATASETS.get(request.dataset)
        family = spec.family
        if shape is not None and tuple(shape) != tuple(spec.input_shape):
            raise ConfigError(
                f"--input-shape {tuple(shape)} differs from dataset '{spec.name}''s {tuple(spec.input_shape)}"
            )
        if classes is not None and classes != spec.num_classes:
            raise ConfigError(f"--num-classes {classes} differs from dataset '{spec.name}''s {spec.num_classes}")
        shape, classes = tuple(spec.input_shape), spec.num_classes
        value_range = value_range or tuple(spec.value_range)
    if shape is None or classes is None:
        raise ConfigError("declare the model's inputs: --dataset NAME, or --input-shape C,H,W and --num-classes K")
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise ConfigError(f"--input-shape must be three integers C,H,W, got {shape}")
    problem = input_shape_problem(tuple(shape))
    if problem is not None:
        raise ConfigError(f"--input-shape {','.join(map(str, shape))}: {problem}")
    if isinstance(classes, bool) or not isinstance(classes, int) or not 2 <= classes <= MAX_CLASSES:
        raise ConfigError(f"--num-classes must be an integer in [2, {MAX_CLASSES}], got {classes}")
    low, high = value_range or (0.0, 1.0)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"--value-range needs finite LO < HI, got {low},{high}")
    if (request.mean is None) != (request.std is None):
        raise ConfigError("give --mean and --std together (or neither, when the model normalizes its inputs itself)")
    mean = tuple(request.mean) if request.mean is not None else (0.0,) * shape[0]
    std = tuple(request.std) if request.std is not None else (1.0,) * shape[0]
    if len(mean) != shape[0] or len(std) != shape[0]:
        raise ConfigError(
            f"--mean and --std need one value per input channel ({shape[0]}), got {len(mean)} and {len(std)}"
        )
    if not all(math.isfinite(v) for v in mean + std) or any(s <= 0 for s in std):
        raise ConfigError(f"--mean must be finite and --std finite and positive, got mean={mean} std={std}")
    return Declared(
        request.dataset or UNSPECIFIED_DATASET, family, tuple(shape), int(classes), (float(low), float(high)), mean, std
    )


class _Capture(nn.Module):
    """The user's model cut at its feature layer: x -> z, or x -> (z, logits) for a joint program (forward hook)."""

    def __init__(self, model: nn.Module, layer: str, joint: bool) -> None:
        super().__init__()
        self.model = model
        self.layer = layer
        self.joint = joint

    def forward(self, x: Tensor) -> Any:
        captured: list[Tensor] = []
        handle = self.model.get_submodule(self.layer).register_forward_hook(lambda mod, args, out: captured.append(out))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        return (captured[0], logits) if self.joint else captured[0]


def _source_module(request: ImportRequest, kind: str, example: Tensor) -> nn.Module:
    if kind in ("export", "torchscript") and request.weights is not None:
        raise ConfigError(
            f"a {'torch.export program' if kind == 'export' else 'TorchScript archive'} carries its weights; "
            "--weights applies to --kind factory or timm"
        )
    if kind in ("export", "torchscript") and request.factory_kwargs:
        raise ConfigError("--factory-kwarg applies to --kind factory or timm")
    if kind == "export":
        return sources.from_export(Path(request.source))
    if kind == "torchscript":
        return sources.from_torchscript(Path(request.source), example)
    if kind == "timm":
        if request.weights is None:
            raise ConfigError("a timm model needs --weights FILE (robench never downloads pretrained weights)")
        name = request.source[len("timm:") :] if request.source.startswith("timm:") else request.source
        module = sources.from_timm(name, request.factory_kwargs)
    else:
        module = sources.from_factory(request.source, request.factory_kwargs)
    if request.weights is not None:
        sources.apply_weights(module, sources.load_weights(request.weights), request.weights)
    size = sum(t.numel() for t in module.state_dict().values())
    if size > MAX_PARAMETERS:
        raise ConfigError(f"the model has {size:,} weights, more than robench builds ({MAX_PARAMETERS:,})")
    return module


def _eval(module: nn.Module) -> nn.Module:
    try:
        return module.eval()
    except NotImplementedError:  # an exported GraphModule is frozen in eval mode already
        return module


def _export(module: nn.Module, layer: str, joint: bool, example: Tensor) -> torch.export.ExportedProgram:
    try:
        with sources.quiet_torch():
            return torch.export.export(
                _Capture(module, layer, joint),
                (example,),
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                strict=False,
            )
    except Exception as exc:  # noqa: BLE001 - torch.export's errors are many and long
        text = str(exc).strip()
        first = text.splitlines()[0][:200] if text else type(exc).__name__
        raise ConfigError(
            f"the model cannot be exported with torch.export and a dynamic batch size ({type(exc).__name__}: {first})"
        ) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _clean_accuracy(model: nn.Module, declared: Declared) -> float | None:
    """Accuracy on the declared dataset's test split, where it ships with robench (no --data-root); else None."""
    if declared.dataset == UNSPECIFIED_DATASET or DATASETS.get(declared.dataset).needs_data_root:
        return None
    data = load_dataset(declared.dataset)
    correct = 0
    with torch.no_grad():
        for x, y in zip(data.test.x.split(250), data.test.y.split(250)):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, len(data.test))


def import_model(request: ImportRequest) -> ModelBundle:
    """Build, check and describe the imported model (nothing is written); one-line RobenchErrors for bad input."""
    kind = sources.detect_kind(request.source) if request.kind == "auto" else request.kind
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got '{kind}'")
    declared = declared_inputs(request)
    defense = DEFENSES.get(request.defense).for_dataset(declared.family, request.defense_params)
    x = probe_inputs(declared.input_shape, declared.value_range)
    normalize = Normalize(declared.mean, declared.std)
    xn = normalize(x)
    module = _eval(_source_module(request, kind, xn))
    result = probe(module, request.feature_layer, xn, declared.num_classes)
    head, has_bias = fit_head(result, defense, request.feature_layer)
    joint = head is None
    if joint and defense.name != "softmax":
        where = f"'{result.last_name}'" if result.last_name else "none"
        raise ConfigError(
            f"--defense {defense.name} needs the model's last weighted layer to be that defense's head "
            f"applied to the feature layer '{request.feature_layer}' (its last weighted layer: {where}); "
            "without one the model is imported as a softmax logit classifier"
        )
    feature_dim = int(result.z.shape[1])
    ep = _export(module, request.feature_layer, joint, xn)
    if total_size(weight_specs(ep)) > MAX_PARAMETERS:
        raise ConfigError(f"the exported model has more than {MAX_PARAMETERS:,} weights")
    program = program_bytes(ep)
    checked = load_checked_program(
        program.numpy().tobytes(), "the exported program"
    )  # robench's own output, checked as any archive is
    weights = {name: t.detach().to("cpu").contiguous().clone() for name, t in ep.state_dict.items()}
    if head is None:
        head = make_head(defense, feature_dim, declared.num_classes, joint=True, bias=True)
    model = assemble(
        program, checked, weights, feature_layer=request.feature_layer, feature_dim=feature_dim, joint=joint, head=head,
        mean=declared.mean, std=declared.std, source="the exported program",
    ).eval()  # fmt: skip
    with torch.no_grad():
        forward = model.forward_pass(x)
        odd = model(x[:3])  # another batch size: the program's batch dimension is dynamic
    if not (close(forward.logits, result.logits) and close(forward.z, result.z)) or tuple(odd.shape) != (
        3,
        declared.num_classes,
    ):
        raise ConfigError(
            "the exported program does not reproduce the model's logits and features on the probe batch "
            "(does the model depend on anything but its input?)"
        )
    origin: dict[str, Any] = {"source": request.source if kind in ("factory", "timm") else Path(request.source).name}
    if kind in ("export", "torchscript"):
        origin["sha256"] = _sha256(Path(request.source))
    if request.weights is not None:
        origin |= {"weights": request.weights.name, "weights_sha256": _sha256(request.weights)}
    if request.factory_kwargs:
        origin["kwargs"] = dict(request.factory_kwargs)
    meta = BundleMeta(
        arch=IMPORTED_ARCH,
        arch_kwargs={
            "source": kind,
            "head": "joint" if joint else "separate",
            "head_bias": bool(has_bias),
            "mc_dropout": float(model.backbone.mc_rate),
        },
        defense=defense.name,
        defense_params=defense.params(),
        dataset=declared.dataset,
        split_seed=0,
        num_classes=declared.num_classes,
        input_shape=declared.input_shape,
        value_range=declared.value_range,
        mean=declared.mean,
        std=declared.std,
        feature_layer=request.feature_layer,
        feature_dim=feature_dim,
        seed=0,
        train_config={"imported": origin},
        clean_accuracy=_clean_accuracy(model, declared),
        versions=package_versions(),
        git_revision=git_revision(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return ModelBundle(model=model, meta=meta, defense=defense, content_hash=state_dict_hash(state, meta.identity()))


def write_imported(bundle: ModelBundle, out: Path) -> ModelBundle:
    """Save the bundle and load it back through ``load_bundle`` (what ``robench run`` will do); returns the loaded
    one."""
    save_bundle(out, bundle.model, bundle.meta)
    try:
        loaded = load_bundle(out)
    except RobenchError as exc:
        out.unlink(missing_ok=True)
        raise BundleError(f"the written bundle does not load back ({exc}); nothing was kept") from None
    if loaded.content_hash != bundle.content_hash:
        out.unlink(missing_ok=True)
        raise BundleError("the written bundle's content hash differs from the imported model's; nothing was kept")
    return loaded


__all__ = ["KINDS", "ImportRequest", "import_model", "write_imported"]
