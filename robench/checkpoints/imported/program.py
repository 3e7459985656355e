"""An imported model at run time: an exported program behind robench's normalize -> backbone -> head shape.

The program (a ``torch.export`` graph of aten operators, checked by :mod:`robench.checkpoints.imported.archive`)
maps normalized inputs to the features z of the user's feature layer (``head`` = "separate": the model's
last layer, applied to z, became a robench head) or to (z, logits) in one pass (``head`` = "joint": the
feature layer is elsewhere, and the logits come from the program itself).

Its weights are ordinary robench state (``backbone.weights.<the program's own names>``), so the bundle
hashes, checks for NaN and moves them to a device like any other model's; the archive stored in
``backbone.program`` (a uint8 tensor) holds the graph with its weights stripped to shapes. The program
runs through :func:`torch.func.functional_call` with those weights.

MC dropout (the BU detector): an exported program freezes its dropout layers (``ep.module().train()``
raises). Its dropout nodes are ``aten.dropout(x, p, train=False)``; a second copy of the graph with
``train=True`` samples a new mask per element on every call from the global RNG (which the BU detector
seeds under ``torch.random.fork_rng``). :class:`MCDropoutSwitch`, a placeholder dropout module at the
program's input, selects that copy while it is in train mode, so the unmodified BU detector (which puts
the model's dropout modules in train mode, and stacks the inputs at the first one) drives it.
"""

from __future__ import annotations

import copy
import io
import math
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from robench.core.errors import BundleError, ConfigError
from robench.core.models.base import Classifier, Normalize
from robench.core.models.forward import Forward

IMPORTED_ARCH = "imported"
SOURCE_KINDS = ("export", "torchscript", "factory", "timm")
HEAD_KINDS = ("separate", "joint")
PROGRAM_KEY = "backbone.program"
WEIGHTS_PREFIX = "backbone.weights."


def _dropout_ops() -> tuple[Any, ...]:
    aten = torch.ops.aten
    return (
        aten.dropout.default,
        aten.feature_dropout.default,
        aten.alpha_dropout.default,
        aten.feature_alpha_dropout.default,
    )


def enable_dropout(gm: torch.fx.GraphModule) -> float:
    """Turn ``gm``'s dropout nodes to train mode in place (they sample on every call); returns their largest p
    (0: none)."""
    largest = 0.0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _dropout_ops():
            continue
        args = list(node.args)
        p = args[1] if len(args) > 1 else node.kwargs.get("p", 0.5)
        if not isinstance(p, (int, float)) or not p > 0:
            continue
        if len(args) > 2:
            args[2] = True
            node.args = tuple(args)
        else:
            node.kwargs = {**node.kwargs, "train": True}
        largest = max(largest, float(p))
    gm.recompile()
    return largest


