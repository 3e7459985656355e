"""The ``robench`` command line (one module per command group)."""

from robench.cli.commands import main

__all__ = ["main"]
