"""Batched forward passes without gradients."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor, device: torch.device, batch_size: int = 500) -> Tensor:
    """Logits for ``x`` (on CPU), computed in batches on ``device`` in eval mode."""
    was_training = model.training
    model.eval()
    try:
        outputs = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)


def accuracy(model: nn.Module, x: Tensor, y: Tensor, device: torch.device, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    if y.numel() == 0:
        return float("nan")
    return float((predict_logits(model, x, device, batch_size).argmax(1) == y).float().mean())
