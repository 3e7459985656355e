"""Exceptions that the CLI turns into one-line messages and a non-zero exit.

Anything a user can cause (a bad flag, a missing file, a corrupt checkpoint)
raises a :class:`RobenchError` subclass; the CLI prints ``robench: error: ...``
and exits with the class's ``exit_code``. Any other exception is a bug.
"""

from __future__ import annotations


class RobenchError(Exception):
    """Base class for errors caused by the user's input or environment."""

    exit_code: int = 1


class UnknownNameError(RobenchError, KeyError):
    """A name that is not in a registry (dataset, architecture, defense, ...)."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(RobenchError, ValueError):
    """A parameter or option value that does not make sense."""

    exit_code = 2


class DatasetError(RobenchError):
    """A dataset that cannot be found or read."""


class BundleError(RobenchError):
    """A checkpoint bundle that is missing, unsafe, corrupt or inconsistent."""
