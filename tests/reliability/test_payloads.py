"""Crafted pickles against every reader of pickled files: each is refused, names its file, and runs nothing.

Each payload would ``touch`` a marker file if any of its code ran. The entry points are the public loaders a user
reaches with a file of their own: insightface ``.bin`` pairs, CIFAR-style batches (torchvision, with and without
checksums), open_clip local weights, the published-checkpoint backbone and head, timm weights and the generic
checkpoint loader, each fed torch's zip format, the legacy format and a TorchScript archive. A source scan keeps
new ``torch.load`` / ``np.load`` calls safe.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import re
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import overspec
from overspec.data.base import DatasetLayoutError
from overspec.data.formats import SplitRequest
from overspec.data.formats.bin_pairs import read_bin
from overspec.models import ModelSpec, load_model
from overspec.models.base import ModelLoadError
from overspec.models.published import load_published_head
from overspec.safeload import SafeLoadError, load_torch_checkpoint

PROTOCOLS = (0, 2, 4, 5)


class _Call:
    """Pickles as ``func(*args)``; callable so that pickle accepts it as the function of another reduce."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):
        raise AssertionError("only pickled, never called")


class _WithState:
    """Pickles as an allowed constructor call followed by BUILD with ``state`` (the ``__setstate__`` route)."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return np.dtype, ("f8",), self.state


def _touch(marker: Path) -> str:
    return f"touch {marker}"


def _python(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')"


def _valid_bin_with(item) -> tuple:
    """An otherwise well-formed ``.bin`` payload (two buffers, one flag) with ``item`` as a buffer."""
    return [b"\xff\xd8not-a-real-jpeg", item], [True]


#: name -> builder(marker) of a pickled object (dumped at every protocol in PROTOCOLS).
OBJECT_PAYLOADS: dict[str, Callable[[Path], object]] = {
    "posix.system": lambda m: _Call(os.system, _touch(m)),
    "subprocess.Popen": lambda m: _Call(subprocess.Popen, ["touch", str(m)]),
    "subprocess.check_output": lambda m: _Call(subprocess.check_output, ["touch", str(m)]),
    "builtins.eval": lambda m: _Call(builtins.eval, _python(m)),
    "builtins.exec": lambda m: _Call(builtins.exec, _python(m)),
    "getattr(__import__)": lambda m: _Call(_Call(builtins.getattr, _Call(builtins.__import__, "os"), "system"),
                                           _touch(m)),
    "nested in a valid structure": lambda m: _valid_bin_with({"a": [(1, [_Call(os.system, _touch(m))])]}),
    "BUILD state": lambda m: _valid_bin_with(_WithState({"x": _Call(os.system, _touch(m))})),
}


def _text(marker: Path) -> bytes:
    return f"V{_touch(marker)}\n".encode()


#: name -> builder(marker) of hand-written pickle bytes (opcodes pickle.dumps never emits for these).
RAW_PAYLOADS: dict[str, Callable[[Path], bytes]] = {
    "os.system GLOBAL protocol 0": lambda m: b"cos\nsystem\n(" + _text(m) + b"tR.",
    "os.system GLOBAL protocol 2": lambda m: b"\x80\x02cos\nsystem\n(" + _text(m) + b"tR.",
    "os.system STACK_GLOBAL protocol 4": lambda m: b"\x80\x04\x8c\x02os\x8c\x06system\x93(" + _text(m) + b"tR.",
    "INST opcode": lambda m: b"(" + _text(m) + b"ios\nsystem\n.",
    "OBJ opcode": lambda m: b"(cos\nsystem\n" + _text(m) + b"o.",
    "builtins.getattr of an allowed global": lambda m: (
        b"\x80\x02cbuiltins\ngetattr\n(cnumpy\ndtype\nV__init__\ntR."),
    "dotted lookup chain from an allowed module": lambda m: (
        b"\x80\x04\x8c\x15numpy.core.multiarray\x8c\x18_reconstruct.__globals__\x93."),
    "Python-2 __builtin__.eval": lambda m: b"c__builtin__\neval\n(V" + _python(m).encode() + b"\ntR.",
}


def _payload_cases() -> list:
    cases = [pytest.param("object", name, protocol, id=f"{name}-p{protocol}")
             for name in OBJECT_PAYLOADS for protocol in PROTOCOLS]
    return cases + [pytest.param("raw", name, None, id=name) for name in RAW_PAYLOADS]


def _pickle_bytes(kind: str, name: str, protocol: int | None, marker: Path) -> bytes:
    if kind == "raw":
        return RAW_PAYLOADS[name](marker)
    return pickle.dumps(OBJECT_PAYLOADS[name](marker), protocol=protocol)


def _torch_zip(pickled: bytes) -> bytes:
    """A checkpoint in torch's zip format whose ``data.pkl`` is ``pickled`` (as if written by ``torch.save``)."""
    template = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, template)
    out = io.BytesIO()
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = pickled if info.filename.endswith("/data.pkl") else source.read(info)
            target.writestr(info.filename, data)
    return out.getvalue()


