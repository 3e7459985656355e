"""CPU threads: how many torch may use, and a registry that warns when robench runs share the cores.

By default torch gives every process one intra-op thread per core. Two robench
processes on the same machine therefore each start as many busy threads as
there are cores, and the threads fight over the cores instead of sharing them:
reported on this project's 2-core machines, two concurrent C&W white-box runs each ran about
15x slower than one run alone (far worse than the 2x one would expect).

This module provides:

* :func:`available_cores` -- the cores this process may run on (its CPU affinity);
* :func:`set_threads` -- set torch's intra-op thread count (``--threads``);
* :func:`registered` -- a context manager that records this process in a small
  per-user folder of live robench processes and, on entry, returns a one-line
  warning when the other live processes plus this one ask for more threads than
  there are cores; :func:`other_processes` lists those others.

The registry folder is ``$ROBENCH_ACTIVE_DIR`` when set, else
``<tempdir>/robench-active-<uid>``. It holds one ``<pid>.json`` file per live
process: ``{"pid", "threads", "started", "command"}``. Files of processes that
died without cleaning up (``kill -9``) are removed by the next process that
looks. The registry is advisory only: any failure to read or write it is
ignored, and it never stops a run.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

import torch

from robench.core.errors import ConfigError

ENV_ACTIVE_DIR = "ROBENCH_ACTIVE_DIR"
"""Environment variable that overrides the registry folder."""

_COMMAND_STORE_CHARS = 200  # longest command kept in a registry file
_COMMAND_SHOW_CHARS = 60  # longest command shown in a warning


def available_cores() -> int:
    """The number of CPU cores this process may run on (its affinity mask; at least 1)."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return os.cpu_count() or 1


def set_threads(n: int | None) -> int:
    """Set torch's intra-op thread count to ``n`` (all available cores when None); return the count set.

    Only ``torch.set_num_threads`` is called: ``torch.set_num_interop_threads``
    raises once any parallel work has started, so it is left alone.

    Raises:
        ConfigError: ``n`` is not a whole number >= 1.
    """
    if n is None:
        count = available_cores()
    elif isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(f"--threads must be a whole number >= 1, got {n!r}")
    else:
        count = int(n)
    torch.set_num_threads(count)
    return count


def _active_dir(folder: Path | None = None) -> Path:
    """The registry folder: ``folder``, else ``$ROBENCH_ACTIVE_DIR``, else a per-user folder under the temp dir."""
    if folder is not None:
        return Path(folder)
    env = os.environ.get(ENV_ACTIVE_DIR)
    if env:
        return Path(env)
    user = os.getuid() if hasattr(os, "getuid") else (os.environ.get("USERNAME") or "user")
    return Path(tempfile.gettempdir()) / f"robench-active-{user}"


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 probes without sending anything)."""
    if pid <= 0:  # 0 and negatives would address process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # unknown: assume alive rather than delete a live process's file
        return True
    return True


def _read_entry(path: Path) -> dict | None:
    """A registry file's content if it is well formed, else None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid, threads = data.get("pid"), data.get("threads")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        return None
    return data


def other_processes(folder: Path | None = None) -> list[dict]:
    """The live robench processes other than this one recorded in the registry, sorted by pid.

    Each item is the process's registry entry (``pid``, ``threads``, ``started``,
    ``command``). Unreadable or corrupt files are skipped; files of processes
    that are no longer alive are removed. Never raises for registry problems.
    """
    root = _active_dir(folder)
    me = os.getpid()
    try:
        paths = sorted(root.glob("*.json"))
    except OSError:
        return []
    others: list[dict] = []
    for path in paths:
        entry = _read_entry(path)
        if entry is None or entry["pid"] == me:
            continue
        if not _pid_alive(entry["pid"]):
            with suppress(OSError):
                path.unlink()
            continue
        others.append(entry)
    others.sort(key=lambda e: e["pid"])
    return others


def _one_line(text: object, limit: int) -> str:
    """``text`` with all whitespace runs collapsed to single spaces, cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _warning(others: list[dict], threads: int, cores: int) -> str | None:
    """The one-line shared-cores warning, or None when the threads fit on the cores."""
    if not others:
        return None
    others_threads = sum(e["threads"] for e in others)
    if others_threads + threads <= cores:
        return None
    described = "; ".join(
        f"pid {e['pid']}, {_plural(e['threads'], 'thread')}: {_one_line(e.get('command', '?'), _COMMAND_SHOW_CHARS)}"
        for e in others
    )
    who = f"{len(others)} other robench process" + ("es" if len(others) > 1 else "")
    verb = "shares" if len(others) == 1 else "share"
    return (
        f"warning: {who} ({described}) {verb} these {_plural(cores, 'core')} with this one "
        f"({_plural(threads, 'thread')}); runs slow down many times over "
        f"(two C&W-wb runs on 2 cores ran ~15x slower): run them one after another, or give each --threads 1"
    )


def _write_entry(root: Path, entry: dict) -> Path:
    """Atomically write ``entry`` as ``root/<pid>.json`` (temp file + ``os.replace``); return the path."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = root / f"{entry['pid']}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{entry['pid']}.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entry, fh)
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    return target


@contextmanager
def registered(threads: int, command: str, folder: Path | None = None) -> Iterator[str | None]:
    """Record this process in the registry for the duration of the block; yield a warning or None.

    On entry this process's ``<pid>.json`` is written atomically, then the other
    live processes are read (see :func:`other_processes`). The yielded value is
    a one-line warning when there are others and their threads plus ``threads``
    exceed :func:`available_cores`, else None. The file is removed on exit, also
    when the block raises. If the registry cannot be written (say a read-only
    temp dir) the block still runs and None is yielded.

    Args:
        threads: the torch threads this process uses (as returned by :func:`set_threads`).
        command: a short description of the run, shown in other processes' warnings.
        folder: the registry folder; default ``$ROBENCH_ACTIVE_DIR`` or ``<tempdir>/robench-active-<uid>``.
    """
    root = _active_dir(folder)
    entry = {
        "pid": os.getpid(),
        "threads": int(threads),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": _one_line(command, _COMMAND_STORE_CHARS),
    }
    path: Path | None = None
    warning: str | None = None
    try:
        path = _write_entry(root, entry)
        warning = _warning(other_processes(root), int(threads), available_cores())
    except Exception:  # the registry is advisory: never stop a run over it
        warning = None
    try:
        yield warning
    finally:
        if path is not None:
            with suppress(OSError):
                path.unlink()
