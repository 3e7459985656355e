"""One writer per output folder: an advisory lock on ``OUT/.robench.lock``.

Two runs writing into one folder would prune each other's parts and one result would be lost,
so a run or suite holds an exclusive ``fcntl.flock`` on the folder's lock file for as long as it
writes. The kernel releases the lock when its holder exits in any way (``kill -9`` included), so
a stale lock from a killed process is taken over without any clean-up; the file's text (pid,
host, start time, command) names the holder in the error the second process gets. With
``wait=True`` the second process waits for the first instead.

The lock file is untrusted like everything in ``--out``: it is opened with ``O_NOFOLLOW`` (a symlink planted there
is refused, never followed), and one that is not a regular file, has other hard links or holds anything but a
robench lock record (nothing, or a holder's JSON) is refused with one line, so robench never truncates a file it did
not create.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from robench.core.errors import RobenchError

LOCK_FILE = ".robench.lock"


class OutputLockedError(RobenchError):
    """Another robench process is writing into the same output folder."""

    exit_code = 1


_KEYS = {"pid", "host", "started", "command"}
_READ_LIMIT = 64 * 1024


def _read(fd: int) -> bytes:
    return os.pread(fd, _READ_LIMIT + 1, 0)


def _holder(fd: int) -> str:
    try:
        info = json.loads(_read(fd).decode() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not isinstance(info, dict):
        return "another process"
    return (
        f"robench process {info.get('pid', '?')} on {info.get('host', '?')} "
        f"(started {info.get('started', '?')}: {info.get('command', '?')})"
    )


def _is_lock_text(data: bytes) -> bool:
    """Whether ``data`` is what robench writes into a lock file: nothing (released), or its holder's JSON record."""
    if not data.strip():
        return True
    if len(data) > _READ_LIMIT:
        return False
    try:
        info = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(info, dict) and set(info) == _KEYS


def _refused(path: Path, out: Path, problem: str) -> OutputLockedError:
    return OutputLockedError(
        f"refused to use {path} as the output lock: {problem}; remove it, or use another --out than {out}"
    )


def _open_lock(path: Path, out: Path) -> int:
    """Open (or create) the lock file without following a symlink; refuse anything but a regular file with one link.

    ``O_NOFOLLOW`` refuses a symlink at the last component, and ``fstat`` after the open checks the file that was
    opened (no race between a check and the open): a regular file, not a hard link to a file elsewhere.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if os.path.islink(path):
            raise _refused(path, out, "it is a symbolic link, which robench does not follow") from None
        if os.path.lexists(path) and not os.path.isfile(path):
            raise _refused(path, out, "it is not a regular file") from None
        raise _refused(path, out, exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "it is not a regular file"
    elif info.st_nlink != 1:
        problem = f"it has {info.st_nlink} hard links (a link to a file elsewhere?)"
    if problem is not None:
        os.close(fd)
        raise _refused(path, out, problem)
    return fd


@contextmanager
def output_lock(out: Path, *, wait: bool = False) -> Iterator[Path]:
    """Hold the lock of output folder ``out`` (created if needed) for the ``with`` block."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    fd = _open_lock(path, out)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise OutputLockedError(
                f"output folder {out} is in use by {_holder(fd)}; wait for it (--wait) or use another --out"
            ) from None
        if not _is_lock_text(_read(fd)):  # read while holding the lock: no robench process is writing it
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise _refused(path, out, "it holds something other than a robench lock record")
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join(sys.argv[:8])[:200],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # released: an empty lock file names no holder
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
