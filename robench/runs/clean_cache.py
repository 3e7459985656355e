"""The clean inputs' forward pass and detector scores, computed once per sample of a run, in the run's batches.

Every attack of a threat meets the same clean inputs. Without a cascade the attacks of one
batch share its clean pass; with one (:mod:`robench.scoring.cascade`) later attacks meet the
samples still in, re-packed into new batches, and take their clean rows from here instead of
recomputing them (BU's Monte-Carlo passes alone cost as much as a short attack).

Rows are always computed in the run's original batches: the driver (:mod:`robench.runs.driver`)
runs one clean task per original batch and hands a part the passes of the batches that hold its
samples. A sample's clean scores therefore do not depend on which attack asks first, on a
cascade, on a resume or on the backend that computes them (BU's dropout draws depend on the
batch a sample is in).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from robench.checkpoints.bundle import ModelBundle
from robench.core.execution import is_out_of_memory
from robench.core.models import Forward
from robench.detectors import Detector
from robench.runs.attack_batch import CleanBatch


def clean_batch_on(clean: CleanBatch, device: torch.device) -> CleanBatch:
    """``clean`` with its tensors on ``device`` (a Ray worker ships clean batches on the CPU)."""
    forward = clean.forward
    return CleanBatch(
        Forward(x=forward.x.to(device), z=forward.z.to(device), logits=forward.logits.to(device)), dict(clean.scores)
    )


def compute_clean(bundle: ModelBundle, x: torch.Tensor, detectors: Mapping[str, Detector]) -> CleanBatch:
    """The clean pass of one original batch; halved (recursively) if even the forward pass runs out of memory."""
    try:
        return CleanBatch.of(bundle, x, detectors)
    except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
        if not is_out_of_memory(exc) or len(x) <= 1:
            raise
    if x.device.type == "cuda":
        torch.cuda.empty_cache()
    half = len(x) // 2
    a, b = compute_clean(bundle, x[:half], detectors), compute_clean(bundle, x[half:], detectors)
    forward = Forward(
        x=torch.cat([a.forward.x, b.forward.x]),
        z=torch.cat([a.forward.z, b.forward.z]),
        logits=torch.cat([a.forward.logits, b.forward.logits]),
    )
    return CleanBatch(forward, {name: np.concatenate([a.scores[name], b.scores[name]]) for name in a.scores})


class CleanCache:
    """Per test sample: clean features, logits and detector scores on the evaluated model.

    A part task is handed the clean passes of the original batches that hold its samples
    (:meth:`add`, from the driver's clean tasks); a batch with rows it was not handed is computed as it is.
    """

    def __init__(self, bundle: ModelBundle, detectors: Mapping[str, Detector]) -> None:
        self.bundle = bundle
        self.detectors = detectors
        self._row: dict[int, int] = {}
        self._whole: dict[bytes, CleanBatch] = {}  # an original batch's own clean pass, by its sample ids
        self._z: list[torch.Tensor] = []
        self._logits: list[torch.Tensor] = []
        self._scores: list[dict[str, np.ndarray]] = []
        self._flat: tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]] | None = None

    def batch(self, samples: np.ndarray, x: torch.Tensor) -> CleanBatch:
        """The clean batch of test samples ``samples`` (inputs ``x``), computing the rows not seen yet."""
        samples = np.asarray(samples)
        whole = self._whole.get(np.asarray(samples, dtype=np.int64).tobytes())
        if whole is not None:
            return whole
        missing = np.array([s not in self._row for s in samples.tolist()], dtype=bool)
        if missing.any():
            self.add(
                samples[missing], compute_clean(self.bundle, x[torch.from_numpy(missing).to(x.device)], self.detectors)
            )
        z, logits, scores = self._flattened()
        rows = torch.as_tensor([self._row[s] for s in samples.tolist()], dtype=torch.long)
        on = rows.to(z.device)
        forward = Forward(x=x, z=z[on], logits=logits[on])
        return CleanBatch(forward, {name: values[rows.numpy()] for name, values in scores.items()})

    def add(self, samples: np.ndarray, clean: CleanBatch) -> None:
        """Keep the clean rows of ``samples`` (a whole original batch's pass is also returned as is for that batch)."""
        samples = np.asarray(samples)
        self._whole.setdefault(np.asarray(samples, dtype=np.int64).tobytes(), clean)
        fresh = [i for i, s in enumerate(samples.tolist()) if s not in self._row]
        if not fresh:
            return
        take = torch.as_tensor(fresh, dtype=torch.long)
        start = len(self._row)
        for j, i in enumerate(fresh):
            self._row[int(samples[i])] = start + j
        on = take.to(clean.forward.z.device)
        self._z.append(clean.forward.z.detach()[on])
        self._logits.append(clean.forward.logits.detach()[on])
        self._scores.append({name: values[np.asarray(fresh)] for name, values in clean.scores.items()})
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
