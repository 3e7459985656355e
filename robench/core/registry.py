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

A registry may also resolve names it does not hold: ``add_resolver(prefix, build)``
makes ``get("prefix:NAME")`` call ``build("NAME")`` on first use and cache the result
(the attacks of the peer libraries, ``ATTACKS.get("torchattacks:APGD")``, are built
this way, :mod:`robench.attacks.library`). Resolved names are not part of
``names()``, which lists the registry's own entries only.
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
        # prefix -> (build, choices): "prefix:NAME" is build("NAME"), cached in _resolved; choices() lists the NAMEs
        self._resolvers: dict[str, tuple[Callable[[str], T], Callable[[], list[str]] | None]] = {}
        self._resolved: dict[str, T] = {}

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
                    f"cannot register {_describe(item)} as a {self.kind}: it inherits the name '{own}' instead of "
                    "setting its own"
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
            raise ConfigError(
                f"cannot register {_describe(item)} as {self.kind} '{name}': a {self.kind} must be {wanted}"
            )

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

    def add_resolver(
        self,
        prefix: str,
        build: Callable[[str], T],
        choices: Callable[[], list[str]] | None = None,
        *,
        overwrite: bool = False,
    ) -> None:
        """Resolve ``PREFIX:NAME`` by ``build(NAME)`` on first lookup, then from a cache.

        ``build`` raises a one-line robench error for a NAME it cannot build (an
        :class:`UnknownNameError` with did-you-mean over ``choices()``, a ``ConfigError`` when
        what it needs is missing); what it returns must fit the registry's ``base``.
        ``choices`` (optional) lists the NAMEs it knows, for listings; it may import things.
        """
        if not prefix or ":" in prefix or not prefix.strip() == prefix:
            raise ConfigError(f"a {self.kind} resolver prefix must be a non-empty word without ':', got {prefix!r}")
        if prefix in self._resolvers and not overwrite:
            raise ConfigError(f"{self.kind} resolver '{prefix}:' is already added")
        self._resolvers[prefix] = (build, choices)
        for name in [n for n in self._resolved if n.partition(":")[0] == prefix]:
            del self._resolved[name]

    def prefixes(self) -> list[str]:
        """The resolver prefixes (``PREFIX:NAME`` names this registry builds on lookup)."""
        return sorted(self._resolvers)

    def resolvable(self, prefix: str) -> list[str]:
        """The NAMEs resolver ``prefix`` lists (``choices()``; may import its library), [] when it lists none."""
        if prefix not in self._resolvers:
            raise UnknownNameError(
                f"unknown {self.kind} prefix '{prefix}:'{did_you_mean(prefix, self.prefixes())}; known: "
                f"{', '.join(self.prefixes()) or 'none'}"
            )
        choices = self._resolvers[prefix][1]
        return sorted(choices()) if choices is not None else []

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            pass
        if name in self._resolved:
            return self._resolved[name]
        prefix, sep, rest = name.partition(":") if isinstance(name, str) else ("", "", "")
        if sep and prefix in self._resolvers:
            if not rest:
                raise UnknownNameError(f"{self.kind} '{name}' names no {prefix} class: use {prefix}:NAME")
            item = self._resolvers[prefix][0](rest)
            self._check_base(item, name)
            self._resolved[name] = item
            return item
        choices = list(self._items) + ([f"{p}:{rest}" for p in self._resolvers] if sep else [])
        known = ", ".join(sorted(self._items)) or "none"
        also = f"; or {' / '.join(f'{p}:NAME' for p in self.prefixes())}" if self._resolvers else ""
        raise UnknownNameError(f"unknown {self.kind} '{name}'{did_you_mean(str(name), choices)}; known: {known}{also}")

    def names(self) -> list[str]:
        """The registry's own entries (resolved ``PREFIX:NAME`` entries are not listed)."""
        return sorted(self._items)

    def in_order(self) -> list[T]:
        """The registered objects in registration order (e.g. the summary's metric columns)."""
        return list(self._items.values())

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        """Registered, or a ``PREFIX:NAME`` a resolver builds (built and cached by this test)."""
        if name in self._items or name in self._resolved:
            return True
        if not isinstance(name, str) or name.partition(":")[0] not in self._resolvers:
            return False
        try:
            self.get(name)
        except (UnknownNameError, ConfigError):
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
