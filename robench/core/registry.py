"""One generic registry for every pluggable kind (datasets, architectures, defenses, ...).

An object registers under its own ``name``, and a registry with a ``base``
refuses anything else, so a new attack, defense or detector is one class plus

    @ATTACKS.register
    @dataclass(frozen=True)
    class MyAttack(Attack):
        name: ClassVar[str] = "my-attack"
        ...

(``ATTACKS.register(MyAttack)`` without the decorator). A class registers in a
registry of classes (``Registry("attack", base=Attack)``: subclasses of Attack),
an instance in a registry of instances (``Registry("architecture",
base=ArchSpec)``). The older ``register("name", obj)`` / ``@register("name")``
forms still work; the name must then equal ``obj.name`` when ``obj`` has one.

Lookups of unknown names raise :class:`~robench.core.errors.UnknownNameError` with
did-you-mean suggestions, so every command that takes a name gets the same
helpful one-line error.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar, overload

from robench.core.errors import ConfigError, UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"


def _describe(obj: Any) -> str:
    return obj.__name__ if isinstance(obj, type) else f"{type(obj).__name__} object"


class Registry(Generic[T]):
    """A name -> object mapping of one kind, e.g. ``Registry[type[Defense]]("defense", base=Defense)``.

    ``base`` (optional) is what every entry must be: a class registered here
    must be a subclass of it, any other object an instance of it.
    """

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._items: dict[str, T] = {}

    @overload
    def register(self, obj: T, /, *, overwrite: bool = ...) -> T: ...

    @overload
    def register(self, name: str, obj: T, /, *, overwrite: bool = ...) -> T: ...

    @overload
    def register(self, name: str, /, *, overwrite: bool = ...) -> Callable[[T], T]: ...

    def register(self, *args: Any, overwrite: bool = False) -> Any:
        """Register an object under its ``name``: ``register(obj)``, also as the decorator ``@register``.

        Transitional forms: ``register(name, obj)`` and the decorator ``@register(name)``; ``name`` must
        then equal ``obj.name`` when the object has a ``name``. Returns the object (or the decorator).
        """
        if len(args) == 1 and isinstance(args[0], str):
            name = args[0]
            return lambda item: self._add(item, name, overwrite)
        if len(args) == 1:
            return self._add(args[0], None, overwrite)
        if len(args) == 2 and isinstance(args[0], str):
            return self._add(args[1], args[0], overwrite)
        raise TypeError("use register(obj), register(name, obj) or @register")

    def _add(self, item: T, explicit: str | None, overwrite: bool) -> T:
        own = getattr(item, "name", None)
        if explicit is None:
            if not isinstance(own, str) or not own:
                raise ConfigError(f"cannot register {_describe(item)} as a {self.kind}: it has no name")
            if isinstance(item, type) and "name" not in vars(item):
                raise ConfigError(
                    f"cannot register {_describe(item)} as a {self.kind}: it inherits the name '{own}' instead of setting its own"
                )
            name = own
        else:
            if own is not None and own != explicit:
                raise ConfigError(f"cannot register {_describe(item)} as {self.kind} '{explicit}': its name is '{own}'")
            name = explicit
        self._check_base(item, name)
        if not overwrite and name in self._items:
            raise ConfigError(f"{self.kind} '{name}' is already registered")
        self._items[name] = item
        return item

    def _check_base(self, item: Any, name: str) -> None:
        base = self.base
        if base is None:
            return
        ok = issubclass(item, base) if isinstance(item, type) else isinstance(item, base)
        if not ok:
            wanted = f"a subclass of {base.__name__}" if isinstance(item, type) else f"a {base.__name__}"
            raise ConfigError(f"cannot register {_describe(item)} as {self.kind} '{name}': a {self.kind} must be {wanted}")

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (for tests and plugins that clean up after themselves)."""
        self.get(name)  # unknown names get the usual did-you-mean error
        return self._items.pop(name)

    @contextmanager
    def registered(self, *objs: T) -> Iterator[tuple[T, ...]]:
        """Register ``objs`` for the duration of a ``with`` block, then remove them again."""
        added: list[str] = []
        try:
            for obj in objs:
                self.register(obj)
                added.append(getattr(obj, "name"))
            yield objs
        finally:
            for name in added:
                self._items.pop(name, None)

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

    def in_order(self) -> list[T]:
        """The registered objects in registration order (e.g. the summary's metric columns)."""
        return list(self._items.values())

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
