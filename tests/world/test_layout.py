"""One world per seed, never rewritten under a reader; world models train in a folder of their own.

Issue 13: a ``--seed 1`` run generated its world, then resolving a ``world:`` model regenerated the seed-0 world
in the same folder, under the run that was reading it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from overspec.models.base import ModelLoadError
from overspec.models.sources.files import produced_folder
from overspec.config.model import ModelSpec
from overspec.world import biometric, general, pretrain
from overspec.world.layout import biometric_root, prepare, seed_root


@pytest.fixture
def trained_on(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace pretraining by a stub that writes an empty model folder; return the world roots it was given."""
    roots: list[Path] = []

    def stub(size: str, world_root: Path, out_dir: Path, **_: object) -> Path:
        roots.append(Path(world_root))
        (Path(out_dir) / size).mkdir(parents=True, exist_ok=True)
        return Path(out_dir) / size

    monkeypatch.setattr(pretrain, "pretrain_tiny_clip", stub)
    monkeypatch.setattr(pretrain, "PARALLEL_MIN_STEPS", 10**9)  # the stub runs in this process
    return roots


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and modification time of every file under ``folder`` but lock files."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def test_the_default_seed_keeps_its_folder_and_other_seeds_get_their_own(tmp_path: Path) -> None:
    assert seed_root(tmp_path, 0) == tmp_path
    assert seed_root(tmp_path, 1) == tmp_path / "seed-1" != seed_root(tmp_path, 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_resolving_a_world_model_leaves_the_runs_world_untouched(tmp_path: Path, small_world, trained_on, seed) -> None:
    cache = tmp_path / "cache"
    data_root = prepare(cache / "world-data", seed)  # what the runner does for a run with this seed
    before = _snapshot(data_root)
    folder = produced_folder(ModelSpec(name="tiny-s", weights="world:tiny-s"), cache)
    assert _snapshot(data_root) == before  # not one byte, not one file rewritten
    assert folder.is_relative_to(cache / "world-models")
    assert {root.parent for root in trained_on} == {cache / "world-models"}  # trained on the models' own world
    assert json.loads((trained_on[0] / "world-shapes" / general.MARKER).read_text())["seed"] == 0


def test_a_world_model_does_not_need_a_data_folder(tmp_path: Path, small_world, trained_on) -> None:
    produced_folder(ModelSpec(name="tiny-m", weights="world:tiny-m"), tmp_path)
    assert not (tmp_path / "world-data").exists()


def test_preparing_another_seed_never_rewrites_a_complete_world(tmp_path: Path, small_world) -> None:
    zero = prepare(tmp_path, 0)
    before = _snapshot(zero / "world")
    one = prepare(tmp_path, 1)
    assert one != zero and biometric_root(one) != biometric_root(zero)
    assert prepare(tmp_path, 0) == zero
    assert _snapshot(zero / "world") == before
    assert json.loads((biometric_root(one) / biometric.MARKER).read_text())["seed"] == 1


def test_an_unknown_world_model_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown world model 'tiny-x'; known: \\['tiny-m', 'tiny-s'\\]"):
        produced_folder(ModelSpec(name="mine", weights="world:tiny-x"), tmp_path)
