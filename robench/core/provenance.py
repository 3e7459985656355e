"""What a result must record to be reproducible: package versions, git revision, content hashes; atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

TRACKED_PACKAGES = (
    "robench",
    "torch",
    "torchvision",
    "torchattacks",
    "foolbox",
    "numpy",
    "scikit-learn",
    "pandas",
    "click",
)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that can change a number."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _git(*args: str, cwd: Path, check: bool = False) -> str:
    """``git ARGS`` in ``cwd`` that writes nothing: ``--no-optional-locks`` and ``GIT_OPTIONAL_LOCKS=0`` keep
    ``git status`` from taking ``.git/index.lock`` to refresh the index,
    so recording the revision never writes into the checkout."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(
        ["git", "--no-optional-locks", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=5,
        check=check,
    ).stdout.strip()


def git_revision() -> str:
    """The git commit of the robench checkout (with ``+dirty`` if modified), or ``unknown``; read-only
    (see :func:`_git`)."""
    here = Path(__file__).resolve().parent
    try:
        rev = _git("rev-parse", "HEAD", cwd=here, check=True)
        dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=here)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "") if rev else "unknown"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def state_dict_hash(state: Mapping[str, Tensor], identity: Mapping[str, Any]) -> str:
    """SHA-256 over the model's identity (architecture, defense, ...) and every tensor's name, dtype, shape and bytes.

    Independent of how the file was serialised, so the same weights always
    hash the same, and any changed weight changes the hash.
    """
    digest = hashlib.sha256(canonical_json(identity).encode())
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, paths and tuples turned into plain JSON values (recursively)."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