def strip_weights(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """A shallow copy of ``ep`` whose state dict holds shapes only (meta tensors) and no example inputs."""
    stripped = copy.copy(ep)
    stripped._state_dict = {
        name: nn.Parameter(torch.empty_like(t, device="meta"), requires_grad=t.requires_grad)
        if isinstance(t, nn.Parameter)
        else torch.empty_like(t, device="meta")
        for name, t in ep.state_dict.items()
    }
    stripped._example_inputs = None
    return stripped


def program_bytes(ep: torch.export.ExportedProgram) -> Tensor:
    """``ep`` without its weights, saved with ``torch.export.save``, as a uint8 tensor (for the bundle's state)."""
    buffer = io.BytesIO()
    torch.export.save(strip_weights(ep), buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).clone()


class WeightTree(nn.Module):
    """The program's parameters and buffers under its own dotted names (``conv.weight``: submodule conv, tensor
    weight)."""

    def __init__(self, tensors: Mapping[str, Tensor], parameters: set[str]) -> None:
        super().__init__()
        for name, tensor in tensors.items():
            *path, leaf = name.split(".")
            module: nn.Module = self
            try:
                for part in path:
                    child = module._modules.get(part)
                    if child is None:
                        child = nn.Module()
                        module.add_module(part, child)
                    module = child
                if name in parameters:
                    module.register_parameter(leaf, nn.Parameter(tensor, requires_grad=tensor.is_floating_point()))
                else:
                    module.register_buffer(leaf, tensor)
            except (KeyError, TypeError, AttributeError) as exc:
                raise BundleError(f"the program has a weight name robench cannot hold ('{name}': {exc})") from None

    def tensors(self) -> dict[str, Tensor]:
        return {**dict(self.named_parameters()), **dict(self.named_buffers())}


class MCDropoutSwitch(nn.Dropout):
    """A placeholder dropout module (identity): in train mode its backbone runs the program with dropout sampling.

    It is an ``nn.Dropout`` with the program's largest dropout rate so that the BU detector finds it
    (``robench.detectors.bu.dropout_layers``) and switches it on; it never drops anything itself.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x


class ImportedBackbone(nn.Module):
    """Normalized x -> z ("separate") or (z, logits) ("joint") through the exported program."""

    def __init__(
        self, program: Tensor, ep: torch.export.ExportedProgram, weights: WeightTree, feature_dim: int, joint: bool
    ) -> None:
        super().__init__()
        self.register_buffer("program", program)
        self.weights = weights
        self.feature_dim = int(feature_dim)
        self.joint = bool(joint)
        owned = set(weights.tensors())
        mc = ep.module()
        self.mc_rate = enable_dropout(mc)
        # Not submodules (object.__setattr__): an exported GraphModule refuses train() / eval(), and its weights
        # are robench's (self.weights), passed on each call; _apply moves what the programs keep themselves.
        object.__setattr__(self, "_eval_program", self._detached(ep.module(), owned))
        object.__setattr__(self, "_mc_program", self._detached(mc, owned) if self.mc_rate > 0 else None)
        if self._mc_program is not None:
            self.mc_dropout = MCDropoutSwitch(self.mc_rate)

    @staticmethod
    def _detached(gm: torch.fx.GraphModule, owned: set[str]) -> torch.fx.GraphModule:
        """``gm`` with the weights robench holds removed (they are passed on each call); its constants stay."""
        missing = [
            name for name in owned if name not in dict(gm.named_parameters()) and name not in dict(gm.named_buffers())
        ]
        if missing:
            raise BundleError(f"the program has no weight '{missing[0]}'")
        for name in owned:
            *path, leaf = name.split(".")
            module = gm.get_submodule(".".join(path)) if path else gm
            if leaf in module._parameters:
                module._parameters[leaf] = None
            else:
                module._buffers[leaf] = None
        return gm

    def programs(self) -> list[torch.fx.GraphModule]:
        return [p for p in (self._eval_program, self._mc_program) if p is not None]

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        """Device, dtype and memory-format moves reach the programs' own constants too (they are not submodules)."""
        super()._apply(fn, recurse)
        for gm in self.programs():
            for module in gm.modules():
                for key, buffer in list(module._buffers.items()):
                    if buffer is not None:
                        module._buffers[key] = fn(buffer)
                for key, value in list(vars(module).items()):
                    if isinstance(value, Tensor) and not isinstance(value, nn.Parameter):
                        module.__dict__[key] = fn(value)
        return self

    def forward(self, h: Tensor) -> Any:
        switch = getattr(self, "mc_dropout", None)
        sampling = switch is not None and switch.training
        if switch is not None:
            h = switch(h)  # the BU detector's hook may stack the inputs here
        gm = self._mc_program if sampling else self._eval_program
        return torch.func.functional_call(gm, self.weights.tensors(), (h,), strict=False, tie_weights=False)


class PassHead(nn.Module):
    """The head of a model without a separable one: ``head(z)`` is the logits of the pass that produced z.

    A softmax model's adaptive objectives are functions of its logits only (cross-entropy and its
    margin form), so they need no separate head; this one hands back the logits the same pass
    computed for this very z (matched by identity, held by weak references). Any other z is refused.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self._num_classes = int(num_classes)
        self._recent: deque[tuple[weakref.ref, weakref.ref]] = deque(maxlen=64)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def __getstate__(self) -> dict[str, Any]:  # copies and pickles start without the weak references
        state = dict(self.__dict__)
        state["_recent"] = deque(maxlen=64)
        return state

    def remember(self, z: Tensor, logits: Tensor) -> None:
        self._recent.append((weakref.ref(z), weakref.ref(logits)))

    def forward(self, z: Tensor) -> Tensor:
        for z_ref, logits_ref in reversed(self._recent):
            if z_ref() is z:
                logits = logits_ref()
                if logits is not None:
                    return logits
        raise ConfigError(
            "this imported model has no separable head (its feature layer is not the input of its last layer): "
            "its logits come only with a forward pass; objectives other than ce, margin and softmax's adaptive ones do "
            "not apply"
        )


def _up_cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t.to(dtype) if t.is_floating_point() and t.dtype != dtype and dtype.is_floating_point else t


class ImportedClassifier(Classifier):
    """A :class:`Classifier` over an :class:`ImportedBackbone`; with a joint program one pass gives z and the logits."""

    def __init__(self, normalize: Normalize, backbone: ImportedBackbone, head: nn.Module, feature_layer: str) -> None:
        super().__init__(normalize, backbone, head)
        self.feature_layer = feature_layer

    @property
    def separable_head(self) -> bool:  # type: ignore[override]
        return not self.backbone.joint

    def features(self, x: Tensor) -> Tensor:
        out = self.backbone(self.normalize(x))
        return out[0] if self.backbone.joint else out

    def forward_pass(self, x: Tensor) -> Forward:
        if not self.backbone.joint:
            return super().forward_pass(x)
        z, logits = self.backbone(self.normalize(x))
        # like AttackTarget.forward's low-precision branch: what leaves the backbone is up-cast to x's dtype
        z, logits = _up_cast(z, x.dtype), _up_cast(logits, x.dtype)
        self.head.remember(z, logits)
        return Forward(x=x, z=z, logits=logits)

    def forward(self, x: Tensor) -> Tensor:
        if not self.backbone.joint:
            return super().forward(x)
        return self.backbone(self.normalize(x))[1]


def weight_specs(ep: torch.export.ExportedProgram) -> dict[str, tuple[tuple[int, ...], torch.dtype, bool]]:
    """Name -> (shape, dtype, is a parameter) of the program's weights (its state dict; meta tensors are fine)."""
    return {name: (tuple(t.shape), t.dtype, isinstance(t, nn.Parameter)) for name, t in ep.state_dict.items()}


def check_weights(
    specs: Mapping[str, tuple[tuple[int, ...], torch.dtype, bool]], weights: Mapping[str, Tensor], source: str
) -> None:
    """Refuse weights that are not exactly the program's (names, shapes, dtypes), in one line."""
    for name in sorted(set(specs) | set(weights)):
        if name not in weights:
            problem = f"missing {name}"
        elif name not in specs:
            problem = f"unexpected {name}"
        elif tuple(weights[name].shape) != specs[name][0]:
            problem = (
                f"{name} has shape {list(weights[name].shape)} in the file but {list(specs[name][0])} in the program"
            )
        elif weights[name].dtype != specs[name][1]:
            problem = f"{name} is {weights[name].dtype} in the file but {specs[name][1]} in the program"
        else:
            continue
        raise BundleError(f"{source}: the weights do not fit the exported program: {problem}")


def check_program_signature(ep: torch.export.ExportedProgram, joint: bool, source: str) -> None:
    """The program robench wrote: one tensor in, z (or z and logits) out, no mutated state, no custom objects."""
    signature = ep.graph_signature
    outputs = 2 if joint else 1
    if len(signature.user_inputs) != 1 or len(signature.user_outputs) != outputs:
        raise BundleError(
            f"{source}: the exported program has {len(signature.user_inputs)} inputs and {len(signature.user_outputs)} "
            f"outputs, not 1 and {outputs}"
        )
    if signature.buffers_to_mutate or signature.user_inputs_to_mutate:
        raise BundleError(f"{source}: the exported program mutates its state; robench runs only pure programs")
    if any(spec.kind.name == "CUSTOM_OBJ" for spec in signature.input_specs):
        raise BundleError(f"{source}: the exported program uses a custom (torchbind) object")


def assemble(
    program: Tensor,
    ep: torch.export.ExportedProgram,
    weights: Mapping[str, Tensor],
    *,
    feature_layer: str,
    feature_dim: int,
    joint: bool,
    head: nn.Module,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    source: str,
) -> ImportedClassifier:
    """Put an :class:`ImportedClassifier` together from a (checked) program, its weights and a head."""
    specs = weight_specs(ep)
    check_program_signature(ep, joint, source)
    check_weights(specs, weights, source)
    tree = WeightTree(dict(weights), {name for name, (_, _, is_param) in specs.items() if is_param})
    backbone = ImportedBackbone(program, ep, tree, feature_dim, joint)
    return ImportedClassifier(Normalize(tuple(mean), tuple(std)), backbone, head, feature_layer)


def check_shapes(model: ImportedClassifier, input_shape: tuple[int, int, int], num_classes: int, source: str) -> None:
    """One pass on a batch of two: z is (2, feature_dim) and the logits (2, K), or a one-line BundleError."""
    x = torch.zeros(2, *input_shape)
    try:
        with torch.no_grad():
            forward = model.eval().forward_pass(x)
    except Exception as exc:  # noqa: BLE001 - a program that does not run on its declared input shape
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BundleError(
            f"{source}: the exported program does not run on inputs of shape {tuple(input_shape)} ({first})"
        ) from None
    if tuple(forward.z.shape) != (2, model.feature_dim):
        raise BundleError(
            f"{source}: the program's features have shape {tuple(forward.z.shape[1:])}, not the recorded "
            f"({model.feature_dim},)"
        )
    if tuple(forward.logits.shape) != (2, num_classes):
        raise BundleError(
            f"{source}: the program gives {tuple(forward.logits.shape[1:])} logits, not the recorded ({num_classes},)"
        )


def total_size(specs: Mapping[str, tuple[tuple[int, ...], torch.dtype, bool]]) -> int:
    return sum(math.prod(shape) for shape, _, _ in specs.values())
