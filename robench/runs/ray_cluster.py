"""Ray itself for robench: the settings of ``--ray``, finding Ray, reaching a cluster, and a private Ray's folder.

``--ray local`` (and a bare ``--ray``) starts a private Ray on this machine for one command; it keeps
everything it writes (sessions, sockets, logs, spilled objects, its auth token) in one folder of mode
0700, ``<RAY_TMPDIR, TMPDIR or /tmp>/robench-ray-XXXXXXXX`` (:class:`PrivateRay`), removed when it
stops: nothing goes into the home folder. ``--ray auto`` and an address join a cluster and leave Ray's
own defaults as they are. Without ``--ray`` neither this module nor Ray is imported.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robench.core.errors import ConfigError

RAY_HINT = "pip install 'robench[ray]'"
LOCAL = "local"  # --ray local (and a bare --ray): a private Ray on this machine, for this command only
DEFAULT_RETRIES = 3
LOCAL_OBJECT_STORE = 512 * 1024 * 1024  # a private Ray's object store (Ray spills to disk beyond it)


@dataclass(frozen=True)
class RaySettings:
    """Where and how the parts run on Ray.

    ``address``: ``local`` (start a private Ray on this machine with ``cpus`` CPUs), ``auto``
    (the cluster already running on this machine, ``ray start --head``), or a cluster's
    ``HOST:PORT`` / ``ray://HOST:PORT``. ``threads``: CPUs per task, which each task gives
    torch as threads. ``gpus``: GPUs per task (None: 1 when the cluster has GPUs and the run's
    device is not ``cpu``, else 0). ``retries``: Ray's retries of a task whose worker died.
    """

    address: str = LOCAL
    cpus: int | None = None
    threads: int = 1
    gpus: float | None = None
    retries: int = DEFAULT_RETRIES

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip():
            raise ConfigError(f"--ray takes local, auto or a cluster address HOST:PORT, got {self.address!r}")
        for name, value, low in (
            ("--ray-cpus", self.cpus, 1),
            ("--threads", self.threads, 1),
            ("--ray-retries", self.retries, 0),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
        if self.gpus is not None and (
            isinstance(self.gpus, bool) or not isinstance(self.gpus, (int, float)) or not 0 <= self.gpus <= 64
        ):
            raise ConfigError(
                "--ray-gpus must be a number of GPUs per task between 0 and 64 (0.5 shares one GPU between two tasks), "
                f"got {self.gpus!r}"
            )
        if self.cpus is not None and self.address != LOCAL:
            raise ConfigError(
                "--ray-cpus sizes a local Ray (--ray local); "
                f"a cluster at {self.address} has the CPUs its nodes were started with"
            )


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error that names the extra to install."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine (rule: no network at run time)
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, which is not installed here: {RAY_HINT}") from None
    return ray


def check_reachable(address: str) -> None:
    """A one-line error unless ``HOST:PORT`` (of ``address``, ``ray://`` allowed) accepts a TCP connection within
    5 s."""
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--ray {address}: not a cluster address; "
            "use HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:10001, auto or local"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot reach a Ray cluster at {address} ({reason}): start one there with 'ray start --head', "
            "check the address, or use --ray local"
        ) from None


# ------------------------------------------------------------------------------------------- a private Ray's files

PRIVATE_PREFIX = "robench-ray-"  # <RAY_TMPDIR, TMPDIR or /tmp>/robench-ray-XXXXXXXX: everything a private Ray writes
TOKEN_FILE = "auth_token"
_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")  # what Ray (or robench) sets in this process for a private Ray
# Ray's longest socket path below its temp dir:
# /robench-ray-XXXXXXXX/r/session_<date>_<time>_<us>_<pid>/sockets/plasma_store
_SOCKET_TAIL = 90  # 88 bytes with a 7-digit pid
_AF_UNIX_MAX = 107


def _private_base() -> str:
    """Where a private Ray's folder goes: Ray's own default place (``RAY_TMPDIR``, else ``TMPDIR``, else /tmp), or
    /tmp when that path is too long for Ray's socket files (AF_UNIX paths are at most 107 bytes)."""
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    if len(os.fsencode(base)) + _SOCKET_TAIL > _AF_UNIX_MAX and os.path.isdir("/tmp"):
        return "/tmp"
    return base


def _refresh_ray_auth() -> None:
    """Make this process's Ray re-read RAY_AUTH_MODE and the token (Ray caches both; best effort, Ray's private API)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # noqa: BLE001 - another Ray version: nothing cached to refresh
        pass


@dataclass
class PrivateRay:
    """The folder (mode 0700) that a private Ray (``--ray local``) keeps all its files in, removed when it stops.

    Ray's session folders (sockets, logs, spilled objects) go in ``folder/r`` (Ray makes its temp dir and sessions
    world-writable, mode 0777, but nobody else can enter ``folder``), and, unless ``RAY_AUTH_MODE`` says otherwise,
    the token of Ray's token authentication is ``folder/auth_token`` (mode 0600, named to Ray by
    ``RAY_AUTH_TOKEN_PATH``) instead of ``~/.ray/auth_token``, which Ray would write with the umask's mode and
    leave behind. The process's Ray environment variables are restored when it stops.
    """

    folder: Path
    saved_env: dict[str, str | None]

    @classmethod
    def create(cls) -> PrivateRay:
        import secrets
        import tempfile

        base = _private_base()
        try:
            folder = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX, dir=base))  # created with mode 0700
        except OSError as exc:
            raise ConfigError(
                f"--ray local: cannot create a private folder for Ray in {base} ({exc.strerror or exc})"
            ) from None
        os.chmod(folder, 0o700)
        private = cls(folder, {name: os.environ.get(name) for name in _AUTH_ENV})
        try:
            if (
                os.environ.get("RAY_AUTH_MODE", "token").strip().lower() == "token"
            ):  # Ray's default for a new local cluster
                token = folder / TOKEN_FILE
                fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32))
                os.chmod(token, 0o600)  # whatever the umask
                os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
                _refresh_ray_auth()
        except BaseException:
            private.remove()
            raise
        return private

    @property
    def temp_dir(self) -> str:
        """Ray's ``_temp_dir`` (Ray chmods it 0777; ``folder`` around it keeps others out)."""
        return str(self.folder / "r")

    def remove(self) -> None:
        """Restore the environment and delete the folder (after Ray stopped; its last processes may still be
        exiting)."""
        changed = any(os.environ.get(name) != value for name, value in self.saved_env.items())
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if changed:
            _refresh_ray_auth()
        for attempt in range(20):
            shutil.rmtree(self.folder, ignore_errors=True)
            if not os.path.lexists(self.folder):
                return
            time.sleep(0.1 * (attempt + 1))


def raise_init_error(settings: RaySettings, exc: Exception) -> None:
    """Ray's failure to start or join (ConnectionError, RuntimeError, ValueError, ...) as one line."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if settings.address == "auto":
        why = "" if "could not find any running ray instance" in text.lower() else f" ({text})"
        raise ConfigError(
            f"--ray auto found no Ray cluster running on this machine{why}: "
            "start one with 'ray start --head', or use --ray local"
        ) from None
    hint = ""
    if settings.address != LOCAL and os.environ.get("RAY_AUTH_MODE") != "token":
        hint = (
            "; if the cluster uses Ray's token authentication (the default of 'ray start' in Ray 2.60), "
            "set RAY_AUTH_MODE=token here and give this machine the cluster's token "
            "(~/.ray/auth_token or RAY_AUTH_TOKEN)"
        )
    raise ConfigError(f"could not start or join Ray at {settings.address}: {text}{hint}") from None
