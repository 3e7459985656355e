from dataclasses import dataclass

import pytest

from robench.config import parse_assignments, replace_fields
from robench.errors import ConfigError


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
    new = replace_fields(Example(), {"steps": "20", "rate": "1e-3", "flag": "yes", "name": "y", "cap": "0.25"}, "example")
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
