"""The allow-listed unpickler refuses code-running pickles before anything runs; checkpoints load weights only."""

from __future__ import annotations

import os
import pickle
import subprocess

import numpy as np
import pytest
import torch

from overspec.safeload import (
    NUMPY_ARRAY_GLOBALS,
    UnreadableFileError,
    UnsafeFileError,
    load_torch_checkpoint,
    restricted_load_file,
    restricted_loads,
)


class _Payload:
    """Pickles as a call of ``func(*args)``, the classic pickle exploit."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _global_pickle(module: str, name: str, arg: str) -> bytes:
    """Protocol-0 pickle calling ``module.name(arg)``, written opcode by opcode."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


def test_os_system_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps(([_Payload(os.system, f"touch {marker}")], [True]), protocol=2)
    with pytest.raises(UnsafeFileError, match=r"system") as info:
        restricted_loads(data, NUMPY_ARRAY_GLOBALS, source="evil.bin")
    assert "evil.bin" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name", "refused"),
    [
        ("os", "system", "os.system"),
        ("posix", "system", "posix.system"),
        ("subprocess", "Popen", "subprocess.Popen"),
        ("builtins", "eval", "builtins.eval"),
        ("__builtin__", "eval", "builtins.eval"),  # Python-2 spelling is mapped, then refused
        ("numpy", "load", "numpy.load"),
        ("numpy.core.multiarray", "_reconstruct.__globals__", "numpy.core.multiarray._reconstruct.__globals__"),
    ],
)
def test_every_unlisted_global_is_refused_with_its_name(tmp_path, module, name, refused):
    path = tmp_path / "x.bin"
    path.write_bytes(_global_pickle(module, name, "echo hi"))
    with pytest.raises(UnsafeFileError) as info:
        restricted_load_file(path, NUMPY_ARRAY_GLOBALS)
    assert info.value.global_name == refused
    assert str(path) in str(info.value)


def test_payload_nested_deep_inside_allowed_containers_is_refused(tmp_path):
    marker = tmp_path / "nested"
    inner = {"a": [(1, 2, [_Payload(subprocess.call, ["touch", str(marker)])])]}
    data = pickle.dumps(([np.zeros((3, 1), np.uint8), inner], [False]), protocol=4)
    with pytest.raises(UnsafeFileError, match="subprocess.call"):
        restricted_loads(data, NUMPY_ARRAY_GLOBALS)
    assert not marker.exists()


def test_persistent_ids_are_refused():
    data = b"\x80\x02P0\n."  # PERSID opcode
    with pytest.raises(UnsafeFileError, match="persistent"):
        restricted_loads(data, NUMPY_ARRAY_GLOBALS)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_numpy_arrays_bytes_and_bools_load_under_every_protocol(protocol):
    array = np.arange(12, dtype=np.uint8).reshape(-1, 1)
    data = pickle.dumps(([array, b"\xff\xd8raw"], [True, False]), protocol=protocol)
    (buffers, flags) = restricted_loads(data, NUMPY_ARRAY_GLOBALS)
    np.testing.assert_array_equal(buffers[0], array)
    assert buffers[1] == b"\xff\xd8raw" and flags == [True, False]


def test_truncated_pickle_is_unreadable_and_named(tmp_path):
    path = tmp_path / "cut.bin"
    path.write_bytes(pickle.dumps(([b"abc"], [True]), protocol=4)[:-5])
    with pytest.raises(UnreadableFileError, match="cut.bin"):
        restricted_load_file(path, NUMPY_ARRAY_GLOBALS)


def test_torch_checkpoint_loads_tensors(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.arange(4.0), "epoch": 3}, path)
    state = load_torch_checkpoint(path)
    assert torch.equal(state["weight"], torch.arange(4.0)) and state["epoch"] == 3


def test_torch_checkpoint_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "torch_pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(1), "x": _Payload(os.system, f"touch {marker}")}, path)
    with pytest.raises(UnsafeFileError, match="evil.pt") as info:
        load_torch_checkpoint(path)
    assert "system" in info.value.global_name
    assert not marker.exists()


def test_safetensors_checkpoint_and_corrupt_file(tmp_path):
    from safetensors.torch import save_file

    good = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(2, 3)}, str(good))
    assert load_torch_checkpoint(good)["w"].shape == (2, 3)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(UnreadableFileError, match="bad.safetensors"):
        load_torch_checkpoint(bad)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_torch_checkpoint(tmp_path / "nothing.pt")
