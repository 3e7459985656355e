"""The bare loops a benchmark measures robench's attacks against: the fastest any attack can go on a model.

``gradient_loop`` is the plain iterative gradient-sign loop, with nothing of an attack's
bookkeeping (no projection onto an eps-ball, no per-sample masks, no best-iterate tracking)::

    x.requires_grad_(); logits = model(x); loss = cross_entropy(logits, y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x); x = (x - step * g.sign()).clamp(low, high)

One iteration is one forward and one backward pass per image: the limit of any gradient
attack (FGSM, BIM, PGD, MIM, C&W) for the same model, batch and number of steps.

``forward_loop`` is the limit of a gradient-free attack (SPSA): ``copies`` forward passes per
image and step (2 x samples for SPSA's central differences), in chunks of at most ``max_batch``
inputs, without gradients.

``precision_context`` is the ``torch.autocast`` region a benchmark runs a loop in for
``bf16`` / ``fp16``, and nothing for ``fp32``.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def precision_context(device: torch.device, precision: str) -> Iterator[None]:
    """``torch.autocast(device.type, dtype)`` for bf16 / fp16; no autocast for fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def gradient_loop(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    steps: int,
    bounds: tuple[float, float] = (0.0, 1.0),
    step: float = 0.01,
    precision: str = "fp32",
) -> Tensor:
    """``steps`` plain forward + input-gradient sign steps on the batch (see the module docstring)."""
    low, high = bounds
    device = x.device
    x = x.detach().clone()
    for _ in range(steps):
        x.requires_grad_(True)
        with precision_context(device, precision):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x = (x - step * g.sign()).clamp(low, high)
    return x.detach()


@torch.no_grad()
def forward_loop(
    model: nn.Module,
    x: Tensor,
    steps: int,
    copies: int,
    max_batch: int = 4096,
    precision: str = "fp32",
) -> Tensor:
    """``steps`` x ``copies`` forward passes per image, ``max_batch`` inputs at most per forward; returns the last
    logits."""
    device = x.device
    n = x.shape[0]
    per_forward = max(1, max_batch // max(copies, 1)) if copies <= max_batch else 1
    logits = x.new_zeros(0)
    for _ in range(steps):
        for start in range(0, n, per_forward):
            chunk = x[start : start + per_forward]
            if copies <= max_batch:
                tiled = chunk.repeat(copies, *([1] * (x.ndim - 1)))
                with precision_context(device, precision):
                    logits = model(tiled)
            else:  # more copies than fit in one forward: one image at a time, copies in chunks
                for done in range(0, copies, max_batch):
                    tiled = chunk.expand(min(max_batch, copies - done), *x.shape[1:])
                    with precision_context(device, precision):
                        logits = model(tiled)
    return logits


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """The median wall time of ``repeats`` calls of ``fn`` (synchronising CUDA around each) and the last result."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        synchronize(device)
        tic = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times), out


class GradForwardCounter:
    """Counts the images that go through ``model`` with gradients enabled (one per forward + backward step).

    For a peer whose step count is not fixed (torchattacks' CW stops early when its loss stalls).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.images = 0
        self._handle: Any = None

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if torch.is_grad_enabled() and inputs and isinstance(inputs[0], Tensor):
            self.images += int(inputs[0].shape[0])

    def __enter__(self) -> GradForwardCounter:
        self.images = 0
        self._handle = self.model.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
