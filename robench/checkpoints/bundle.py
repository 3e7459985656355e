"""Checkpoint bundles: one file with the weights and everything needed to rebuild and evaluate the model.

Format: ``torch.save`` of a dict holding only plain data and tensors::

    {"format": "robench-bundle", "version": 1,
     "meta": <JSON string of BundleMeta>, "state_dict": {name: tensor}, "content_hash": <sha256>}

A checkpoint is untrusted input. It is read with ``torch.load(weights_only=True)``,
which refuses any pickled object other than tensors and containers of plain
values, so a code payload never runs. The metadata is JSON and validated field
by field; the content hash is recomputed and must match, which catches
corruption that still unpickles.

An imported model (``robench import``, arch ``imported``) keeps the same format: its ``torch.export``
program is a uint8 tensor in the state dict (covered by the content hash) and is checked member by
member before torch deserializes it (:mod:`robench.checkpoints.imported.archive`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robench.checkpoints.imported.program import IMPORTED_ARCH
from robench.checkpoints.model_factory import build_classifier, plan_backbone
from robench.checkpoints.training import SEED_RANGE
from robench.core.errors import BundleError, RobenchError
from robench.core.models import Classifier
from robench.core.models.base import MAX_UNITS
from robench.core.provenance import atomic_write_bytes, state_dict_hash
from robench.core.safe_load import load_weights_only
from robench.defenses import DEFENSES, Defense

BUNDLE_FORMAT = "robench-bundle"
BUNDLE_VERSION = 1
_UNREADABLE = (
    "refused: not a readable checkpoint (truncated, corrupt, not a torch file, "
    "or holding objects other than tensors and plain data)"
)
# Bounds on the sizes metadata may declare, checked before anything is built (a bundle is untrusted input).
MAX_CLASSES = 100_000
MAX_INPUT_CHANNELS = 64
MAX_INPUT_SIDE = 4096
# C*H*W of one input image: 2**24 values (64 MiB in float32; 1x4096x4096, 3x2364x2364 or 64x512x512). robench's
# fixed batches of one shape (an import's probe batch of 4 rows, the 2-row compile and shape checks) then stay
# under 256 MiB, while a batch of a run is --batch-size images of it.
MAX_INPUT_ELEMENTS = 2**24
MAX_ABS_VALUE = 1e6  # |value_range| and |mean| (inputs are scaled to this range and normalized)
STD_RANGE = (1e-6, 1e6)
MAX_TRAIN_SECONDS = 1e9
_MAX_JSON_DEPTH = 32
_CONTROL = frozenset(chr(c) for c in (*range(32), 127))


def input_shape_problem(shape: tuple[int, ...]) -> str | None:
    """Why an input shape (C, H, W) is beyond what robench handles, or None: one clause for a one-line error."""
    channels, *sides = shape
    if not 1 <= channels <= MAX_INPUT_CHANNELS:
        return f"{channels} channels is outside [1, {MAX_INPUT_CHANNELS}]"
    for side in sides:
        if not 1 <= side <= MAX_INPUT_SIDE:
            return f"a side of {side} pixels is outside [1, {MAX_INPUT_SIDE}]"
    elements = math.prod(shape)
    if elements > MAX_INPUT_ELEMENTS:
        return (
            f"{elements:,} values per image is more than robench allocates "
            f"({MAX_INPUT_ELEMENTS:,} = 2**24 values = C*H*W, "
            f"e.g. 1x4096x4096 or 3x2364x2364)"
        )
    return None


@dataclass(frozen=True)
class BundleMeta:
    """Everything about a trained model except its weights."""

    arch: str
    arch_kwargs: dict[str, Any]
    defense: str
    defense_params: dict[str, Any]
    dataset: str
    split_seed: int
    num_classes: int
    input_shape: tuple[int, int, int]
    value_range: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    feature_layer: str
    feature_dim: int
    seed: int
    train_config: dict[str, Any] = field(default_factory=dict)
    clean_accuracy: float | None = None
    train_seconds: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_revision: str = "unknown"
    created_at: str = ""

    def identity(self) -> dict[str, Any]:
        """The fields that determine the function the model computes (hashed with the weights)."""
        return {
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "defense": self.defense,
            "defense_params": self.defense_params,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "value_range": list(self.value_range),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> BundleMeta:
        try:
            raw = json.loads(text)
        except (TypeError, ValueError):
            raise BundleError(f"{source}: bundle metadata is not valid JSON") from None
        except RecursionError:
            raise BundleError(f"{source}: bundle metadata nests too deeply: refused") from None
        if not isinstance(raw, dict):
            raise BundleError(f"{source}: bundle metadata is not a JSON object")
        return _meta_from_dict(raw, source)


def _meta_from_dict(raw: dict[str, Any], source: str) -> BundleMeta:
    fields = {f.name: f for f in dataclasses.fields(BundleMeta)}
    required = [
        n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [n for n in required if n not in raw]
    if missing:
        raise BundleError(f"{source}: bundle metadata lacks {', '.join(missing)}")
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise BundleError(f"{source}: bundle metadata has unknown fields {', '.join(unknown)}")

    def expect(name: str, kinds: tuple[type, ...]) -> Any:
        value = raw.get(name)
        if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
            raise BundleError(f"{source}: bundle metadata field '{name}' has the wrong type")
        return value

    def numbers(name: str, length: int | None, kind: type) -> tuple:
        value = expect(name, (list, tuple))
        if (
            length is not None
            and len(value) != length
            or length is None
            and len(value) > MAX_INPUT_CHANNELS
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        ):
            raise BundleError(f"{source}: bundle metadata field '{name}' is malformed")
        return tuple(kind(v) for v in value)

    def bounded(name: str, value: int | float, low: int | float, high: int | float) -> None:
        if not low <= value <= high:
            raise BundleError(f"{source}: bundle metadata field '{name}' is {value}, outside [{low}, {high}]: refused")

    for (
        name,
        value,
    ) in raw.items():  # JSON's NaN and Infinity, control characters (a forged line in 'info'), deep nesting
        problem = _json_problem(value)
        if problem:
            raise BundleError(f"{source}: bundle metadata field '{name}' {problem}: refused")

    for name in ("arch", "defense", "dataset", "feature_layer"):
        expect(name, (str,))
    for name in ("arch_kwargs", "defense_params"):
        expect(name, (dict,))
    for name in ("split_seed", "num_classes", "feature_dim", "seed"):
        expect(name, (int,))
    values = dict(raw)
    values["input_shape"] = numbers("input_shape", 3, int)
    values["value_range"] = numbers("value_range", 2, float)
    values["mean"] = numbers("mean", None, float)
    values["std"] = numbers("std", None, float)
    if values["num_classes"] < 2 or min(values["input_shape"]) < 1:
        raise BundleError(f"{source}: bundle metadata has impossible shapes")
    bounded("num_classes", values["num_classes"], 2, MAX_CLASSES)
    bounded("input_shape channels", values["input_shape"][0], 1, MAX_INPUT_CHANNELS)
    for side in values["input_shape"][1:]:
        bounded("input_shape side", side, 1, MAX_INPUT_SIDE)
    bounded("feature_dim", values["feature_dim"], 1, MAX_UNITS)
    for name in ("seed", "split_seed"):
        bounded(name, values[name], *SEED_RANGE)
    elements = math.prod(values["input_shape"])
    if elements > MAX_INPUT_ELEMENTS:
        raise BundleError(
            f"{source}: bundle metadata field 'input_shape' {list(values['input_shape'])} "
            f"is {elements:,} values per image, "
            f"more than robench allocates ({MAX_INPUT_ELEMENTS:,} = 2**24): refused"
        )
    low, high = values["value_range"]
    if not (-MAX_ABS_VALUE <= low < high <= MAX_ABS_VALUE):
        raise BundleError(
            f"{source}: bundle metadata field 'value_range' is [{low:g}, {high:g}]: it needs low < high, within "
            f"[-{MAX_ABS_VALUE:g}, {MAX_ABS_VALUE:g}]: refused"
        )
    channels = values["input_shape"][0]
    if len(values["mean"]) != channels or len(values["std"]) != channels:
        raise BundleError(
            f"{source}: bundle metadata fields 'mean' and 'std' need one value per input channel ({channels}), "
            f"got {len(values['mean'])} and {len(values['std'])}: refused"
        )
    for mean in values["mean"]:
        bounded("mean", mean, -MAX_ABS_VALUE, MAX_ABS_VALUE)
    for std in values["std"]:
        bounded("std", std, *STD_RANGE)
    for name in ("train_config", "versions"):
        if name in raw:
            expect(name, (dict,))
    for name in ("git_revision", "created_at"):
        if name in raw:
            expect(name, (str,))
    if not all(isinstance(v, str) for v in values.get("versions", {}).values()):
        raise BundleError(f"{source}: bundle metadata field 'versions' has the wrong type")
    if not isinstance(values.get("train_config", {}).get("history", []), list):
        raise BundleError(f"{source}: bundle metadata field 'train_config' has a malformed history")
    for name, high in (("clean_accuracy", 1.0), ("train_seconds", MAX_TRAIN_SECONDS)):
        if raw.get(name) is not None:
            bounded(name, expect(name, (int, float)), 0.0, high)
    return BundleMeta(**values)


def _json_problem(value: Any) -> str | None:
    """What makes a metadata value unsafe to show or use: a non-finite number, a control character, nesting past 32."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_JSON_DEPTH:
            return f"nests deeper than {_MAX_JSON_DEPTH} levels"
        if isinstance(item, float) and not math.isfinite(item):
            return f"holds a non-finite number ({item})"
        if isinstance(item, str) and not _CONTROL.isdisjoint(item):
            return "holds a control character (a line break?)"
        if isinstance(item, dict):
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None


