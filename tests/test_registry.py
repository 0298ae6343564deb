import pytest

from modelyard.errors import ConfigError, ModelyardError
from modelyard.registry import Registry


def test_register_get_and_list():
    reg = Registry("widget")

    @reg.register("alpha", config=dict, colour="red")
    def alpha():
        return 1

    entry = reg.get("alpha")
    assert entry.obj() == 1 and entry.config is dict and entry.meta == {"colour": "red"}
    assert "alpha" in reg and reg.names() == ["alpha"]


def test_duplicate_name_is_an_error():
    reg = Registry("widget")
    reg.register("alpha")(object)
    with pytest.raises(ModelyardError, match="registered twice"):
        reg.register("alpha")(object)


def test_unknown_name_lists_the_known_ones_and_the_closest():
    reg = Registry("widget")
    for name in ("alpha", "beta"):
        reg.register(name)(object)
    with pytest.raises(ConfigError, match=r"unknown widget 'alpah'. Did you mean 'alpha'\? Known widgets: alpha, beta"):
        reg.get("alpah")
