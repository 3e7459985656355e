"""``torch.load(weights_only=True)`` of an untrusted file, every failure one :class:`BundleError` line.

A checkpoint bundle (:mod:`robench.checkpoints.bundle`) and the weights ``robench import`` reads
(:mod:`robench.checkpoints.imported.sources`) both go through here, so both refuse a pickled code
payload the same way and only their messages differ.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from robench.core.errors import BundleError

MAX_UNPACKED_BYTES = 4 * 1024**3  # a torch.save zip's records, unpacked: robench's largest model is 400 MB of weights


def check_torch_zip(source: Path | bytes, limit: int = MAX_UNPACKED_BYTES) -> str | None:
    """Why a ``torch.save`` zip must not be handed to ``torch.load``, or None (also None for what is not a zip).

    ``torch.load`` inflates a compressed record whole before anything else is checked, so a few MB of DEFLATE can
    ask for gigabytes; ``torch.save`` writes every record stored (uncompressed), so a compressed one is refused,
    and the records' declared sizes are bounded.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return None  # not a zip: torch's legacy format, which torch.load reads without inflating
    if any(info.compress_type != zipfile.ZIP_STORED for info in infos):
        return "it holds compressed records, which torch.save never writes"
    if sum(info.file_size for info in infos) > limit:
        return f"its records unpack to more than {limit // 1024**3} GiB"
    return None


def load_weights_only(path: Path, data: bytes | None, *, after_global: str, refused: str, unreadable: str) -> Any:
    """``path`` (or its bytes ``data``) through ``torch.load(weights_only=True)`` on the CPU.

    Errors name ``path``: a forbidden global (code the file would run) gives ``refused: the file
    references GLOBAL, which could run code; {after_global}``; another refused pickle ``refused``;
    a truncated, corrupt or foreign file ``unreadable``.
    """
    problem = check_torch_zip(path if data is None else data)
    if problem is not None:
        raise BundleError(f"{path}: refused: {problem}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the errors below say enough
            warnings.simplefilter("ignore")
            return torch.load(path if data is None else io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's weights-only unpickler names the forbidden global when there is one.
        match = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if match:
            raise BundleError(
                f"{path}: refused: the file references {match.group(1)}, which could run code; {after_global}"
            ) from None
        raise BundleError(f"{path}: {refused}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError, KeyError, IndexError):
        raise BundleError(f"{path}: {unreadable}") from None
