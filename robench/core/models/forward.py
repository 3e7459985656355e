"""One forward pass of a :class:`~robench.core.models.Classifier`: inputs, features z and test-time logits.

Computed once and shared by the attacks (which descend on it) and the
detectors (which score it); it carries the autograd graph when the pass had one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class Forward:
    """One forward pass shared by attacks and detectors: inputs ``x``, features ``z``, test-time ``logits``."""

    x: Tensor
    z: Tensor
    logits: Tensor

    @classmethod
    def of(cls, model: Any, x: Tensor) -> Forward:
        """``model``'s pass on ``x``: a :class:`~robench.core.models.Classifier`, or any module with ``features`` and
        ``head``."""
        forward_pass = getattr(model, "forward_pass", None)
        if forward_pass is not None:  # a Classifier (an imported one may compute z and the logits in one pass)
            return forward_pass(x)
        z = model.features(x)
        return cls(x=x, z=z, logits=model.head(z))

    @property
    def predicted(self) -> Tensor:
        return self.logits.argmax(1)


__all__ = ["Forward"]
