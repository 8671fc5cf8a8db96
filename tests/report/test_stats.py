"""Bootstrap intervals (coverage, pairing, seeding) and McNemar's test against hand-worked values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from overspec.report.rundata import load_run
from overspec.report.stats import bootstrap_means, general_bootstrap, mcnemar, percentile_interval

from .synthetic import make_run, study_like_accuracy, study_models


def test_bootstrap_spread_matches_the_binomial_standard_error():
    rng = np.random.default_rng(1)
    correct = rng.random(400) < 0.7
    reps = bootstrap_means(correct, 4000, np.random.default_rng(2))
    p = correct.mean()
    assert reps.shape == (1, 4000)
    assert reps.mean() == pytest.approx(p, abs=0.003)
    assert reps.std() == pytest.approx(math.sqrt(p * (1 - p) / 400), rel=0.08)


def test_percentile_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    hits = 0
    trials = 300
    for _ in range(trials):
        sample = rng.random(200) < 0.7
        low, high = percentile_interval(bootstrap_means(sample, 400, rng)[0], 0.95)
        hits += low <= 0.7 <= high
    assert 0.88 <= hits / trials <= 0.99


def test_paired_interval_of_a_delta_is_narrower_than_an_unpaired_one():
    rng = np.random.default_rng(4)
    base = rng.random(1000) < 0.75
    variant = base.copy()
    flip = rng.choice(1000, size=40, replace=False)
    variant[flip] = ~variant[flip]
    stacked = np.stack([variant, base])
    paired = bootstrap_means(stacked, 2000, np.random.default_rng(5), paired=True)
    unpaired = bootstrap_means(stacked, 2000, np.random.default_rng(5), paired=False)
    width = {name: np.subtract(*percentile_interval(r[0] - r[1])[::-1])
             for name, r in (("paired", paired), ("unpaired", unpaired))}
    assert width["paired"] < 0.5 * width["unpaired"]
    # both still estimate the same accuracies
    assert paired.mean(axis=1) == pytest.approx(unpaired.mean(axis=1), abs=0.003)


def test_bootstrap_is_seeded_and_chunking_does_not_change_the_draws(monkeypatch):
    data = np.random.default_rng(6).random((2, 300)) < 0.5
    first = bootstrap_means(data, 500, np.random.default_rng(7))
    assert np.array_equal(first, bootstrap_means(data, 500, np.random.default_rng(7)))
    assert not np.array_equal(first, bootstrap_means(data, 500, np.random.default_rng(8)))
    monkeypatch.setattr("overspec.report.stats._MAX_CHUNK_ELEMENTS", 300 * 7)
    chunked = bootstrap_means(data, 500, np.random.default_rng(7))
    assert chunked.shape == first.shape
    assert chunked.mean() == pytest.approx(first.mean(), abs=0.01)


def test_percentile_interval_rejects_a_bad_level():
    with pytest.raises(ValueError, match="confidence level"):
        percentile_interval(np.arange(10.0), 1.5)


def test_general_bootstrap_of_a_run_gives_paired_gelo_intervals(tmp_path):
    accuracy = study_like_accuracy({"small-fr": 0.7, "small-mad": 0.97})
    run = load_run(make_run(tmp_path, "r", study_models(["small-fr", "small-mad"]), accuracy, n=600))
    boot = general_bootstrap(run, "zero_shot", n_boot=300, seed=0)
    assert sorted(boot.replicates) == ["ds0", "ds1", "ds2"] and not boot.skipped
    datasets = ["ds0", "ds1", "ds2"]
    gelo = boot.gelo("small-fr", "small", datasets)
    low, high = boot.interval(gelo)
    point = np.mean([accuracy["small-fr"][d] for d in datasets]) / np.mean([accuracy["small"][d] for d in datasets])
    assert low <= point <= high and high - low < 0.05
    assert boot.interval(boot.delta("small-mad", "small", "ds0"))[1] < 0
    again = general_bootstrap(run, "zero_shot", n_boot=300, seed=0)
    assert np.array_equal(again.replicates["ds1"], boot.replicates["ds1"])
    with pytest.raises(ValueError, match="no per-sample array"):
        general_bootstrap(run, "zero_shot", "top_3")


def test_general_bootstrap_skips_datasets_whose_images_differ(tmp_path):
    accuracy = study_like_accuracy({"small-fr": 0.7})
    run_dir = make_run(tmp_path, "r", study_models(["small-fr"]), accuracy, n=100)
    path = run_dir / "predictions" / "small-fr__ds1__zero_shot.npz"
    arrays = dict(np.load(path))
    arrays["label"] = (arrays["label"] + 1) % 10
    np.savez(path, **arrays)
    (run_dir / "predictions" / "small__ds2__zero_shot.npz").unlink()
    boot = general_bootstrap(load_run(run_dir), "zero_shot", n_boot=50)
    assert sorted(boot.replicates) == ["ds0"]
    assert "labels differ" in boot.skipped["ds1"] and "no stored" in boot.skipped["ds2"]
    assert boot.gelo("small-fr", "small", ["ds0", "ds1"]) is None


def _pair(b: int, c: int, both: int = 5, neither: int = 3) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * b + [0] * c + [1] * both + [0] * neither)
    other = np.array([0] * b + [1] * c + [1] * both + [0] * neither)
    return a, other


def test_mcnemar_on_a_hand_worked_table():
    # b = 1, c = 7, n = 8: P(X <= 1) = (1 + 8) / 256 under Bin(8, 1/2)
    a, other = _pair(1, 7)
    exact = mcnemar(a, other, method="exact")
    assert (exact.b, exact.c) == (1, 7)
    assert exact.p_value == pytest.approx(18 / 256, abs=1e-12)
    assert mcnemar(a, other).p_value == pytest.approx(10 / 256, abs=1e-12)  # mid-p: 18/256 - P(X = 1) = 8/256
    corrected = mcnemar(a, other, method="chi2")
    assert corrected.statistic == pytest.approx(25 / 8)
    assert corrected.p_value == pytest.approx(math.erfc(math.sqrt(25 / 16)), abs=1e-12)
    plain = mcnemar(a, other, method="chi2", continuity=False)
    assert plain.statistic == pytest.approx(4.5)
    assert plain.p_value == pytest.approx(math.erfc(1.5), abs=1e-12)
    assert mcnemar(other, a, method="exact").p_value == pytest.approx(exact.p_value)


def test_mcnemar_edge_cases():
    a, other = _pair(3, 3)
    assert mcnemar(a, other).p_value == pytest.approx(1.0)
    assert mcnemar(a, other, method="exact").p_value == 1.0
    same = np.array([1, 0, 1])
    assert mcnemar(same, same).p_value == 1.0 and mcnemar(same, same, method="chi2").p_value == 1.0
    with pytest.raises(ValueError, match="paired outcomes"):
        mcnemar(np.array([1, 0]), np.array([1]))
    with pytest.raises(ValueError, match="unknown McNemar method"):
        mcnemar(same, same, method="wald")
