"""How a run executes on its device: memory format, opt-in ``torch.compile``, counted model passes, OOM retries.

None of these changes what a run computes beyond float rounding, so none enters a part's key
(precision does: :mod:`robench.core.precision`).

- ``channels_last`` (``auto``: on CUDA, and on a CPU at a lower precision): convolution models run
  faster on GPUs with NHWC tensors (cuDNN's native layout for tensor cores), and on a CPU so do
  oneDNN's bf16 convolutions; fp32 on a CPU gains little for the small models here, so ``auto``
  leaves fp32 CPU runs contiguous (:func:`use_channels_last`).
- ``compile``: ``torch.compile`` of the model's backbone (in place, ``nn.Module.compile``, so
  its parameters and state-dict keys stay the same), with dynamic shapes because the attacks'
  active batches shrink. A probe forward + backward pass runs at once; if compiling fails (no
  compiler, an unsupported op) the model stays eager and the run says so once.
- :class:`PassCounter`: the images forwarded through a model (a forward pre-hook), the
  "image-steps" the cascade saves and run.json reports per attack.
- :func:`is_out_of_memory`: a CUDA out-of-memory error, which the runner answers by halving the
  batch (:mod:`robench.runs.runner`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

CHANNELS_LAST = ("auto", "on", "off")


def use_channels_last(setting: str, device: torch.device, precision: str = "fp32") -> bool:
    """Whether a run with ``channels_last = setting`` on ``device`` at ``precision`` uses the NHWC memory format.

    ``auto``: on CUDA, and on a CPU at bf16 / fp16, where oneDNN's low-precision convolutions want
    NHWC (measured on this machine's CPU, the bundled CNN's forward + backward loop: bf16 1.4x
    faster than fp32 contiguous, bf16 channels-last 2.4x; fp32 channels-last only 1.03x).
    """
    return setting == "on" or (setting == "auto" and (device.type == "cuda" or precision != "fp32"))


def to_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    """``model`` (in place) in channels-last or contiguous memory format."""
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def as_input(x: Tensor, channels_last: bool) -> Tensor:
    """A 4-d batch in the run's memory format (other shapes unchanged)."""
    if channels_last and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def compiled_part(model: nn.Module) -> nn.Module:
    """The module ``compile`` compiles: the backbone of a robench classifier, else the model."""
    backbone = getattr(model, "backbone", None)
    return backbone if isinstance(backbone, nn.Module) else model


def try_compile(model: nn.Module, example: Tensor, echo: Callable[[str], None]) -> bool:
    """Compile ``model``'s backbone in place and probe it on ``example``; on any failure, stay eager (True if
    compiled)."""
    part = compiled_part(model)
    if getattr(part, "_compiled_call_impl", None) is not None:
        return True
    try:
        part.compile(dynamic=True)
        probe = example[:2].detach().clone().requires_grad_(True)
        was_training = model.training
        model.eval()
        try:
            out = model(probe)
            torch.autograd.grad(out.float().sum(), probe)
        finally:
            model.train(was_training)
        return True
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager
        part._compiled_call_impl = None
        echo(
            "note: torch.compile failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no message'}); running eager"
        )
        return False


class PassCounter:
    """Counts the images forwarded through ``model`` while active (``with PassCounter(model) as c: ...; c.images``)."""

    def __init__(self, model: nn.Module) -> None:
        self.module = compiled_part(model)
        self.images = 0
        self._handle = None

    def _hook(self, module: nn.Module, inputs: tuple) -> None:
        if inputs and isinstance(inputs[0], Tensor) and inputs[0].ndim > 0:
            self.images += int(inputs[0].shape[0])

    def __enter__(self) -> PassCounter:
        self._handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a CUDA (or other accelerator) out-of-memory error."""
    kind = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (kind is not None and isinstance(exc, kind)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc)
    )
