"""CLIP_benchmark's AdamW probe: the weight-decay search rule, accuracy, determinism, a run through the registry."""

import numpy as np
import pytest

from overspec.config.typed import ConfigError
from overspec.protocols.base import PROTOCOLS, resolve_settings
from overspec.protocols.clip_benchmark_probe import (
    CONVENTION,
    ClipBenchmarkProbeSettings,
    clip_benchmark_probe,
    search_weight_decay,
    weight_decay_grid,
)
from overspec.results import read_jsonl
from overspec.runner import run_study
from tests.test_runner import _config


def recorded(scores):
    """A fake scoring function that records the grid indices it is asked for, in order."""
    calls = []

    def score(index: int) -> float:
        calls.append(index)
        return scores(index)

    return score, calls


def test_grid_is_clip_benchmarks():
    grid = weight_decay_grid(ClipBenchmarkProbeSettings())
    np.testing.assert_array_equal(grid, np.logspace(-6, 2, num=97))
    coarse = [i for i, value in enumerate(grid.tolist()) if value in np.logspace(-6, 2, num=7).tolist()]
    assert coarse == [0, 16, 32, 48, 64, 80, 96]


def test_search_visits_coarse_points_then_left_peak_right_with_halving_spans():
    # accuracy peaks at index 41: coarse best is 48 (7 away; 32 is 9 away), then
    # span 8: [40, 48, 56] -> 40; span 4: [36, 40, 44] -> 40; span 2: [38, 40, 42] -> 42 ties 40 and is not
    # strictly better, so 40 stays; span 1: [39, 40, 41] -> 41.
    score, calls = recorded(lambda i: 1 - abs(i - 41) / 100)
    best, visited = search_weight_decay(97, 7, (8, 4, 2, 1), score)
    expected = [0, 16, 32, 48, 64, 80, 96, 40, 48, 56, 36, 40, 44, 38, 40, 42, 39, 40, 41]
    assert best == 41 and visited == expected and calls == expected
    assert len(set(expected)) == 15  # the peak is revisited each round: 15 distinct trainings, as CLIP_benchmark's 19


def test_search_clips_rounds_to_the_grid_and_keeps_the_first_of_equal_accuracies():
    score, _ = recorded(lambda i: 1 - i / 100)  # best at the smallest weight decay
    best, visited = search_weight_decay(97, 7, (8, 4, 2, 1), score)
    assert best == 0 and visited[7:] == [0, 0, 8, 0, 0, 4, 0, 0, 2, 0, 0, 1]
    score, _ = recorded(lambda i: i / 100)  # best at the largest
    best, visited = search_weight_decay(97, 7, (8, 4, 2, 1), score)
    assert best == 96 and visited[7:] == [88, 96, 96, 92, 96, 96, 94, 96, 96, 95, 96, 96]
    score, _ = recorded(lambda i: 0.5)  # a plateau: the first visited point wins every round
    assert search_weight_decay(97, 7, (8, 4, 2, 1), score)[0] == 0
    score, _ = recorded(lambda i: 0.7 if i in (32, 64) else 0.1)  # equal coarse peaks: the first one
    best, visited = search_weight_decay(97, 7, (8, 4, 2, 1), score)
    assert visited[7:10] == [24, 32, 40] and best == 32


def test_search_of_all_zero_accuracies_returns_index_zero_as_find_peak():
    score, _ = recorded(lambda i: 0.0)
    assert search_weight_decay(97, 7, (8,), score)[0] == 0


