"""The part store: finished (threat, attack, batch) parts of a run's records, keyed by what determines them.

A part's key hashes its identity (model and crafting-model content hashes, dataset, threat,
the attack's resolved config, the detectors' configs, the seed, the batch's samples and the
records format), so rerunning the same command reuses finished parts (an interrupted run
resumes), and a changed config never reuses a stale one. Writes are atomic.

A part is reused only if it proves to be the one expected: its Parquet metadata carries its own
key, the ids of its samples and a checksum of its content, and all three must match (a file
replaced by another valid Parquet file, by another batch's part, or edited, is recomputed, and
:attr:`PartStore.rejected` says why). :meth:`PartStore.prune` drops the parts a finished run no
longer uses, so a run folder holds only its own.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from robench.core.provenance import atomic_write_bytes, canonical_json, jsonable

PARTS_DIR = "parts"
_META = b"robench.part"  # the Parquet key-value metadata entry of a part


def content_checksum(part: pd.DataFrame) -> str:
    """SHA-256 over a part's columns: names, dtypes and values, row order included."""
    digest = hashlib.sha256()
    for column in part.columns:
        values = part[column]
        digest.update(f"{column}|{values.dtype}|".encode())
        digest.update(pd.util.hash_pandas_object(values, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def samples_digest(samples: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(samples, dtype=np.int64).tobytes()).hexdigest()


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
        self.rejected: list[str] = []  # "<key>: why" for every finished part that did not prove to be the expected one

    def _path(self, key: str) -> Path | None:
        return self.root / f"{key}.parquet" if self.root is not None else None

    def get(self, key: str, samples: np.ndarray, sample_column: str) -> pd.DataFrame | None:
        """The finished part of ``key`` holding exactly ``samples`` (in ``sample_column``), or None: then it is
        recomputed."""
        self.used.add(key)
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {}).get(_META, b"null"))
            part = table.to_pandas()
        except Exception:  # noqa: BLE001 - a torn or foreign file is recomputed, never trusted
            return self._reject(key, "unreadable")
        if not isinstance(meta, dict):
            return self._reject(key, "not a robench part")
        if meta.get("key") != key:
            return self._reject(key, "holds another part")
        ids = part[sample_column].to_numpy() if sample_column in part else None
        if (
            ids is None
            or len(ids) != len(samples)
            or meta.get("samples") != samples_digest(samples)
            or samples_digest(ids) != meta["samples"]
        ):
            return self._reject(key, "holds other samples")
        if meta.get("checksum") != content_checksum(part):
            return self._reject(key, "content does not match its checksum")
        self.reused += 1
        return part

    def _reject(self, key: str, why: str) -> None:
        self.rejected.append(f"{key}: {why}")
        return None

    def put(self, key: str, part: pd.DataFrame, samples: np.ndarray) -> None:
        """Keep a computed part (written atomically, with its key, sample ids and checksum, when the store has a
        folder)."""
        self.used.add(key)
        self.computed += 1
        path = self._path(key)
        if path is None:
            return
        table = pa.Table.from_pandas(part, preserve_index=False)
        meta = {"key": key, "samples": samples_digest(samples), "checksum": content_checksum(part)}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META: json.dumps(meta).encode()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def prune(self) -> None:
        """Drop parts no longer part of this run's config (a finished run's folder holds only its own)."""
        if self.root is None or not self.root.exists():
            return
        for path in self.root.glob("*.parquet"):
            if path.stem not in self.used:
                path.unlink(missing_ok=True)