class _Scripted(torch.nn.Module):
    """The smallest module ``torch.jit.script`` turns into a TorchScript archive (``code/``, ``data.pkl``, storages)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def _torchscript_zip(pickled: bytes) -> bytes:
    """A TorchScript archive (OpenAI's ``ViT-B-16.pt`` format) whose ``data.pkl`` is ``pickled``."""
    import warnings

    template = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; the test only writes the archive format with it
        torch.jit.save(torch.jit.script(_Scripted()), template)
    out = io.BytesIO()
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(info.filename, pickled if info.filename.endswith("/data.pkl") else source.read(info))
    return out.getvalue()


#: container -> writer of a checkpoint file around pickled bytes.
CONTAINERS: dict[str, Callable[[bytes], bytes]] = {
    "zip": _torch_zip,
    "legacy": lambda pickled: pickled,
    "torchscript": _torchscript_zip,
}


# ----------------------------------------------------------------------------------------------------------------
# Entry points: (file name to write, loader(path, tmp_path)).


def _load_bin(path: Path, tmp_path: Path) -> object:
    return read_bin(path)


def _cifar_split(path: Path, verify_checksums: bool) -> object:
    """Put ``path``'s bytes in every file of a CIFAR-10 folder and load its test split through the format."""
    from overspec.data.formats.torchvision import load_split

    root = path.parent / "cifar"
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"):
        (batches / name).write_bytes(path.read_bytes())
    options = {"class": "CIFAR10", "verify_checksums": verify_checksums}
    return load_split(SplitRequest("evil-cifar", root, "test", "cifar-10-batches-py/...", options))


def _load_cifar_unchecked(path: Path, tmp_path: Path) -> object:
    return _cifar_split(path, verify_checksums=False)


def _load_cifar_checked(path: Path, tmp_path: Path) -> object:
    return _cifar_split(path, verify_checksums=True)


def _load_open_clip(path: Path, tmp_path: Path) -> object:
    return load_model(ModelSpec(name="evil", architecture="micro-clip", weights=str(path)), cache_dir=tmp_path)


def _load_published(path: Path, tmp_path: Path) -> object:
    spec = ModelSpec(name="evil", source="published", architecture="micro-clip", quick_gelu=True,
                     weights=str(path), options={"lora_alpha": 8})
    return load_model(spec, cache_dir=tmp_path)


def _load_published_head(path: Path, tmp_path: Path) -> object:
    return load_published_head(path)


def _load_timm(path: Path, tmp_path: Path) -> object:
    return load_model(ModelSpec(name="evil", source="timm", architecture="test_resnet", text=False,
                                weights=str(path)), cache_dir=tmp_path)


def _load_checkpoint(path: Path, tmp_path: Path) -> object:
    return load_torch_checkpoint(path)


def _cifar_test_batch(path: Path) -> str:
    """The first batch the test split unpickles."""
    return str(path.parent / "cifar" / "cifar-10-batches-py" / "test_batch")


def _cifar_root(path: Path) -> str:
    """torchvision's MD5 check fails before any unpickling and names the dataset folder, not a batch file."""
    return str(path.parent / "cifar")


#: reader -> (file name, loader, what the error must name: the file unless said otherwise).
PICKLE_READERS = {
    "insightface .bin": ("evil.bin", _load_bin, str),
    "CIFAR batch, checksums off": ("test_batch", _load_cifar_unchecked, _cifar_test_batch),
    "CIFAR batch, checksums on": ("test_batch", _load_cifar_checked, _cifar_root),
}
TORCH_READERS = {
    "open_clip local weights": ("evil.pt", _load_open_clip, str),
    "published backbone": ("evil.pth", _load_published, str),
    "published head": ("evil_header.pth", _load_published_head, str),
    "timm weights": ("evil.pth", _load_timm, str),
    "load_torch_checkpoint": ("evil.bin", _load_checkpoint, str),
}
#: What refusing a file may raise: all are errors the CLI reports in one line with exit status 2.
REFUSALS = (SafeLoadError, ModelLoadError, DatasetLayoutError)


def _assert_refused(load: Callable[[Path, Path], object], path: Path, tmp_path: Path, marker: Path,
                    named: Callable[[Path], str] = str) -> None:
    with pytest.raises(REFUSALS) as info:
        load(path, tmp_path)
    assert named(path) in str(info.value), f"the error does not name {named(path)}: {info.value}"
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("reader", list(PICKLE_READERS))
@pytest.mark.parametrize(("kind", "name", "protocol"), _payload_cases())
def test_pickle_readers_refuse_payloads(tmp_path, reader, kind, name, protocol):
    marker = tmp_path / "pwned"
    filename, load, named = PICKLE_READERS[reader]
    path = tmp_path / filename
    path.write_bytes(_pickle_bytes(kind, name, protocol, marker))
    _assert_refused(load, path, tmp_path, marker, named)


@pytest.mark.parametrize("container", list(CONTAINERS))
@pytest.mark.parametrize("reader", list(TORCH_READERS))
@pytest.mark.parametrize(("kind", "name", "protocol"), _payload_cases())
def test_checkpoint_readers_refuse_payloads(tmp_path, micro_config_file, reader, container, kind, name, protocol):
    marker = tmp_path / "pwned"
    filename, load, _ = TORCH_READERS[reader]
    pickled = _pickle_bytes(kind, name, protocol, marker)
    path = tmp_path / filename
    path.write_bytes(CONTAINERS[container](pickled))
    _assert_refused(load, path, tmp_path, marker)


def test_payload_beside_real_tensors_written_by_torch_save_is_refused(tmp_path, micro_config_file):
    """The realistic attack: a genuine state dict with one extra entry that runs code, saved by ``torch.save``."""
    import open_clip

    marker = tmp_path / "pwned"
    state = dict(open_clip.create_model("micro-clip", pretrained=None).state_dict())
    state["extra"] = _Call(os.system, _touch(marker))
    for filename, load, _ in TORCH_READERS.values():
        path = tmp_path / filename
        torch.save(state, path)
        _assert_refused(load, path, tmp_path, marker)


def test_payloads_would_run_without_the_guards(tmp_path):
    """The payload table is live: plain ``pickle.loads`` of a sample really creates the marker."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(OBJECT_PAYLOADS["posix.system"](marker), protocol=2))  # noqa: S301 - deliberate
    assert marker.exists()
    marker.unlink()
    pickle.loads(RAW_PAYLOADS["OBJ opcode"](marker))  # noqa: S301 - deliberate
    assert marker.exists()


# ----------------------------------------------------------------------------------------------------------------
# Source scan: every torch.load loads weights only, every np.load refuses pickles, nothing calls pickle.load(s).

SOURCE_ROOT = Path(overspec.__file__).parent
_CALL = re.compile(r"\b(torch\.load|np\.load|numpy\.load|pickle\.loads?|pickle\.Unpickler)\s*\(")


def _calls(text: str) -> list[tuple[int, str, str]]:
    """(line, callee, argument text) of every call matched by ``_CALL``, arguments up to the closing bracket."""
    found = []
    for match in _CALL.finditer(text):
        depth, end = 1, match.end()
        while depth and end < len(text):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        found.append((text.count("\n", 0, match.start()) + 1, match.group(1), text[match.end():end - 1]))
    return found


def _source_calls() -> list[tuple[str, int, str, str]]:
    return [(str(path.relative_to(SOURCE_ROOT)), line, callee, args)
            for path in sorted(SOURCE_ROOT.rglob("*.py")) for line, callee, args in _calls(path.read_text())]


def test_scanner_finds_unsafe_calls():
    sample = "x = torch.load(p)\ny = np.load(f, allow_pickle=True)\nz = pickle.loads(\n  data)\n"
    assert [(line, callee) for line, callee, _ in _calls(sample)] == [(1, "torch.load"), (2, "np.load"),
                                                                      (3, "pickle.loads")]


def test_every_torch_load_in_src_is_weights_only():
    calls = [c for c in _source_calls() if c[2] == "torch.load"]
    assert calls, "expected at least the checkpoint loader of overspec.safeload"
    unsafe = [f"{file}:{line}" for file, line, _, args in calls if not re.search(r"weights_only\s*=\s*True", args)]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


def test_np_load_never_allows_pickles():
    calls = [c for c in _source_calls() if c[2] in ("np.load", "numpy.load")]
    unsafe = [f"{file}:{line}" for file, line, _, args in calls
              if "allow_pickle" in args and not re.search(r"allow_pickle\s*=\s*False", args)]
    assert not unsafe, f"np.load with pickles allowed: {unsafe}"


def test_only_the_restricted_unpickler_unpickles():
    calls = [f"{file}:{line} {callee}" for file, line, callee, _ in _source_calls()
             if callee.startswith("pickle.") and file != "safeload.py"]
    assert not calls, f"pickle used outside overspec.safeload: {calls}"
