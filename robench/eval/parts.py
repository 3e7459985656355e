"""The part store: finished (threat, attack, batch) parts of a run's records, keyed by what determines them.

A part's key hashes its identity (model and crafting-model content hashes, dataset, threat,
the attack's resolved config, the detectors' configs, the seed, the batch's samples and the
records format), so rerunning the same command reuses finished parts (an interrupted run
resumes), and a changed config never reuses a stale one. Writes are atomic; a part that cannot
be read back is recomputed, never trusted; :meth:`PartStore.prune` drops the parts a finished
run no longer uses, so a run folder holds only its own.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from robench.core.provenance import atomic_write_bytes, canonical_json, jsonable

PARTS_DIR = "parts"


def part_key(identity: Mapping[str, Any]) -> str:
    """The cache key of one (threat, attack, batch) part of the records."""
    return hashlib.sha256(canonical_json(jsonable(identity)).encode()).hexdigest()[:32]


class PartStore:
    """Finished parts under ``root`` (``OUT/parts``), or an in-memory no-op store when ``root`` is None."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.used: set[str] = set()
        self.reused = 0
        self.computed = 0

    def _path(self, key: str) -> Path | None:
        return self.root / f"{key}.parquet" if self.root is not None else None

    def get(self, key: str) -> pd.DataFrame | None:
        """The finished part of ``key``, or None (absent, or unreadable: then it is recomputed)."""
        self.used.add(key)
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            part = pd.read_parquet(path)
        except Exception:  # noqa: BLE001 - a torn or foreign file is recomputed, never trusted
            return None
        self.reused += 1
        return part

    def put(self, key: str, part: pd.DataFrame) -> None:
        """Keep a computed part (written atomically when the store has a folder)."""
        self.used.add(key)
        self.computed += 1
        path = self._path(key)
        if path is None:
            return
        buffer = io.BytesIO()
        part.to_parquet(buffer, index=False)
        atomic_write_bytes(path, buffer.getvalue())

    def prune(self) -> None:
        """Drop parts no longer part of this run's config (a finished run's folder holds only its own)."""
        if self.root is None or not self.root.exists():
            return
        for path in self.root.glob("*.parquet"):
            if path.stem not in self.used:
                path.unlink(missing_ok=True)
