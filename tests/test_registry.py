import pytest

from overspec.registry import Registry, RegistryError


def test_unknown_name_suggests_nearest():
    reg = Registry("dataset")
    reg.register("cifar10", 1)
    reg.register("cifar100", 2)
    with pytest.raises(RegistryError, match="unknown dataset 'cifar1O'.*'cifar10'"):
        reg.get("cifar1O")


def test_collision_is_an_error_and_overwrite_is_explicit():
    reg = Registry("model")
    reg.register("a", 1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a", 2)
    reg.register("a", 3, overwrite=True)
    assert reg.get("a") == 3


def test_lazy_entries_resolve_on_first_get():
    reg = Registry("thing")
    reg.register_lazy("join", "os.path:join")
    assert "join" in reg and reg.names() == ["join"]
    import os.path

    assert reg.get("join") is os.path.join
    with pytest.raises(ValueError, match="module:attr"):
        reg.register_lazy("bad", "os.path.join")
