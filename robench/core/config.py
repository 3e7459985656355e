"""Typed, validated dataclass configs: ``KEY=VALUE`` overrides and constraints declared on the fields.

One mechanism for every config object (attack, defense and detector
hyper-parameters, training config): unknown keys get a did-you-mean error and
values are coerced to the field's declared type (:func:`replace_fields`), and
each field's constraint is declared once, as field metadata,

    steps: int = positive_int(10)
    eps: float = finite(8 / 255, low=0, low_open=True)
    objective: str = choice("ce", *OBJECTIVES)

and checked by :func:`validate_fields`, which :class:`Configurable` runs after
``__init__`` (so also after every ``dataclasses.replace``). A subclass that
only changes a default (``eps: float = 0.1``) keeps the constraint its base
declared. Checks that span fields stay in the class's own ``__post_init__``,
after ``super().__post_init__()``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from robench.core.errors import ConfigError
from robench.core.registry import did_you_mean

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
        if (
            isinstance(value, str)
            and value.lower() in {"none", "null"}
            and len(options) < len(typing.get_args(annotation))
        ):
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


# ---------------------------------------------------------------- field constraints

_CONSTRAINT_KEY = "robench.constraint"


@dataclasses.dataclass(frozen=True)
class Constraint:
    """What a field's value must be: ``description`` completes "KEY must be ...", ``accepts`` checks it."""

    description: str
    accepts: Callable[[Any], bool]
    hint: Callable[[Any], str] | None = None  # extra text for a rejected value (e.g. did-you-mean)

    def problem(self, key: str, value: Any) -> str | None:
        """``None`` if ``value`` is acceptable, else the one-line reason."""
        if self.accepts(value):
            return None
        return f"{key} must be {self.description}, got {value!r}{self.hint(value) if self.hint else ''}"


def constrained(default: Any, constraint: Constraint) -> Any:
    """A dataclass field with ``default`` and ``constraint`` in its metadata (the helpers below build these)."""
    return dataclasses.field(default=default, metadata={_CONSTRAINT_KEY: constraint})


def _real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _noted(description: str, note: str | None) -> str:
    return f"{description} ({note})" if note else description


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def _in_range(value: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return high is None or not (value > high or (high_open and value == high))


def integer(default: Any, *, low: int | None = None, high: int | None = None, note: str | None = None) -> Any:
    """An int field (not a bool), optionally within ``low <= value <= high``."""
    text = _noted("an integer" + _range_text(low, high, False, False), note)
    return constrained(default, Constraint(text, lambda v: _int(v) and _in_range(v, low, high, False, False)))


def positive_int(default: Any, *, note: str | None = None) -> Any:
    """An int field >= 1 (iterations, samples, passes)."""
    return integer(default, low=1, note=note)


def finite(
    default: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    note: str | None = None,
) -> Any:
    """A finite real field (NaN and +-inf are refused), optionally bounded; ``*_open`` makes a bound strict.

    ``optional`` also accepts None (say in ``note`` what None means).
    """
    text = "a finite number" + _range_text(low, high, low_open, high_open) + (" or None" if optional else "")

    def accepts(value: Any) -> bool:
        if value is None:
            return optional
        return (
            _real(value)
            and (isinstance(value, int) or math.isfinite(value))
            and _in_range(value, low, high, low_open, high_open)
        )

    return constrained(default, Constraint(_noted(text, note), accepts))


def choice(default: Any, *options: str, note: str | None = None) -> Any:
    """A field whose value is one of ``options``; a typo gets a did-you-mean hint."""
    known = list(options)
    if default not in known:
        raise ValueError(f"default {default!r} is not one of {known}")
    text = _noted("one of " + ", ".join(known), note)
    return constrained(default, Constraint(text, lambda v: v in known, lambda v: did_you_mean(str(v), known)))


def boolean(default: Any, *, note: str | None = None) -> Any:
    """A bool field (true or false; not 0 / 1)."""
    return constrained(default, Constraint(_noted("true or false", note), lambda v: isinstance(v, bool)))


def field_like(cls: type, name: str) -> Any:
    """A new field with the default and constraint of dataclass ``cls``'s field ``name`` (to share a parameter)."""
    original = next(f for f in dataclasses.fields(cls) if f.name == name)
    return dataclasses.field(default=original.default, metadata=original.metadata)


def field_constraints(cls: type) -> dict[str, Constraint]:
    """The constraint of every init field of dataclass ``cls``, looked up through its bases.

    A subclass that redeclares a field only to change its default keeps the
    constraint of the nearest base that declared one.
    """
    found: dict[str, Constraint] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        for klass in cls.__mro__:
            declared = vars(klass).get("__dataclass_fields__", {}).get(f.name)
            if declared is not None and _CONSTRAINT_KEY in declared.metadata:
                found[f.name] = declared.metadata[_CONSTRAINT_KEY]
                break
    return found


def validate_fields(obj: Any, what: str) -> None:
    """Check every constrained init field of dataclass ``obj``; raise a one-line ConfigError at the first bad one."""
    for key, constraint in field_constraints(type(obj)).items():
        problem = constraint.problem(key, getattr(obj, key))
        if problem is not None:
            raise ConfigError(f"{what}: {problem}")


# ---------------------------------------------------------------- registered configs


class Configurable:
    """Mixin for registered dataclasses whose init fields are hyper-parameters (attacks, defenses, detectors).

    ``family_defaults`` maps a dataset family to the paper's values for it;
    ``for_dataset`` applies them, then the user's overrides. ``__post_init__``
    checks the fields' constraints (:func:`validate_fields`); subclasses that
    add a ``__post_init__`` call ``super().__post_init__()`` first.

    ``label`` is the name shown in tables; a class that sets its own ``name``
    but no ``label`` gets its name as label.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    kind: ClassVar[str] = "config"  # what it is, for error messages: "defense", "detector", ...
    family_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in vars(cls) and "label" not in vars(cls):
            cls.label = cls.name

    def __post_init__(self) -> None:
        validate_fields(self, self.describe())

    @classmethod
    def describe(cls) -> str:
        """``kind 'name'``, the subject of this config's error messages (e.g. ``attack 'pgd'``)."""
        return f"{cls.kind} '{getattr(cls, 'name', cls.__name__)}'"

    @classmethod
    def for_dataset(cls, family: str, overrides: Mapping[str, Any] | None = None):
        """The defaults for ``family``, then ``overrides`` (type-checked, did-you-mean on typos)."""
        what = cls.describe()
        base = replace_fields(cls(), cls.family_defaults.get(family, {}), what)
        return replace_fields(base, overrides or {}, what)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]):
        """Rebuild from stored ``params()``."""
        return replace_fields(cls(), params, cls.describe())

    def params(self) -> dict[str, Any]:
        """The hyper-parameters (init fields) as plain values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}  # type: ignore[arg-type]
