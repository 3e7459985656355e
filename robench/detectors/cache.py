"""Fitted detectors cached next to the bundle, keyed by the model's content hash and the detector's config.

``gm.pt`` gets ``gm.pt.detectors/kd-<key>.pt``, where the key hashes the
detector's name and parameters, the bundle's content hash, and the training
split it was fitted on. A changed model or config gives a new key, so a stale
fit is never reused. The cache is derived data: an unreadable or mismatching
file is refitted and atomically replaced. The state holds what the fit chose as
well as what it stored: KD's ``bandwidth`` (the width in use, selected on held-out
training features under ``bandwidth = "select"``) and ``bandwidth_curve`` (the
held-out log-likelihood per width of :data:`robench.detectors.kd.BANDWIDTH_GRID`).
"""

from __future__ import annotations

import hashlib
import io
import sys
import warnings
from pathlib import Path

import torch

from robench.checkpoints.bundle import ModelBundle
from robench.core.data import Split
from robench.core.errors import ConfigError
from robench.core.provenance import atomic_write_bytes, canonical_json
from robench.detectors.base import Detector

CACHE_FORMAT = "robench-detector"


def cache_key(detector: Detector, content_hash: str, dataset: str, split_seed: int) -> str:
    identity = {
        "detector": detector.name,
        "params": detector.params(),
        "model": content_hash,
        "dataset": dataset,
        "split_seed": split_seed,
    }
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:20]


def cache_path(bundle_path: Path, detector: Detector, key: str) -> Path:
    return bundle_path.parent / f"{bundle_path.name}.detectors" / f"{detector.name}-{key}.pt"


def _read(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable cache file is simply refitted
        return None
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT or payload.get("key") != key:
        return None
    state = payload.get("state")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None
    return state


def _cache_file(detector: Detector, bundle: ModelBundle, train_name: str | None) -> tuple[Path | None, str]:
    key = cache_key(detector, bundle.content_hash, train_name or bundle.meta.dataset, bundle.meta.split_seed)
    return (cache_path(bundle.path, detector, key) if bundle.path is not None else None), key


def load_cached(detector: Detector, bundle: ModelBundle, device: torch.device, train_name: str | None = None) -> bool:
    """Load ``detector``'s cached fit for ``bundle`` if there is a valid one (True), else leave it unfitted (False)."""
    path, key = _cache_file(detector, bundle, train_name)
    if path is None or not path.exists():
        return False
    state = _read(path, key)
    if state is None:
        return False
    try:
        detector.load_fitted_state(state, device)
    except ConfigError:  # a fit that lacks what this config needs (KD's selected width): refitted
        return False
    return True


def save_cached(detector: Detector, bundle: ModelBundle, train_name: str | None = None) -> None:
    """Cache ``detector``'s fit next to ``bundle`` (atomically); a read-only folder costs one line on stderr, not the
    run."""
    path, key = _cache_file(detector, bundle, train_name)
    if path is None:
        return
    buffer = io.BytesIO()
    torch.save({"format": CACHE_FORMAT, "key": key, "state": detector.fitted_state()}, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:  # a read-only model folder must not cost the fit: one line on stderr, and go on
        reason = " ".join(str(exc.strerror or exc).split())
        print(
            f"robench: note: cannot cache detector '{detector.name}' next to {bundle.path} ({reason}); "
            "fitting it again next time",
            file=sys.stderr,
        )


def fit_or_load(
    detector: Detector,
    bundle: ModelBundle,
    train: Split,
    device: torch.device,
    use_cache: bool = True,
    train_name: str | None = None,
) -> bool:
    """Make ``detector`` ready for ``bundle``: load its cached fit or fit it (and cache it). Returns True if reused.

    ``train_name`` names the training data actually used ("DATASET:SPLIT_SEED"); by default the bundle's own.
    """
    detector.check_applicable(bundle.model, bundle.defense)
    if not detector.needs_fit:
        return False
    if use_cache and load_cached(detector, bundle, device, train_name):
        return True
    detector.fit(bundle.model, bundle.defense, train, device)
    if use_cache:
        save_cached(detector, bundle, train_name)
    return False