def separable(seed: int, n_classes: int = 6, n: int = 180, dim: int = 16):
    """Well separated Gaussian classes (train, test), labels 0 .. n_classes - 1."""
    rng = np.random.default_rng(seed)
    means = 3.0 * rng.standard_normal((n_classes, dim))

    def draw(m):
        labels = np.arange(m) % n_classes
        return (means[labels] + rng.standard_normal((m, dim))).astype(np.float32), labels

    return (*draw(n), *draw(n // 2))


def test_separable_problem_is_learnt_and_runs_are_identical():
    train_x, train_y, test_x, test_y = separable(0)
    settings = ClipBenchmarkProbeSettings(enabled=True)
    first = clip_benchmark_probe(train_x, train_y, test_x, test_y, 6, settings, seed=3)
    second = clip_benchmark_probe(train_x, train_y, test_x, test_y, 6, settings, seed=3)
    assert first["acc1"] >= 0.95 and first["mean_per_class_recall"] >= 0.95
    assert first["weight_decay"] in set(weight_decay_grid(settings))
    assert first["n_trainings"] == len(set(first["visited"])) + 1 and len(first["visited"]) == 19
    assert first["n_train"] + first["n_val"] == len(train_y)
    for key in ("acc1", "acc5", "mean_per_class_recall", "weight_decay", "val_acc1", "visited"):
        assert first[key] == second[key], key
    for key, values in first["predictions"].items():
        np.testing.assert_array_equal(values, second["predictions"][key])


def test_head_has_one_output_per_dataset_class_even_when_the_top_class_is_absent():
    train_x, train_y, test_x, test_y = separable(1, n_classes=3)
    settings = ClipBenchmarkProbeSettings(enabled=True, epochs=2, wd_spans=(8,))
    result = clip_benchmark_probe(train_x, train_y, test_x, test_y, 6, settings)
    assert not np.isnan(result["acc5"])  # six outputs (classes 3 to 5 never seen), so top-5 is defined
    assert set(result["predictions"]["pred"]) <= {0, 1, 2}
    with pytest.raises(ValueError, match=r"train labels must lie in \[0, 2\)"):
        clip_benchmark_probe(train_x, train_y, test_x, test_y, 2, settings)


@pytest.mark.parametrize("bad", [{"lr": 0.0}, {"epochs": 0}, {"batch_size": 0}, {"val_fraction": 1.0},
                                 {"wd_min": 1.0, "wd_max": 0.1}, {"wd_coarse": 6}, {"wd_spans": [4, 0]}])
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ConfigError, match="clip_benchmark_probe"):
        resolve_settings({"clip_benchmark_probe": bad})


def test_defaults_are_clip_benchmarks_and_off():
    settings = resolve_settings({})["clip_benchmark_probe"]
    assert (settings.enabled, settings.lr, settings.epochs, settings.batch_size) == (False, 0.1, 10, 64)
    assert PROTOCOLS.get("clip_benchmark_probe").report.gelo


def test_runs_through_the_registry_when_enabled(tmp_path, csv_dataset, micro_checkpoint,
                                                micro_config_file):
    data_root, entry = csv_dataset
    config = _config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file,
                     protocols={"clip_benchmark_probe": {"enabled": True, "epochs": 2}})
    result = run_study(config)
    assert sorted(u for u in result.computed if "clip_benchmark" in u) == [
        "micro-img__test-colours__clip_benchmark_probe", "micro__test-colours__clip_benchmark_probe"]
    records = [r for r in read_jsonl(config.run_dir / "results.jsonl") if r.protocol == "clip_benchmark_probe"]
    assert sorted({r.metric for r in records}) == ["acc1", "acc5", "mean_per_class_recall"]
    for record in records:
        assert record.n == 15 and record.extra["convention"] == CONVENTION
        assert record.extra["epochs"] == 2 and record.extra["lr"] == 0.1 and record.extra["batch_size"] == 64
        assert record.extra["n_classes"] == 3 and "dataset's class count" in record.extra["output_classes"]
        assert record.extra["weight_decay"] in set(np.logspace(-6, 2, 97))
        assert 2 <= record.extra["n_trainings"] <= 20
    acc1 = [r.value for r in records if r.metric == "acc1"]
    assert all(0.0 <= a <= 1.0 for a in acc1)


def test_training_leaves_the_global_random_state_alone():
    import torch

    train_x, train_y, test_x, test_y = separable(2)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    clip_benchmark_probe(train_x, train_y, test_x, test_y, 6, ClipBenchmarkProbeSettings(epochs=1, wd_spans=(1,)))
    assert torch.equal(torch.rand(3), expected)
