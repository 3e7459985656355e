"""The one place robench imports matplotlib: Agg, with its caches in a folder robench owns, and literal text.

matplotlib keeps a config folder and a font cache in the user's home (``~/.config/matplotlib``,
``~/.cache/matplotlib``), and building its font list runs fontconfig's ``fc-list``, which may
cache in ``$XDG_CACHE_HOME/fontconfig`` (``~/.cache/fontconfig``). robench writes nothing outside
``--out`` but what the README lists, so :func:`pyplot` imports matplotlib with ``MPLCONFIGDIR``
(and, while the font list is built, ``XDG_CACHE_HOME``) pointing at a temporary folder that
robench creates and removes when the process exits: ``robench-matplotlib-*`` under the system's
temporary folder (``TMPDIR``). A variable the user set is left alone (their caches, their choice).
The environment is restored after the import; matplotlib keeps the folders it resolved.

Text: matplotlib parses any string with two unescaped ``$`` as math, so a model file named
``a$x^2$b.pt`` would be drawn as math or fail to parse. Every name that reaches a figure
(model, threat, attack, detector, parameter, ...) goes through :func:`literal`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from types import ModuleType

from robench.core.errors import ConfigError

_ENV = ("MPLCONFIGDIR", "XDG_CACHE_HOME")
_folder: str | None = None


def _remove(folder: str, owner: int) -> None:
    if os.getpid() == owner:  # a forked child that exits normally must not remove its parent's folder
        shutil.rmtree(folder, ignore_errors=True)


def cache_folder() -> str:
    """robench's temporary folder for matplotlib's (and fontconfig's) caches, created once per process, removed at
    exit."""
    global _folder
    if _folder is None or not os.path.isdir(_folder):
        try:
            _folder = tempfile.mkdtemp(prefix="robench-matplotlib-")
        except OSError as exc:
            raise ConfigError(
                f"cannot create a temporary folder for matplotlib's caches under "
                f"{os.environ.get('TMPDIR') or 'the system temporary folder'}: {exc.strerror or exc}; "
                "set TMPDIR to a writable folder (or MPLCONFIGDIR to matplotlib's own)"
            ) from None
        atexit.register(_remove, _folder, os.getpid())
    return _folder


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (files only, never a display), its caches in :func:`cache_folder`."""
    if "matplotlib" in sys.modules:  # imported before (by the caller's own code): its folders are already chosen
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    saved = {name: os.environ.get(name) for name in _ENV}
    for name in _ENV:
        if not saved[name]:  # unset or empty: matplotlib and fontconfig would fall back to the home folder
            os.environ[name] = cache_folder()
    try:
        import matplotlib

        matplotlib.use("Agg")
        (
            matplotlib.get_configdir(),
            matplotlib.get_cachedir(),
        )  # resolved (and cached by matplotlib) now, under the folder above
        import matplotlib.font_manager  # noqa: F401 - imported to build the font list (running fc-list) now
        import matplotlib.pyplot as plt
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return plt


def literal(text: object) -> str:
    """``text`` as a string matplotlib draws as it is: every ``$`` escaped, so that no part of it is parsed as math."""
    return str(text).replace("$", r"\$")