@dataclass
class ModelBundle:
    """A loaded, verified checkpoint."""

    model: Classifier
    meta: BundleMeta
    defense: Defense
    content_hash: str
    path: Path | None = None


def _first_non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None."""
    for name, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def save_bundle(path: str | Path, model: Classifier, meta: BundleMeta) -> str:
    """Write the bundle atomically; returns the content hash. A model with NaN or inf weights is refused."""
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    bad = _first_non_finite(state)
    if bad is not None:
        raise BundleError(f"{path}: refused to save: weight '{bad}' holds NaN or inf values (training diverged?)")
    content_hash = state_dict_hash(state, meta.identity())
    payload = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "meta": meta.to_json(),
        "state_dict": state,
        "content_hash": content_hash,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return content_hash


def _read_payload(path: Path, data: bytes | None = None) -> dict[str, Any]:
    if data is None and not path.exists():
        raise BundleError(f"{path}: no such file")
    if data is None and not path.is_file():
        raise BundleError(f"{path}: not a file")
    payload = load_weights_only(
        path, data, after_global="not a robench bundle", refused=_UNREADABLE, unreadable=_UNREADABLE
    )
    if not isinstance(payload, dict) or payload.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: not a robench bundle (a plain torch checkpoint? train one with 'robench train')")
    if payload.get("version") != BUNDLE_VERSION:
        raise BundleError(
            f"{path}: bundle format version {payload.get('version')!r} is not supported (expected {BUNDLE_VERSION})"
        )
    for key, kind in (("meta", str), ("state_dict", dict), ("content_hash", str)):
        if not isinstance(payload.get(key), kind):
            raise BundleError(f"{path}: bundle field '{key}' is missing or malformed")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["state_dict"].items()):
        raise BundleError(f"{path}: bundle weights are malformed")
    return payload


def _check_backbone_shapes(
    planned: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor], arch: str, path: Path
) -> None:
    """Refuse weights whose backbone tensors differ from the planned ones (before the real build allocates)."""
    actual = {k: tuple(v.shape) for k, v in state.items() if k.startswith("backbone.")}
    for key in sorted(set(planned) | set(actual)):
        if key not in actual:
            problem = f"missing {key}"
        elif key not in planned:
            problem = f"unexpected {key}"
        elif actual[key] != planned[key]:
            problem = f"{key} has shape {list(actual[key])} in the file but {list(planned[key])} in the architecture"
        else:
            continue
        raise BundleError(f"{path}: the weights do not fit architecture '{arch}': {problem}")


def load_bundle(path: str | Path, device: str | torch.device = "cpu", data: bytes | None = None) -> ModelBundle:
    """Load, validate and rebuild a bundle; every failure is a one-line :class:`BundleError`.

    ``data``: the file's bytes, already read (a Ray worker gets them from the object store and may
    not see the file, :mod:`robench.runs.ray_backend`); ``path`` then only names it in messages,
    and the bundle has no path, so nothing (a detector cache) is written next to it. The same
    ``weights_only`` load and checks apply.
    """
    if not isinstance(path, (str, Path)):
        raise BundleError(f"a bundle path must be a str or Path, got {type(path).__name__}")
    path = Path(path)
    payload = _read_payload(path, data)
    meta = BundleMeta.from_json(payload["meta"], str(path))
    state = payload["state_dict"]
    bad = _first_non_finite(state)
    if bad is not None:
        raise BundleError(f"{path}: refused: weight '{bad}' holds NaN or inf values")
    if meta.arch == IMPORTED_ARCH:
        return _load_imported(path, payload, meta, state, device, keep_path=data is None)
    try:
        defense_cls = DEFENSES.get(meta.defense)
        defense = defense_cls.from_params(meta.defense_params)
        plan = plan_backbone(meta.arch, meta.arch_kwargs, meta.input_shape, meta.num_classes)
        if plan is not None:  # the weights must fit before the real build allocates anything
            _check_backbone_shapes(plan.shapes, state, meta.arch, path)
        model, resolved = build_classifier(
            meta.arch, meta.arch_kwargs, meta.input_shape, meta.mean, meta.std, defense, meta.num_classes
        )
    except BundleError:
        raise
    except RobenchError as exc:
        raise BundleError(f"{path}: {exc}") from None
    if resolved != meta.arch_kwargs:
        raise BundleError(f"{path}: architecture kwargs {meta.arch_kwargs} are incomplete for this robench version")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc).splitlines()[0])
        raise BundleError(f"{path}: the weights do not fit architecture '{meta.arch}': {first}") from None
    actual = state_dict_hash(state, meta.identity())
    if actual != payload["content_hash"]:
        raise BundleError(f"{path}: content hash mismatch (the file is corrupt or was edited)")
    if model.feature_dim != meta.feature_dim:
        raise BundleError(f"{path}: feature dimension {model.feature_dim} differs from the recorded {meta.feature_dim}")
    model.eval().to(device)
    return ModelBundle(
        model=model, meta=meta, defense=defense, content_hash=actual, path=path if data is None else None
    )


def _load_imported(
    path: Path,
    payload: dict[str, Any],
    meta: BundleMeta,
    state: dict[str, torch.Tensor],
    device: str | torch.device,
    keep_path: bool = True,
) -> ModelBundle:
    """An imported model's bundle (``robench import``): the content hash first (it covers the program's bytes), then
    the program is checked before torch deserializes it and rebuilt (:mod:`robench.checkpoints.imported.loading`)."""
    from robench.checkpoints.imported.loading import rebuild

    actual = state_dict_hash(state, meta.identity())
    if actual != payload["content_hash"]:
        raise BundleError(f"{path}: content hash mismatch (the file is corrupt or was edited)")
    try:
        defense = DEFENSES.get(meta.defense).from_params(meta.defense_params)
        model = rebuild(meta, state, defense, path)
    except BundleError:
        raise
    except RobenchError as exc:
        raise BundleError(f"{path}: {exc}") from None
    model.eval().to(device)
    return ModelBundle(model=model, meta=meta, defense=defense, content_hash=actual, path=path if keep_path else None)
