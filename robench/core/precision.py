"""Numeric precision of the attack loops: fp32, or bf16 / fp16 autocast with every judgement in fp32.

``--precision bf16`` (or ``fp16``) runs an attack's ``run`` under ``torch.autocast`` on the
model's device: convolutions and matrix products in the lower precision, reductions and losses
in fp32 as autocast decides. The attack's output is then judged in fp32 with autocast off
(:meth:`robench.attacks.base.Attack.__call__`): the model's prediction, the attack's own
criterion (C&W's margin, C&W-wb's f_2), the distortions and every detector score. So a lower
precision can make an attack weaker or stronger in what it finds, but never report a success
that fp32 does not confirm.

fp16 has a narrower exponent than bf16: input gradients of small losses can underflow to zero
(no loss scaling is applied), which makes Adam-based attacks stall; prefer bf16, which this
machine's CPU (AVX-512 BF16) and recent GPUs run natively.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from robench.core.errors import ConfigError
from robench.core.registry import did_you_mean

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FP32 = "fp32"


def check_precision(name: object) -> str:
    """``name`` if it is one of :data:`PRECISIONS`; a one-line error otherwise."""
    if not isinstance(name, str) or name not in PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}{did_you_mean(str(name), list(PRECISIONS))}"
        )
    return name


@contextlib.contextmanager
def lowered(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast to ``precision`` on ``device`` (nothing for fp32)."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """fp32 whatever autocast region the caller is in: for judging an attack's output."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield
