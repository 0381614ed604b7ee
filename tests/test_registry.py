import pytest

from medseg.errors import ConfigError
from medseg.registry import Registry


def test_register_get_names_and_describe():
    reg = Registry("thing")

    @reg.register("alpha")
    def alpha():
        """First thing.

        More text.
        """
        return 1

    reg.register("beta", description="second")(lambda: 2)
    assert reg.get("alpha")() == 1
    assert reg.names() == ["alpha", "beta"]
    assert reg.names("a*") == ["alpha"]
    assert reg.describe("alpha") == "First thing."
    assert reg.describe("beta") == "second"
    assert "alpha" in reg


def test_unknown_name_lists_choices_and_suggests():
    reg = Registry("model")
    reg.register("unet")(lambda: None)
    reg.register("unet_tiny")(lambda: None)
    with pytest.raises(
        ConfigError, match=r"unknown model 'unte'. Did you mean unet.*Choices: unet, unet_tiny"
    ):
        reg.get("unte")


def test_duplicate_registration_is_an_error():
    reg = Registry("model")
    reg.register("a")(lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: None)
