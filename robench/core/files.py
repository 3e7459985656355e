"""Reading the text files a user hands robench (suites, threat files): bounded, regular files only, one line per error.

Every such file goes through :func:`read_user_file` (bytes) or :func:`load_user_toml` (parsed TOML):

- only a regular file is read. A FIFO, a device (``/dev/zero``), a socket or a folder is refused
  from ``os.stat`` before it is opened, and again from ``fstat`` of the descriptor (opened with
  ``O_NONBLOCK``, so a FIFO swapped in between cannot block the open);
- at most :data:`MAX_TEXT_BYTES` (1 MiB) are read: a larger file is refused. robench's own suites
  and threat files are a few KiB;
- TOML is scanned before it is parsed: a key of more than :data:`MAX_KEY_PARTS` dotted parts or
  arrays / inline tables nested more than :data:`MAX_NESTING` deep is refused (Python's
  ``tomllib`` needs memory quadratic in a dotted key's length, and recursion in the nesting);
  a ``RecursionError`` or an over-long integer from the parser is still one line.

Every error is a :class:`UserFileError` (a :class:`~robench.core.errors.ConfigError` whose exit
status is 1: a bad file), one line naming the file. :func:`shown` and :func:`one_line` keep user
text (paths, keys, values) from breaking a message into several lines.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from robench.core.errors import ConfigError, RobenchError

MAX_TEXT_BYTES = (
    1 << 20
)  # 1 MiB: a suite or threat file is a few KiB; the bound keeps a mistaken path from eating memory
MAX_KEY_PARTS = 32  # parts of one dotted key (a.b.c) or table header ([a.b.c])
MAX_NESTING = 32  # arrays and inline tables inside one another
MAX_MESSAGE = 4000  # characters of one error line; the rest is elided


class UserFileError(ConfigError):
    """A user's file that cannot be read as what it should be (missing, not a regular file, too large,
    not UTF-8 / TOML)."""

    exit_code = 1


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def shown(value: Any) -> str:
    """``value`` (a path or user string) for a one-line message: as is, or escaped
    (``repr``) if it holds line breaks or control characters."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    return text if text.isprintable() else repr(text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` with line breaks and other control characters escaped (``\\n``), at most ``limit`` characters."""
    flat = _CONTROL.sub(lambda m: repr(m.group())[1:-1], message)
    if len(flat) > limit:
        flat = f"{flat[:limit]}... ({len(flat) - limit} more characters)"
    return flat


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Re-raise a RobenchError whose message holds user text with line breaks or control characters,
    with them escaped."""
    try:
        yield
    except RobenchError as exc:
        text = str(exc)
        flat = one_line(text)
        if flat == text:
            raise
        try:
            flattened = type(exc)(flat)
        except TypeError:  # an exception class with another constructor
            flattened = ConfigError(flat)
        raise flattened from None


MAX_JSON_BYTES = 256 * 1024**2  # a run.json or baseline robench wrote is far smaller; a bigger file is not one


def read_user_file(path: Path | str, what: str, folder_hint: str = "", limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (``what`` names it in errors, e.g. "threat file"),
    at most ``limit`` of them.

    ``folder_hint`` completes the error for a folder (e.g. "--threats takes folders").
    """
    path = Path(path)
    at = shown(path)
    before = _os_call(os.stat, path, at, what)  # never opened if it is not a regular file
    if not stat.S_ISREG(before.st_mode):
        _refuse_kind(at, before.st_mode, what, folder_hint)
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_NOCTTY", 0)
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_BINARY", 0)
    )
    fd = _os_call(lambda p: os.open(p, flags), path, at, what)
    try:
        opened = os.fstat(fd)  # the file actually opened (it may have been replaced since the stat)
        if not stat.S_ISREG(opened.st_mode):
            _refuse_kind(at, opened.st_mode, what, folder_hint)
        if opened.st_size > limit:
            _refuse_size(at, what, limit)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # grew after the fstat
            _refuse_size(at, what, limit)
        return b"".join(chunks)
    except OSError as exc:
        raise UserFileError(f"{at}: cannot read the {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _os_call(call: Any, path: Path, at: str, what: str) -> Any:
    """``call(path)`` with its OSError (or a NUL byte's ValueError) as one UserFileError line."""
    try:
        return call(path)
    except (FileNotFoundError, NotADirectoryError):
        raise UserFileError(f"{at}: no such {what}") from None
    except PermissionError:
        raise UserFileError(f"{at}: cannot read the {what}: permission denied") from None
    except OSError as exc:
        raise UserFileError(f"{at}: cannot read the {what}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL byte in the path
        raise UserFileError(f"{at}: not a valid file path") from None


def _refuse_kind(at: str, mode: int, what: str, folder_hint: str) -> None:
    kind = _kind(mode)
    hint = f" ({folder_hint})" if folder_hint and stat.S_ISDIR(mode) else ""
    raise UserFileError(f"{at}: is {kind}, not a regular file; a {what} must be a regular file{hint}")


def _refuse_size(at: str, what: str, limit: int) -> None:
    raise UserFileError(f"{at}: larger than {_size(limit)}, the most robench reads of a {what}")


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit:,} bytes"


def decode_text(data: bytes, at: str, what: str) -> str:
    """UTF-8 text (a byte-order mark tolerated, as editors write one); a one-line error naming the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserFileError(
            f"{at}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the {what} as UTF-8"
        ) from None


def load_user_toml(path: Path | str, what: str, folder_hint: str = "") -> tuple[dict[str, Any], bytes]:
    """``path`` read by :func:`read_user_file`, decoded, scanned (:func:`check_toml_shape`) and parsed: (the table,
    the file's bytes)."""
    at = shown(Path(path))
    data = read_user_file(path, what, folder_hint)
    text = decode_text(data, at, what)
    check_toml_shape(text, at)
    try:
        return tomllib.loads(text), data
    except tomllib.TOMLDecodeError as exc:  # its message carries the line and column
        raise UserFileError(f"{at}: not valid TOML: {one_line(str(exc))}") from None
    except RecursionError:
        raise UserFileError(f"{at}: not valid TOML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise UserFileError(f"{at}: not valid TOML: {one_line(str(exc).split(';')[0], 200)}") from None


# Outside strings and comments: bare-key characters and spaces continue a dotted key; any other character
# (besides '.' and quotes) ends it. Only a dotted key has more than one '.' in such a run (a float has one).
_SIGNIFICANT = re.compile(r"[^A-Za-z0-9_\- \t]")
_STRINGS = {
    '"""': re.compile(r'"""(?:[^\\]|\\[\s\S])*?"""(?:"{1,2}(?!"))?'),
    "'''": re.compile(r"'''[\s\S]*?'''(?:'{1,2}(?!'))?"),
    '"': re.compile(r'"(?:[^"\\\n]|\\.)*"'),
    "'": re.compile(r"'[^'\n]*'"),
}


def check_toml_shape(text: str, at: str) -> None:
    """Refuse TOML whose keys have more than MAX_KEY_PARTS dotted parts or whose arrays / inline tables nest deeper than
    MAX_NESTING.

    A conservative scan (strings and comments skipped): it never refuses a file within the bounds;
    a malformed string ends the scan, and the parser then reports it.
    """
    pos, dots, depth = 0, 0, 0
    while True:
        match = _SIGNIFICANT.search(text, pos)
        if match is None:
            return
        char, start = match.group(), match.start()
        if char == ".":
            dots += 1
            if dots >= MAX_KEY_PARTS:
                line = text.count("\n", 0, start) + 1
                raise UserFileError(
                    f"{at}: a key of more than {MAX_KEY_PARTS} dotted parts "
                    f"(line {line}); robench reads at most {MAX_KEY_PARTS}"
                )
            pos = start + 1
        elif char in "\"'":
            quote = char * 3 if text.startswith(char * 3, start) else char
            string = _STRINGS[quote].match(text, start)
            if string is None:  # unterminated: the parser says where
                return
            pos = string.end()
        elif char == "#":
            end = text.find("\n", start)
            if end < 0:
                return
            pos, dots = end, 0
        else:
            dots = 0
            if char in "[{":
                depth += 1
                if depth > MAX_NESTING:
                    line = text.count("\n", 0, start) + 1
                    raise UserFileError(
                        f"{at}: arrays or tables nested more than {MAX_NESTING} "
                        f"deep (line {line}); robench reads at most {MAX_NESTING}"
                    )
            elif char in "]}":
                depth = max(depth - 1, 0)
            pos = start + 1


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


def safe_name(name: Any, where: str) -> str:
    """``name`` if it is safe as one path component (letters, digits, ``.``, ``_``, ``+``, ``-``),
    else a one-line error."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: name {name!r} cannot name a folder: use 1-64 letters, "
            "digits, '.', '_', '+' or '-', starting with a letter or digit"
        )
    return name
