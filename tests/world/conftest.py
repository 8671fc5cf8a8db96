"""Shared fixtures: one full world per test session, and a shrunken world spec for cheap regeneration tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from overspec.world import general


@pytest.fixture(scope="session")
def general_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full default world (seed 0), generated once per session."""
    return general.ensure_world(tmp_path_factory.mktemp("data"), seed=0)


@pytest.fixture
def small_general_world(monkeypatch: pytest.MonkeyPatch) -> dict[str, general.WorldDataset]:
    """Shrink every world dataset to a few images so a test can regenerate worlds quickly."""
    small = {name: replace(spec, n_train=14, n_test=7) for name, spec in general.WORLD_DATASETS.items()}
    monkeypatch.setattr(general, "WORLD_DATASETS", small)
    return small
