"""Bayesian uncertainty (BU) from Monte-Carlo dropout (Feinman et al. 2017, Sec. 3.2; Gal & Ghahramani 2016).

With T stochastic passes (dropout on, everything else in eval mode) giving
class probabilities p_t, the uncertainty is

    U(x) = (1/T) sum_t ||p_t||^2 - ||(1/T) sum_t p_t||^2

(Feinman's Eq. 3 with the constant prior term dropped). Adversarial inputs tend
to have higher U, so the score is -U. A model without active dropout layers has
U = 0 everywhere: the detector refuses it with a one-line error instead of
reporting a meaningless AUC.

The T passes are run batched: the N inputs are stacked T times along dim 0
(pass-major, rows [t*N, (t+1)*N) are pass t) and go through the model in one
forward, or in a few when T*N exceeds ``max_rows`` (whole passes per chunk).
Dropout draws its mask independently for every row of the stacked batch, so
the T passes are still independent samples. The dropout masks are drawn under
``torch.random.fork_rng`` seeded from the detector's seed, so scores are
reproducible and the global RNG is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robench.core.config import integer
from robench.core.errors import ConfigError
from robench.core.models import Classifier, Forward
from robench.defenses import Defense
from robench.detectors.base import DETECTORS, Detector


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


# Rows (stacked inputs x passes) per forward pass in mc_dropout_uncertainty; a chunk holds at least one whole pass.
MAX_ROWS = 8192


def mc_dropout_uncertainty(model: Classifier, x: Tensor, passes: int, seed: int, *, max_rows: int = MAX_ROWS) -> Tensor:
    """U(x) from ``passes`` dropout samples, the passes batched into as few forwards as ``max_rows`` allows.

    ``model`` is any module mapping a batch to logits (N, K). The N inputs are
    repeated ``passes`` times along dim 0 (pass-major) and run with only the
    dropout layers in train mode; each forward holds ``max(1, max_rows // N)``
    whole passes, so at most ``max(max_rows, N)`` rows. Stacking is valid for
    every ``_DropoutNd`` (``Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``,
    ``FeatureAlphaDropout``): each draws its mask per sample (per row, or per
    row and channel), never shared across the batch, so every stacked copy of
    an input gets its own mask and the passes are independent samples.

    The masks come from a forked RNG seeded with ``seed`` (CUDA too when x is on
    CUDA), so the result depends only on (model, x, passes, seed, max_rows) and
    the global RNG is untouched. The mask draws are not those of the earlier
    sequential implementation (one forward per pass): its scores for the same
    seed are not reproduced in general (with several dropout layers, on CUDA,
    or across chunkings the draws come in another order), but their
    distribution is the same. Gradients are neither enabled nor disabled here
    (the detector calls it under ``torch.no_grad()``).
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    layers = dropout_layers(model)
    devices = [x.device] if x.device.type == "cuda" else []
    n = x.shape[0]
    per_chunk = min(passes, max(1, max_rows // n)) if n > 0 else passes
    ones = [1] * (x.dim() - 1)
    flags = [(m, m.training) for m in model.modules()]
    first = None  # sum_t ||p_t||^2, shape (N,)
    total = None  # sum_t p_t, shape (N, K)
    try:
        model.eval()  # batch norm and everything else in eval mode; only dropout samples
        for m in layers:
            m.train()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            done = 0
            shared = True  # try the deterministic prefix once per chunk first (_shared_prefix_logits)
            while done < passes:
                k = min(per_chunk, passes - done)
                logits = None
                if shared:
                    state = torch.random.get_rng_state()
                    logits = _shared_prefix_logits(model, layers, x, k)
                    if logits is None:  # the model mixes expanded and unexpanded activations: stack the inputs
                        shared = False
                        torch.random.set_rng_state(state)
                if logits is None:
                    logits = model(x.repeat(k, *ones))
                p = torch.softmax(logits, dim=1)
                p = p.reshape(k, n, p.shape[-1])
                sq = (p * p).sum(2).sum(0)
                tot = p.sum(0)
                first = sq if first is None else first + sq
                total = tot if total is None else total + tot
                done += k
    finally:
        for m, training in flags:
            m.training = training
    mean = total / passes
    return first / passes - (mean * mean).sum(1)


def _shared_prefix_logits(model: nn.Module, layers: list[nn.Module], x: Tensor, k: int) -> Tensor | None:
    """The logits of ``k`` stacked passes with everything before the first dropout layer run once, or None.

    Everything upstream of a dropout layer is deterministic (eval mode), so its input is the
    same in every pass: a forward pre-hook repeats it ``k`` times (pass-major) at the first
    dropout layer a branch meets, and only the layers from there on see k * N rows. For the
    robench CNNs, whose dropout sits after the convolutions, that is about 10x cheaper than
    stacking the inputs. A model that later combines an expanded activation with one that was
    not (a skip connection around dropout) fails the shape check, or returns another number of
    rows, and gets None: the caller then stacks the inputs instead.
    """
    n = x.shape[0]

    def expand(module: nn.Module, inputs: tuple) -> tuple | None:
        h = inputs[0] if inputs else None
        if isinstance(h, Tensor) and h.dim() > 0 and h.shape[0] == n and k > 1:
            return (h.repeat(k, *([1] * (h.dim() - 1))), *inputs[1:])
        return None

    handles = [m.register_forward_pre_hook(expand) for m in layers]
    try:
        logits = model(x)
    except RuntimeError:
        return None
    finally:
        for handle in handles:
            handle.remove()
    return logits if logits.dim() == 2 and logits.shape[0] == k * n else None


@DETECTORS.register
@dataclass
class BayesianUncertaintyDetector(Detector):
    passes: int = integer(50, low=2, note="Monte-Carlo dropout passes")
    seed: int = integer(0)

    name: ClassVar[str] = "bu"
    label: ClassVar[str] = "BU"
    table_rank: ClassVar[int] = 1
    description: ClassVar[str] = "Bayesian uncertainty from MC dropout, 50 passes (Feinman et al. 2017); needs dropout"

    def check_applicable(self, model: Classifier, defense: Defense) -> None:
        if not dropout_layers(model):
            raise ConfigError(
                "detector 'bu' needs MC dropout but the model has no dropout layer with p > 0 "
                "(train with --arch-param dropout=0.25, or leave 'bu' out)"
            )

    def score(self, model: Classifier, defense: Defense, forward: Forward) -> Tensor:
        self.check_applicable(model, defense)
        with torch.no_grad():
            return -mc_dropout_uncertainty(model, forward.x, self.passes, self.seed)
