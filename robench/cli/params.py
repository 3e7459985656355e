"""Click parameter types shared by the command groups."""

from __future__ import annotations

from typing import Any

import click


class NonEmptyPath(click.Path):
    """A path option that refuses the empty string (which would mean the current folder)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("must not be empty (name a file or folder; '.' for the current folder)", param, ctx)
        return super().convert(value, param, ctx)
