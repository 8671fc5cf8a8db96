"""The world's fine-tuning sets, and fine-tuning data read through them (finetune never spells the world's layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from overspec.finetune.recipes import load_recipe
from overspec.finetune.run import training_data, world_training_data
from overspec.world import prepare, training_sets
from overspec.world.training import PAD_SOURCES, PAD_TARGET


@pytest.fixture
def data_root(tmp_path: Path, small_world) -> Path:
    """A prepared seed-1 world (small), as a run with ``--seed 1`` has it."""
    return prepare(tmp_path / "world-data", 1)


def test_fr_trains_on_identity_folders_and_validates_on_pairs(data_root: Path) -> None:
    sets = training_sets("fr", data_root)
    assert sets.train.dataset == "world-fr-train" and len(np.unique(sets.train.labels)) == 3
    assert sets.pairs is not None and sets.pairs.suffix == ".bin" and sets.pairs.is_relative_to(data_root)
    assert sets.dev is None and sets.test is None


def test_mad_leaves_its_dev_split_to_the_caller(data_root: Path) -> None:
    sets = training_sets("mad", data_root)
    assert sets.dev is None and sets.pairs is None
    assert set(np.unique(sets.train.labels)) == set(np.unique(sets.test.labels)) == {0, 1}


def test_pad_trains_on_three_sources_and_tests_on_the_fourth(data_root: Path) -> None:
    sets = training_sets("pad", data_root)
    assert set(sets.train.info["source"]) == set(sets.dev.info["source"]) == set(PAD_SOURCES)
    assert set(sets.test.info["source"]) == {PAD_TARGET}


def test_an_unknown_task_is_refused(data_root: Path) -> None:
    with pytest.raises(ValueError, match="no training data for task 'age'"):
        training_sets("age", data_root)


@pytest.mark.parametrize("recipe", ["froundation", "madation", "foundpad"])
def test_finetune_data_comes_from_the_prepared_world(data_root: Path, recipe: str) -> None:
    config = load_recipe(recipe, profile="world")
    data = world_training_data(config.task, config, data_root)
    assert data.identity.startswith(f"world:{data.train.fingerprint}")
    assert data.validator is not None
    if config.task != "fr":
        dev, test = data.held_out["dev"], data.held_out["test"]
        assert len(dev) and len(test) and not set(data.train.info["subject_id"]) & set(dev.info["subject_id"])


def test_the_default_finetune_world_is_the_default_runs(tmp_path: Path, small_world) -> None:
    config = load_recipe("froundation", profile="world")
    data = training_data("fr", "world", cache_dir=tmp_path, config=config)
    assert data.identity == world_training_data("fr", config, tmp_path / "world-data").identity
    assert (tmp_path / "world-data" / "world" / "biometric" / "manifest.json").is_file()
