import math
from dataclasses import dataclass
from typing import ClassVar

import pytest

from robench.core.config import (
    Configurable,
    boolean,
    choice,
    field_constraints,
    field_like,
    finite,
    integer,
    parse_assignments,
    positive_int,
    replace_fields,
    validate_fields,
)
from robench.core.errors import ConfigError


@dataclass(frozen=True)
class Example:
    steps: int = 10
    rate: float = 0.5
    flag: bool = False
    name: str = "x"
    cap: float | None = None


def test_parse_assignments():
    assert parse_assignments(["a=1", " b = two "]) == {"a": "1", "b": "two"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignments(["novalue"])


def test_strings_are_coerced_to_field_types():
    new = replace_fields(
        Example(), {"steps": "20", "rate": "1e-3", "flag": "yes", "name": "y", "cap": "0.25"}, "example"
    )
    assert new == Example(steps=20, rate=1e-3, flag=True, name="y", cap=0.25)
    assert replace_fields(Example(cap=1.0), {"cap": "none"}, "example").cap is None
    assert replace_fields(Example(), {"rate": 2}, "example").rate == 2.0


def test_unknown_key_and_bad_values_are_one_line_errors():
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        replace_fields(Example(), {"setps": "1"}, "example")
    with pytest.raises(ConfigError, match="'steps' must be int"):
        replace_fields(Example(), {"steps": "ten"}, "example")
    with pytest.raises(ConfigError, match="'flag' must be bool"):
        replace_fields(Example(), {"flag": "maybe"}, "example")


# ---------------------------------------------------------------- constraints declared as field metadata


@dataclass(frozen=True)
class Knobs(Configurable):
    steps: int = positive_int(10)
    keep: int = integer(0, low=0, note="0 = all")
    rate: float = finite(0.5, low=0, low_open=True)
    share: float = finite(0.5, low=0, high=1, low_open=True, high_open=True)
    cap: float | None = finite(None, low=0, optional=True, note="None: no cap")
    mode: str = choice("fast", "fast", "slow")
    flag: bool = boolean(False)
    free: float = 1.0  # no constraint

    name: ClassVar[str] = "knobs"
    kind: ClassVar[str] = "widget"


@dataclass(frozen=True)
class SmallKnobs(Knobs):
    steps: int = 3  # a new default only: the constraint of Knobs.steps still applies

    name: ClassVar[str] = "small-knobs"


def test_defaults_pass_and_every_constraint_is_found_through_the_bases():
    assert Knobs().steps == 10 and SmallKnobs().steps == 3
    assert set(field_constraints(SmallKnobs)) == {"steps", "keep", "rate", "share", "cap", "mode", "flag"}
    assert Knobs(cap=2.0, keep=5, share=0.99, mode="slow", flag=True, free=math.nan).cap == 2.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "widget 'knobs': steps must be an integer >= 1, got 0"),
        ({"steps": True}, "steps must be an integer >= 1, got True"),
        ({"steps": 2.0}, "steps must be an integer >= 1, got 2.0"),
        ({"keep": -1}, "keep must be an integer >= 0 (0 = all), got -1"),
        ({"rate": 0.0}, "rate must be a finite number > 0, got 0.0"),
        ({"rate": math.nan}, "rate must be a finite number > 0, got nan"),
        ({"rate": math.inf}, "rate must be a finite number > 0, got inf"),
        ({"rate": "0.1"}, "rate must be a finite number > 0, got '0.1'"),
        ({"share": 1.0}, "share must be a finite number in (0, 1), got 1.0"),
        ({"cap": -1.0}, "cap must be a finite number >= 0 or None (None: no cap), got -1.0"),
        ({"cap": math.nan}, "got nan"),
        ({"mode": "slwo"}, "mode must be one of fast, slow, got 'slwo' (did you mean 'slow'?)"),
        ({"flag": 1}, "flag must be true or false, got 1"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_config(change, message):
    with pytest.raises(ConfigError) as info:
        Knobs(**change)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_subclass_that_changes_a_default_keeps_the_constraint():
    with pytest.raises(ConfigError, match="widget 'small-knobs': steps must be an integer >= 1, got 0"):
        SmallKnobs(steps=0)


def test_overrides_are_validated_after_coercion():
    assert Knobs.for_dataset("any", {"rate": "2"}).rate == 2.0
    with pytest.raises(ConfigError, match="rate must be a finite number > 0, got nan"):
        Knobs.for_dataset("any", {"rate": "nan"})
    with pytest.raises(ConfigError, match="rate must be a finite number > 0, got inf"):
        Knobs.from_params({"rate": "inf"})


def test_validate_fields_and_field_like():
    @dataclass
    class Shared:
        steps: int = field_like(Knobs, "steps")

    assert Shared().steps == 10
    validate_fields(Shared(), "shared")
    with pytest.raises(ConfigError, match="^shared: steps must be an integer >= 1, got -2$"):
        validate_fields(Shared(steps=-2), "shared")


def test_choice_default_must_be_an_option():
    with pytest.raises(ValueError):
        choice("medium", "fast", "slow")


def test_label_defaults_to_the_name():
    assert Knobs.label == "knobs" and SmallKnobs.label == "small-knobs"
