"""One generic registry for every pluggable kind (datasets, architectures, defenses, ...).

Lookups of unknown names raise :class:`~robench.errors.UnknownNameError` with
did-you-mean suggestions, so every command that takes a name gets the same
helpful one-line error.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from robench.errors import ConfigError, UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"


class Registry(Generic[T]):
    """A name -> object mapping of one kind, e.g. ``Registry[DatasetSpec]("dataset")``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str, obj: T, *, overwrite: bool = ...) -> T: ...

    @overload
    def register(self, name: str, obj: None = ..., *, overwrite: bool = ...) -> Callable[[T], T]: ...

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False):
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""

        def add(item: T) -> T:
            if not overwrite and name in self._items:
                raise ConfigError(f"{self.kind} '{name}' is already registered")
            self._items[name] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, list(self._items))}; known: {known}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
