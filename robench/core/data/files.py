"""Locating and checking the files of the on-disk datasets under ``--data-root``.

Shared by the format readers (:mod:`robench.core.data.idx`,
:mod:`robench.core.data.cifar`, :mod:`robench.core.data.svhn`): the data root
is untrusted input, so every problem becomes a one-line :class:`DatasetError`
that names the file and says how to fetch what is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robench.core.data.base import LoadOptions
from robench.core.errors import DatasetError


def one_line(exc: BaseException) -> str:
    """An exception's message collapsed onto one line (with its type when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def data_root(options: LoadOptions, name: str) -> Path:
    """The ``--data-root`` folder dataset ``name`` is read from; an error when none was given."""
    if options.data_root is None:
        raise DatasetError(
            f"dataset '{name}' is read from disk: pass --data-root DIR (add --download to fetch it there first)"
        )
    return Path(options.data_root).expanduser()


def require_files(name: str, folder: Path, files: Sequence[str | tuple[str, ...]]) -> list[Path]:
    """Resolve each expected file (a name, or alternatives like plain/``.gz``) under ``folder``.

    Raises a :class:`DatasetError` listing every missing file when any is absent.
    """

    def show(alternatives: tuple[str, ...]) -> str:
        if len(alternatives) == 2 and alternatives[1] == alternatives[0] + ".gz":
            return f"{alternatives[0]}[.gz]"
        return " or ".join(alternatives)

    found: list[Path] = []
    missing: list[str] = []
    for entry in files:
        alternatives = (entry,) if isinstance(entry, str) else tuple(entry)
        path = next((folder / alt for alt in alternatives if (folder / alt).is_file()), None)
        if path is None:
            missing.append(show(alternatives))
        else:
            found.append(path)
    if missing:
        where = "which does not exist" if not folder.is_dir() else f"missing {', '.join(missing)}"
        expected = ", ".join(show((e,) if isinstance(e, str) else tuple(e)) for e in files)
        raise DatasetError(
            f"dataset '{name}' not found: expected {expected} under {folder} ({where}); "
            f"add --download to fetch them there"
        )
    return found


def labels_in_range(labels: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """Check that integer ``labels`` are in 0..num_classes-1 and return them as int64."""
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DatasetError(
            f"{path}: labels must lie in 0..{num_classes - 1}, found {int(labels.min())}..{int(labels.max())}"
        )
    return labels.astype(np.int64, copy=False)
