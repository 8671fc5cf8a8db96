"""World content checks: every check hashes, except repeats of a match inside one ``checked_once`` block."""

from __future__ import annotations

from pathlib import Path

from overspec.world.checks import checked_once, content_matches


def _counting(calls: list[Path]):
    def digest(path: Path) -> str:
        calls.append(path)
        return path.read_text()
    return digest


def test_outside_a_block_every_check_hashes(tmp_path):
    path, calls = tmp_path / "f", []
    path.write_text("abc")
    assert content_matches(path, "abc", _counting(calls)) and content_matches(path, "abc", _counting(calls))
    assert len(calls) == 2
    assert not content_matches(path, "xyz", _counting(calls))
    assert not content_matches(path, None, _counting(calls)) and len(calls) == 3


def test_inside_a_block_a_match_is_hashed_once_and_a_mismatch_every_time(tmp_path):
    path, calls = tmp_path / "f", []
    path.write_text("abc")
    with checked_once():
        assert all(content_matches(path, "abc", _counting(calls)) for _ in range(3))
        assert len(calls) == 1
        assert not content_matches(path, "xyz", _counting(calls)) and not content_matches(path, "xyz", _counting(calls))
        assert len(calls) == 3
    path.write_text("changed")
    assert not content_matches(path, "abc", _counting(calls))  # the block ended: checked again
    with checked_once():
        assert not content_matches(path, "abc", _counting(calls))


def test_folder_hash_orders_files_as_sorted_paths_and_skips_markers(tmp_path):
    import hashlib

    from overspec.world.general import MARKER, folder_hash

    for name in ("a/x", "a-b/x", "a.b", "a/b/c", "Z", "a/" + MARKER, MARKER, "a b/y"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / "empty-dir").mkdir()
    expected = hashlib.sha256()  # the digest's definition: sorted Path objects, relative posix names, then bytes
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.name != MARKER):
        expected.update(path.relative_to(tmp_path).as_posix().encode() + b"\0" + path.read_bytes())
    assert folder_hash(tmp_path) == expected.hexdigest()
    assert folder_hash(tmp_path / "absent") == hashlib.sha256().hexdigest()
