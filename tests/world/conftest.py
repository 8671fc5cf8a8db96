"""Shared fixtures: one full world per test session, and shrunken world specs for cheap regeneration tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from overspec.world import biometric, general

TINY_BIOMETRIC = biometric.WorldSizes(pairs=20, ijb_subjects=4, mad_subjects=(10, 6), mad_morph_pairs=(10, 6),
                                      pad_subjects=(1, 1, 1), pad_frames=2, fr_identities=3, fr_images=2)


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


@pytest.fixture
def small_world(small_general_world, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the general and the biometric world (default sizes), so that preparing a world takes seconds."""
    monkeypatch.setattr(biometric.ensure_biometric_world, "__defaults__", (0, TINY_BIOMETRIC))
