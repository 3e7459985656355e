"""The clean inputs' forward pass and detector scores, computed once per sample of a run.

Every attack of a threat meets the same clean inputs. Without a cascade the attacks of one
batch share its clean pass; with one (:mod:`robench.eval.cascade`) later attacks meet the
samples still in, re-packed into new batches, and take their clean rows from here instead of
recomputing them (BU's Monte-Carlo passes alone cost as much as a short attack). Rows are
computed in the batches that first ask for them (the run's original batches), so a sample's
clean scores are the same whichever attack asks, with or without a cascade.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from robench.core.bundle import ModelBundle
from robench.core.models import Forward
from robench.detectors import Detector
from robench.eval.attack_batch import CleanBatch


class CleanCache:
    """Per test sample: clean features, logits and detector scores on the evaluated model."""

    def __init__(self, bundle: ModelBundle, detectors: Mapping[str, Detector]) -> None:
        self.bundle = bundle
        self.detectors = detectors
        self._row: dict[int, int] = {}
        self._z: list[torch.Tensor] = []
        self._logits: list[torch.Tensor] = []
        self._scores: list[dict[str, np.ndarray]] = []
        self._flat: tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]] | None = None

    def batch(self, samples: np.ndarray, x: torch.Tensor) -> CleanBatch:
        """The clean batch of test samples ``samples`` (inputs ``x``), computing the rows not seen yet."""
        samples = np.asarray(samples)
        missing = np.array([s not in self._row for s in samples.tolist()], dtype=bool)
        if missing.all():  # a batch of new samples (every batch of a run without a cascade): compute it as it is
            computed = CleanBatch.of(self.bundle, x, self.detectors)
            self._add(samples, computed)
            return computed
        if missing.any():
            self._add(samples[missing], CleanBatch.of(self.bundle, x[torch.from_numpy(missing).to(x.device)], self.detectors))
        z, logits, scores = self._flattened()
        rows = torch.as_tensor([self._row[s] for s in samples.tolist()], dtype=torch.long)
        on = rows.to(z.device)
        forward = Forward(x=x, z=z[on], logits=logits[on])
        return CleanBatch(forward, {name: values[rows.numpy()] for name, values in scores.items()})

    def _add(self, samples: np.ndarray, clean: CleanBatch) -> None:
        start = len(self._row)
        for i, s in enumerate(samples.tolist()):
            self._row[s] = start + i
        self._z.append(clean.forward.z.detach())
        self._logits.append(clean.forward.logits.detach())
        self._scores.append(clean.scores)
        self._flat = None

    def _flattened(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
        if self._flat is None:
            names = self._scores[0].keys() if self._scores else ()
            self._flat = (
                torch.cat(self._z),
                torch.cat(self._logits),
                {name: np.concatenate([s[name] for s in self._scores]) for name in names},
            )
        return self._flat
