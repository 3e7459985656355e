"""Typed overrides of dataclass configs from ``KEY=VALUE`` strings (CLI flags, suite files).

One mechanism for every config object (defense hyper-parameters, training
config, later attack parameters): unknown keys get a did-you-mean error and
values are coerced to the field's declared type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from robench.errors import ConfigError
from robench.registry import did_you_mean

C = TypeVar("C")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_assignments(items: Iterable[str], what: str = "option") -> dict[str, str]:
    """Parse ``["a=1", "b=x"]`` into ``{"a": "1", "b": "x"}``."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} '{item}' is not of the form KEY=VALUE")
        parsed[key.strip()] = value.strip()
    return parsed


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if isinstance(value, str) and value.lower() in {"none", "null"} and len(options) < len(typing.get_args(annotation)):
            return None
        if value is None:
            return None
        annotation = options[0] if len(options) == 1 else annotation
        if len(options) != 1:
            return value
    if not isinstance(value, str):
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if annotation in (int, float, str, bool) and not isinstance(value, annotation):
            raise ConfigError(f"'{key}' must be {annotation.__name__}, got {value!r}")
        return value
    try:
        if annotation is bool:
            lowered = value.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(value)
        if annotation in (int, float):
            return annotation(value)
    except ValueError:
        raise ConfigError(f"'{key}' must be {annotation.__name__}, got '{value}'") from None
    return value


def replace_fields(obj: C, overrides: Mapping[str, Any], what: str) -> C:
    """Return a copy of dataclass ``obj`` with ``overrides`` applied and type-checked."""
    if not overrides:
        return obj
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj) if f.init]  # type: ignore[arg-type]
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(f"{what} has no parameter '{key}'{did_you_mean(key, names)}; known: {', '.join(names)}")
        changes[key] = _coerce(value, hints[key], key)
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


class Configurable:
    """Mixin for registered dataclasses whose init fields are hyper-parameters (defenses, detectors, ...).

    ``family_defaults`` maps a dataset family to the paper's values for it;
    ``for_dataset`` applies them, then the user's overrides.
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "config"  # what it is, for error messages: "defense", "detector", ...
    family_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @classmethod
    def for_dataset(cls, family: str, overrides: Mapping[str, Any] | None = None):
        """The defaults for ``family``, then ``overrides`` (type-checked, did-you-mean on typos)."""
        what = f"{cls.kind} '{cls.name}'"
        base = replace_fields(cls(), cls.family_defaults.get(family, {}), what)
        return replace_fields(base, overrides or {}, what)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]):
        """Rebuild from stored ``params()``."""
        return replace_fields(cls(), params, f"{cls.kind} '{cls.name}'")

    def params(self) -> dict[str, Any]:
        """The hyper-parameters (init fields) as plain values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}  # type: ignore[arg-type]
