"""overspec.files: writes that fail leave nothing behind, folders swap whole, stale temporaries are cleared."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

import overspec
from overspec import files
from overspec.files import (atomic_folder, atomic_write_array, atomic_write_bytes, atomic_write_text, bytes_sha256,
                            combine, file_sha256, remove_stale_temporaries, temporary_name)

SOURCE = Path(overspec.__file__).parent
#: The world builders are converted separately; the package is moving from ``data/world`` to ``world``.
WORLD_PACKAGES = ("data/world", "world")


def _fail_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync(_fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", fsync)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("write", [lambda p: atomic_write_bytes(p, b"new"), lambda p: atomic_write_text(p, "new"),
                                   lambda p: atomic_write_array(p, np.arange(3))], ids=["bytes", "text", "array"])
def test_a_write_that_fails_after_writing_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, write):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    _fail_fsync(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        write(target)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_an_array_write_that_fails_mid_write_leaves_no_file(tmp_path, monkeypatch):
    def save(handle, array, allow_pickle):
        handle.write(b"\x93NUMPY")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(files.np, "save", save)
    with pytest.raises(RuntimeError, match="mid-write"):
        atomic_write_array(tmp_path / "a.npy", np.zeros(4))
    assert list(tmp_path.iterdir()) == []


def test_writes_create_the_folder_and_round_trip(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "a" / "c.txt", "é\n")
    atomic_write_array(tmp_path / "a" / "d.npy", np.arange(5, dtype=np.int16))
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a" / "c.txt").read_bytes() == "é\n".encode()
    assert np.load(tmp_path / "a" / "d.npy", allow_pickle=False).tolist() == [0, 1, 2, 3, 4]
    assert _leftovers(tmp_path / "a") == []


def test_atomic_folder_failure_leaves_the_old_folder_intact(tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "state.json").write_text("old")
    with pytest.raises(RuntimeError, match="killed"), atomic_folder(target) as folder:
        (folder / "state.json").write_text("half")
        raise RuntimeError("killed")
    assert [p.name for p in target.iterdir()] == ["state.json"]
    assert (target / "state.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_atomic_folder_success_swaps_the_whole_folder(tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "stale.bin").write_text("old")
    with atomic_folder(target) as folder:
        assert folder.parent == tmp_path and folder != target and not any(folder.iterdir())
        (folder / "state.json").write_text("new")
        assert (target / "stale.bin").exists()  # nothing replaced before the block has finished
    assert [p.name for p in target.iterdir()] == ["state.json"]
    assert (target / "state.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


@pytest.mark.parametrize("existing", ["absent", "file"])
def test_atomic_folder_creates_or_replaces_a_file(tmp_path, existing):
    target = tmp_path / "sub" / "folder"
    if existing == "file":
        target.parent.mkdir()
        target.write_text("a file")
    with atomic_folder(target) as folder:
        (folder / "x").write_text("x")
    assert target.is_dir() and (target / "x").read_text() == "x"
    assert sorted(p.name for p in target.parent.iterdir()) == ["folder"]


def test_remove_stale_temporaries_clears_only_hidden_temporaries(tmp_path):
    stale_file = temporary_name(tmp_path / "units.json")
    stale_file.write_text("half")
    stale_folder = temporary_name(tmp_path / "step-0000002")
    stale_folder.mkdir()
    (stale_folder / "state.json").write_text("half")
    for name in ("keep.json", "visible.tmp", ".hidden", ".lock"):
        (tmp_path / name).write_text("keep")
    assert remove_stale_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", ".lock", "keep.json", "visible.tmp"]
    assert remove_stale_temporaries(tmp_path) == 0
    assert remove_stale_temporaries(tmp_path / "missing") == 0


def test_temporary_names_are_hidden_unique_siblings(tmp_path):
    names = {temporary_name(tmp_path / "a.bin") for _ in range(20)}
    assert len(names) == 20
    assert all(n.parent == tmp_path and n.name.startswith(".a.bin.") and n.name.endswith(".tmp") for n in names)


def test_hashes_and_the_fingerprint_convention(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert file_sha256(tmp_path / "f") == bytes_sha256(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert combine("a", "b") == hashlib.blake2b(b"a|b", digest_size=16).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{32}", combine("x")) and combine("a", "b") != combine("b", "a")


def _in_world_package(path: Path) -> bool:
    relative = path.relative_to(SOURCE).as_posix()
    return any(relative.startswith(f"{package}/") for package in WORLD_PACKAGES)


def test_only_overspec_files_renames_files_into_place():
    offenders = [str(path.relative_to(SOURCE)) for path in sorted(SOURCE.rglob("*.py"))
                 if "os.replace(" in path.read_text(encoding="utf-8")
                 and path != SOURCE / "files.py" and not _in_world_package(path)]
    assert offenders == [], f"write through overspec.files instead of os.replace in {offenders}"
