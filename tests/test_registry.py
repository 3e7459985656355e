import pytest

from robench.errors import ConfigError, UnknownNameError
from robench.registry import Registry, did_you_mean


def test_get_and_names():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)

    @reg.register("beta")
    def beta():
        return 2

    assert reg.get("alpha") == 1
    assert reg.get("beta")() == 2
    assert reg.names() == ["alpha", "beta"]
    assert "alpha" in reg and "gamma" not in reg and len(reg) == 2


def test_unknown_name_suggests_close_match():
    reg: Registry[int] = Registry("widget")
    reg.register("softmax", 1)
    with pytest.raises(UnknownNameError) as info:
        reg.get("sofmax")
    message = str(info.value)
    assert "unknown widget 'sofmax'" in message
    assert "did you mean 'softmax'" in message
    assert "\n" not in message


def test_duplicate_registration_is_refused_unless_overwrite():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(ConfigError):
        reg.register("a", 2)
    reg.register("a", 3, overwrite=True)
    assert reg.get("a") == 3


def test_did_you_mean_is_empty_for_far_names():
    assert did_you_mean("zzzz", ["softmax", "gm"]) == ""
