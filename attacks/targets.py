"""Target-class selection for targeted attacks, chosen explicitly by the caller.

Modes:

- ``none``: untargeted, returns ``None``.
- ``random``: a class drawn uniformly from the K - 1 wrong classes of each
  sample (paper 001, Sec. 4.4: "target classes are chosen randomly from the
  classes other than the ground-truth class"), batched, from the given
  ``torch.Generator`` only.
- ``least-likely``: the class with the lowest clean logit other than the true
  label (ILCM, Kurakin et al. 2017). The true label is excluded so a
  misclassified sample whose label is already the least likely still gets a
  wrong-class target.

Selecting targets here, once, and passing them to every attack avoids the trap
of attacks that ignore the requested mode (torchattacks' SPSA never calls
``get_target_label``, so its random and least-likely target modes silently
steer towards whatever labels are passed in, usually the true ones).
"""

from __future__ import annotations

import torch
from torch import Tensor

from robench.core.errors import ConfigError
from robench.core.registry import did_you_mean

TARGET_MODES = ("none", "random", "least-likely")


def choose_targets(mode: str, logits_clean: Tensor, y: Tensor, generator: torch.Generator) -> Tensor | None:
    """Targets (N,) on ``y``'s device for ``mode`` (one of TARGET_MODES), or None for ``none``.

    ``logits_clean`` are the model's logits on the clean inputs (N x K); only
    ``least-likely`` reads their values, ``random`` reads K. Every returned
    target differs from its label.
    """
    if mode not in TARGET_MODES:
        raise ConfigError(
            f"unknown target mode '{mode}'{did_you_mean(str(mode), list(TARGET_MODES))}; "
            f"known: {', '.join(TARGET_MODES)}"
        )
    if mode == "none":
        return None
    if logits_clean.ndim != 2 or y.ndim != 1 or logits_clean.shape[0] != y.shape[0]:
        raise ConfigError(
            "choose_targets needs logits of shape N x K and labels of shape N, "
            f"got {tuple(logits_clean.shape)} and {tuple(y.shape)}"
        )
    num_classes = int(logits_clean.shape[1])
    if num_classes < 2:
        raise ConfigError(f"targeted attacks need at least 2 classes, got {num_classes}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ConfigError(f"labels must lie in 0..{num_classes - 1}")
    if mode == "random":
        # y + U{1..K-1} mod K is uniform over the K - 1 classes other than y.
        offset = torch.randint(1, num_classes, tuple(y.shape), generator=generator, device=generator.device)
        return (y + offset.to(y.device)) % num_classes
    masked = logits_clean.detach().clone()
    masked.scatter_(1, y[:, None].to(masked.device), float("inf"))
    return masked.argmin(1).to(y.device)


__all__ = ["TARGET_MODES", "choose_targets"]
