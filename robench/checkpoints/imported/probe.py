"""One probe pass through a user's model: is it a logit classifier, what is its feature layer, where is its head.

The probe batch is drawn uniformly in the declared value range (seeded, so an import is
reproducible) and normalized as the bundle will normalize it. Forward hooks record the feature
layer's output z and the order the modules ran in; the last module that holds weights of its own is
the candidate head, which :func:`fit_head` tries to copy into a robench head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robench.core.errors import ConfigError
from robench.core.models.base import MAX_UNITS
from robench.core.registry import did_you_mean
from robench.defenses import Defense
from robench.defenses.base import LinearHead

PROBE_ROWS = 4
# Output rows that are non-negative and sum to 1 within this are probabilities, not logits.
PROBABILITY_TOLERANCE = 1e-4


@dataclass
class ProbeResult:
    """What one pass showed: the output logits, the feature layer's output z, and the last weighted module."""

    logits: Tensor
    z: Tensor
    last_name: str | None
    last_module: nn.Module | None


def probe_inputs(
    input_shape: tuple[int, int, int], value_range: tuple[float, float], rows: int = PROBE_ROWS, seed: int = 0
) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    low, high = value_range
    return low + (high - low) * torch.rand(rows, *input_shape, generator=generator)


def _owns_weights(module: nn.Module) -> bool:
    return any(t is not None for t in module._parameters.values()) or any(
        t is not None for t in module._buffers.values()
    )


def _describe(output: object) -> str:
    if isinstance(output, Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    return f"a {type(output).__name__}"


def probe(module: nn.Module, layer: str, x: Tensor, num_classes: int) -> ProbeResult:
    """Run ``module`` on the normalized batch ``x``; every way it is not a logit classifier is a one-line
    ConfigError."""
    names = [name for name, _ in module.named_modules() if name]
    if layer not in names:
        hint = did_you_mean(layer, names)
        listed = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        flat = (
            " (a TorchScript program keeps only its modules with weights)"
            if getattr(module, "marked_module_outputs", False)
            else ""
        )
        raise ConfigError(f"the model has no module '{layer}' to take features from{hint}; its modules{flat}: {listed}")
    target = module.get_submodule(layer)
    captured: list[object] = []
    order: list[tuple[str, nn.Module]] = []
    handles = [target.register_forward_hook(lambda mod, args, out: captured.append(out))]
    for name, sub in module.named_modules():
        if name:
            handles.append(sub.register_forward_hook(lambda mod, args, out, name=name: order.append((name, mod))))
    try:
        with torch.no_grad():
            output = module(x)
    except Exception as exc:  # noqa: BLE001 - the model does not run on the declared inputs
        text = str(exc).strip()
        first = text.splitlines()[0][:200] if text else type(exc).__name__
        raise ConfigError(
            f"the model fails on inputs of shape {tuple(x.shape[1:])} (check --input-shape / --dataset): "
            f"{type(exc).__name__}: {first}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    if isinstance(output, (tuple, list, dict)) or not isinstance(output, Tensor):
        raise ConfigError(
            f"the model returns {_describe(output)}, not a logits tensor: "
            "wrap your model so forward returns the logits (N x classes) only"
        )
    if output.dim() != 2 or output.shape[0] != x.shape[0]:
        raise ConfigError(
            f"the model returns {_describe(output)} for {x.shape[0]} inputs, "
            f"not logits of shape ({x.shape[0]}, classes): wrap your model so forward returns them"
        )
    if output.shape[1] != num_classes:
        raise ConfigError(
            f"the model gives {output.shape[1]} outputs per input but {num_classes} classes were declared"
        )
    if not output.is_floating_point() or not bool(torch.isfinite(output).all()):
        raise ConfigError("the model's outputs are not finite floating-point logits")
    rows = output.double().sum(1)
    if bool((output >= 0).all()) and bool(((rows - 1).abs() <= PROBABILITY_TOLERANCE).all()):
        raise ConfigError(
            "the model outputs probabilities (rows are non-negative and sum to 1): "
            "return logits, not softmax (drop the final softmax)"
        )
    if not captured:
        raise ConfigError(f"module '{layer}' did not run in the forward pass, so it gives no features")
    if len(captured) > 1:
        raise ConfigError(
            f"module '{layer}' ran {len(captured)} times in one forward pass; name a module that runs once"
        )
    z = captured[0]
    if not isinstance(z, Tensor):
        raise ConfigError(f"module '{layer}' outputs {_describe(z)}; the feature layer must output one tensor")
    if z.dim() != 2 or z.shape[0] != x.shape[0]:
        raise ConfigError(
            f"module '{layer}' outputs shape {tuple(z.shape)}; the kernel density needs flat features (N x d): "
            "name a layer after the pooling / flatten"
        )
    if not 1 <= z.shape[1] <= MAX_UNITS:
        raise ConfigError(f"module '{layer}' has {z.shape[1]} features, more than robench handles ({MAX_UNITS})")
    if not z.is_floating_point() or not bool(torch.isfinite(z).all()):
        raise ConfigError(f"module '{layer}' outputs non-finite features")
    last = next(((name, mod) for name, mod in reversed(order) if _owns_weights(mod)), (None, None))
    return ProbeResult(logits=output.detach(), z=z.detach(), last_name=last[0], last_module=last[1])


def close(a: Tensor, b: Tensor) -> bool:
    """Equal up to float rounding relative to the logits' scale."""
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-4 * scale))


def fit_head(result: ProbeResult, defense: Defense, layer: str) -> tuple[nn.Module | None, bool]:
    """A robench head holding the weights of the model's last layer, if that layer computes the logits from z.

    Returns (head, has_bias) or (None, True) when the last layer is not the defense's head applied to the
    feature layer's output (then the model has no separable head). The check is numerical: the head
    built by the defense, with the last layer's tensors loaded strictly, must reproduce the logits on the
    probe batch from z alone.
    """
    if result.last_module is None or result.last_name is None or result.last_name == layer:
        return None, True
    state = {k: v.detach().clone() for k, v in result.last_module.state_dict().items()}
    d, k = result.z.shape[1], result.logits.shape[1]
    has_bias = "bias" in state
    head = LinearHead(d, k, bias=False) if defense.name == "softmax" and not has_bias else defense.make_head(d, k)
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError:
        return None, True
    head.eval()
    with torch.no_grad():
        try:
            reproduced = head(result.z)
        except RuntimeError:
            return None, True
    return (head, has_bias) if close(reproduced, result.logits) else (None, True)
