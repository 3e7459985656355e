"""One writer per output folder: an advisory lock on ``OUT/.robench.lock``.

Two runs writing into one folder would prune each other's parts and one result would be lost,
so a run or suite holds an exclusive ``fcntl.flock`` on the folder's lock file for as long as it
writes. The kernel releases the lock when its holder exits in any way (``kill -9`` included), so
a stale lock from a killed process is taken over without any clean-up; the file's text (pid,
host, start time, command) names the holder in the error the second process gets. With
``wait=True`` the second process waits for the first instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
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


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not isinstance(info, dict):
        return "another process"
    return f"robench process {info.get('pid', '?')} on {info.get('host', '?')} (started {info.get('started', '?')}: {info.get('command', '?')})"


@contextmanager
def output_lock(out: Path, *, wait: bool = False) -> Iterator[Path]:
    """Hold the lock of output folder ``out`` (created if needed) for the ``with`` block."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise OutputLockedError(
                f"output folder {out} is in use by {_holder(path)}; wait for it (--wait) or use another --out"
            ) from None
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
