"""A run's output folder: records.parquet, worst_case.parquet, distances.parquet, summary.csv, run.json and sanity.csv,
each written atomically."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from robench.core.errors import ConfigError
from robench.core.provenance import atomic_write_bytes, atomic_write_text, jsonable
from robench.scoring import records as R

SANITY_FLAGS = "sanity_flags"  # the summary column naming the flagged sanity checks of its model (and threat)


def contained(root: Path, *parts: str) -> Path:
    """``root / parts...``, refused with a one-line error if it would lie outside ``root``
    (``..``, absolute parts, links)."""
    root = Path(root)
    path = root.joinpath(*parts)
    base, target = root.resolve(), path.resolve()
    if target == base or base not in target.parents:
        raise ConfigError(f"refusing to write {path}: it is not inside the output folder {root}")
    return path


def write_run(
    out: Path, records: pd.DataFrame, summary: pd.DataFrame, info: Mapping[str, Any], sanity: pd.DataFrame | None = None
) -> None:
    """records.parquet, worst_case.parquet, distances.parquet, summary.csv, run.json (and sanity.csv), each written
    atomically.

    ``worst_case.parquet`` holds the derived worst-case records (:mod:`robench.scoring.worst_case`,
    with ``broken_by``: the first attack that misclassified each sample), a convenience copy of
    what every reader recomputes from ``records.parquet``; a threat of one attack has none.
    ``distances.parquet`` holds each sample's smallest breaking distance per norm and detector
    (:func:`robench.scoring.curves.smallest_distances`, the robustness curves'), likewise derived.
    """
    from robench.scoring.curves import smallest_distances
    from robench.scoring.worst_case import worst_case_records

    out.mkdir(parents=True, exist_ok=True)
    derived = (("worst_case.parquet", worst_case_records(records)), ("distances.parquet", smallest_distances(records)))
    for name, frame in (("records.parquet", records), *derived):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(out / name, buffer.getvalue())
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    if sanity is not None and len(sanity):
        atomic_write_text(out / "sanity.csv", sanity.to_csv(index=False))
    atomic_write_text(out / "run.json", json.dumps(jsonable(info), indent=2, sort_keys=True))


def with_sanity_flags(summary: pd.DataFrame, sanity: pd.DataFrame) -> pd.DataFrame:
    """The summary plus a ``sanity_flags`` column: the flagged checks of its model (and threat, attack or
    detector: :func:`robench.runs.detector_checks.detector_key`)."""
    from robench.runs.detector_checks import detector_key
    from robench.runs.sanity import flags_by_model_threat
    from robench.scoring.metrics import DETECTOR

    summary = summary.copy()
    if sanity is None or not len(sanity):
        summary[SANITY_FLAGS] = ""
        return summary
    flags = flags_by_model_threat(sanity)

    def flagged(row: pd.Series) -> str:
        names = [
            n
            for key in (
                (row[R.MODEL], "-"),
                (row[R.MODEL], row[R.THREAT]),
                (row[R.MODEL], f"{row[R.THREAT]}/{row[R.ATTACK]}"),  # a per-attack check (attacker-estimator-differs)
                (row[R.MODEL], detector_key(row[R.THREAT], row.get(DETECTOR))),  # a per-detector check
                # ... and one at a budget (detector-not-attacked on a worst-case row)
                (row[R.MODEL], detector_key(f"{row[R.THREAT]}/{row[R.ATTACK]}", row.get(DETECTOR))),
            )
            for n in flags.get(key, "").split(",")
            if n
        ]
        return ",".join(dict.fromkeys(names))

    summary[SANITY_FLAGS] = summary.apply(flagged, axis=1) if len(summary) else ""
    return summary


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a fixed-width table for the terminal (sanity flags are printed separately)."""
    shown = summary.drop(columns=[SANITY_FLAGS], errors="ignore")
    if shown[R.MODEL].nunique() == 1 and shown[R.THREAT].nunique() == 1:
        shown = shown.drop(columns=[R.MODEL, R.THREAT])
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")
