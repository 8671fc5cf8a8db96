"""Clearing what killed writes left: all temporaries of a folder, or only those of one target."""

from __future__ import annotations

from pathlib import Path

from overspec.files import remove_stale_temporaries, temporary_name


def test_only_the_named_targets_temporaries_are_removed(tmp_path: Path) -> None:
    mine, other = temporary_name(tmp_path / "mine"), temporary_name(tmp_path / "other")
    mine.mkdir()
    other.write_bytes(b"half")
    (tmp_path / "mine").mkdir()
    assert remove_stale_temporaries(tmp_path, "mine") == 1
    assert not mine.exists() and other.exists() and (tmp_path / "mine").is_dir()
    assert remove_stale_temporaries(tmp_path) == 1
    assert not other.exists()
