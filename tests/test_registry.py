import pytest

from robench.core.errors import ConfigError, UnknownNameError
from robench.core.registry import Registry, did_you_mean


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


# ---------------------------------------------------------------- names from the object, base classes


class Widget:
    name = "base-widget"


class Sprocket(Widget):
    name = "sprocket"


class Cog(Widget):
    name = "cog"


class Unnamed(Widget):  # inherits "base-widget"
    pass


def test_name_is_taken_from_the_object():
    reg: Registry[type[Widget]] = Registry("widget", base=Widget)
    assert reg.register(Sprocket) is Sprocket

    @reg.register
    class Gear(Widget):
        name = "gear"

    assert reg.get("sprocket") is Sprocket and reg.get("gear") is Gear
    assert reg.names() == ["gear", "sprocket"]


def test_instances_register_under_their_name_attribute():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Spec:
        name: str
        size: int

    reg: Registry[Spec] = Registry("spec", base=Spec)
    small = reg.register(Spec("small", 1))
    assert reg.get("small") is small
    with pytest.raises(ConfigError, match="must be a Spec"):
        reg.register(Sprocket())


def test_objects_outside_the_base_class_are_refused():
    reg: Registry[type[Widget]] = Registry("widget", base=Widget)

    class Stranger:
        name = "stranger"

    with pytest.raises(ConfigError, match="must be a subclass of Widget") as info:
        reg.register(Stranger)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="must be a subclass of Widget"):
        reg.register("stranger", Stranger)  # the transitional form checks the base too
    assert "stranger" not in reg


def test_explicit_name_must_match_the_objects_name():
    reg: Registry[type[Widget]] = Registry("widget", base=Widget)
    reg.register("sprocket", Sprocket)  # the transitional form, consistent
    with pytest.raises(ConfigError, match="its name is 'cog'"):
        reg.register("gear", Cog)
    with pytest.raises(ConfigError, match="its name is 'cog'"):
        reg.register("gear")(Cog)
    assert reg.names() == ["sprocket"]


def test_a_class_must_set_its_own_name():
    reg: Registry[type[Widget]] = Registry("widget", base=Widget)
    with pytest.raises(ConfigError, match="inherits the name 'base-widget'"):
        reg.register(Unnamed)
    with pytest.raises(ConfigError, match="has no name"):
        Registry("number").register(3)


def test_did_you_mean_for_objects_registered_by_name():
    reg: Registry[type[Widget]] = Registry("widget", base=Widget)
    reg.register(Sprocket)
    with pytest.raises(UnknownNameError, match="did you mean 'sprocket'"):
        reg.get("sprokcet")


def test_unregister_and_temporary_registration():
    reg: Registry[type[Widget]] = Registry("widget", base=Widget)
    reg.register(Sprocket)
    assert reg.unregister("sprocket") is Sprocket and len(reg) == 0
    with pytest.raises(UnknownNameError, match="unknown widget 'sprocket'"):
        reg.unregister("sprocket")
    with reg.registered(Sprocket, Cog):
        assert reg.names() == ["cog", "sprocket"]
    assert len(reg) == 0
    with pytest.raises(ConfigError), reg.registered(Cog, Unnamed):  # a failed registration undoes the others
        pass
    assert len(reg) == 0


def test_every_builtin_entry_is_registered_under_its_own_name_and_base():
    from robench.attacks import ATTACKS, Attack
    from robench.core.data import DATASETS, DatasetSpec
    from robench.core.models import ARCHITECTURES, ArchSpec
    from robench.defenses import DEFENSES, Defense
    from robench.detectors import DETECTORS, Detector

    for registry, base in (
        (ATTACKS, Attack),
        (DEFENSES, Defense),
        (DETECTORS, Detector),
        (ARCHITECTURES, ArchSpec),
        (DATASETS, DatasetSpec),
    ):
        assert registry.base is base
        for name, obj in registry.items():
            assert obj.name == name
            assert issubclass(obj, base) if isinstance(obj, type) else isinstance(obj, base)
