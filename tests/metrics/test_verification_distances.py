"""The fast path of verification_kfold: every pair in the same threshold bin as insightface's own distance."""

import numpy as np
import pytest

from overspec.metrics import _verification
from overspec.metrics._verification import (
    INSIGHTFACE_THRESHOLDS,
    _cosine_distance_estimates,
    _nearest_threshold,
    distance_error_window,
    grid_bins,
    squared_distances,
    threshold_bins,
    threshold_windows,
)


def insightface_distances(embeddings1, embeddings2):
    """``sum((normalize(e1) - normalize(e2)) ** 2, 1)`` on the whole arrays, as insightface's evaluation runs it."""

    def normalise(x):
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        norms[norms == 0] = 1
        return x / norms[:, None]

    return np.sum(np.square(normalise(embeddings1) - normalise(embeddings2)), 1)


def pairs_at_distances(targets, dim=512, seed=0, dtype=np.float32):
    """Pairs whose exact distance is ``targets[k]``: a random unit row and a rotation of it in a random plane."""
    rng = np.random.default_rng(seed)
    first = rng.normal(size=(len(targets), dim))
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    other = rng.normal(size=(len(targets), dim))
    other -= np.sum(other * first, axis=1, keepdims=True) * first
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    cosine = 1 - np.asarray(targets) / 2
    second = cosine[:, None] * first + np.sqrt(1 - cosine**2)[:, None] * other
    scale = rng.uniform(0.5, 40.0, size=(len(targets), 1))
    return (first * scale).astype(dtype), (second * rng.uniform(0.5, 40.0, size=scale.shape)).astype(dtype)


def exact_ties(dim=512):
    """Rows whose insightface distance is exactly 0, 1, 2 and 4 (grid thresholds themselves), and zero rows."""
    first = np.zeros((6, dim), dtype=np.float32)
    second = np.zeros((6, dim), dtype=np.float32)
    first[:, 0] = 3.0
    second[0, 0] = 5.0  # same direction: 0
    second[1, :4] = 7.0  # (1, 0, 0, 0) vs (1, 1, 1, 1) / 2: 1
    second[2, 1] = 2.0  # orthogonal: 2
    second[3, 0] = -1.0  # opposite: 4
    first[4] = 0.0  # zero row vs unit row: 1
    first[5] = 0.0  # two zero rows: 0
    return first, second


def near_threshold_pairs(dtype=np.float32, dim=512):
    """Pairs within a few ULPs to a few windows of grid thresholds, the exact ties, and random pairs."""
    offsets = np.array([0.0, 1e-7, -1e-7, 3e-7, -3e-7, 1e-6, -1e-6, 1e-5, -1e-5, 1e-4, -1e-4, 5e-4, -5e-4])
    centres = INSIGHTFACE_THRESHOLDS[[1, 37, 80, 100, 121, 150, 199, 200, 201, 260, 333, 399]]
    targets = np.clip((centres[:, None] + offsets[None, :]).ravel(), 0.0, 4.0)
    targets = np.concatenate([targets, np.random.default_rng(1).uniform(0, 4, 300)])
    first, second = pairs_at_distances(targets, dim=dim, dtype=dtype)
    tie1, tie2 = exact_ties(dim)
    return np.concatenate([first, tie1.astype(dtype)]), np.concatenate([second, tie2.astype(dtype)])


@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float64, np.float64), (np.float32, np.float64)])
@pytest.mark.parametrize("chunk", [1, 7, 128])
def test_squared_distances_are_bitwise_insightface(dtypes, chunk):
    rng = np.random.default_rng(3)
    first = rng.normal(size=(301, 512)).astype(dtypes[0])
    second = rng.normal(size=(301, 512)).astype(dtypes[1])
    first[5] = 0.0
    expected = insightface_distances(first, second)
    got = squared_distances(first, second, chunk=chunk)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def brute_force_bins(distances, grid=INSIGHTFACE_THRESHOLDS):
    """Number of thresholds at or below each distance, counted threshold by threshold (NaN and inf: -1)."""
    bins = np.sum(grid[None, :] <= np.asarray(distances, dtype=np.float64)[:, None], axis=1)
    return np.where(np.isfinite(distances), bins, -1)


@pytest.fixture
def recomputed_rows(monkeypatch):
    """Counts of pairs the fast path sent to insightface's arithmetic, call by call."""
    sizes = []
    exact = _verification._distances_of_rows

    def counting(embeddings1, embeddings2, rows, buffers):
        sizes.append(rows.size)
        return exact(embeddings1, embeddings2, rows, buffers)

    monkeypatch.setattr(_verification, "_distances_of_rows", counting)
    return sizes


def test_threshold_bins_count_thresholds_at_or_below():
    grid = INSIGHTFACE_THRESHOLDS
    distances = np.concatenate([grid, np.nextafter(grid, -1), np.nextafter(grid, 5), [-0.5, 3.995, 4.0, 7.0]])
    bins = threshold_bins(distances, grid)
    np.testing.assert_array_equal(bins, brute_force_bins(distances))
    # "same" at t_k (distance < t_k, insightface's strict rule) iff bin <= k, ties included
    np.testing.assert_array_equal(bins[:, None] <= np.arange(grid.size), distances[:, None] < grid[None, :])
    np.testing.assert_array_equal(threshold_bins(np.array([np.nan, np.inf, 0.5]), grid), [-1, -1, 51])


def test_nearest_threshold_is_one_of_the_two_neighbours():
    grid = INSIGHTFACE_THRESHOLDS
    midpoints = (grid[:-1] + grid[1:]) / 2
    estimates = np.concatenate([grid, np.nextafter(grid, -1), np.nextafter(grid, 5), midpoints,
                                np.random.default_rng(2).uniform(-0.2, 4.2, 5000), [-3.0, 9.0]])
    nearest = _nearest_threshold(estimates, grid)
    gaps = np.abs(estimates[:, None] - grid[None, :])
    best = np.argmin(gaps, axis=1)
    clear = np.abs(gaps[np.arange(estimates.size), best] - np.partition(gaps, 1, axis=1)[:, 1]) > 1e-9
    np.testing.assert_array_equal(nearest[clear], best[clear])  # no midpoint tie: the nearest one
    assert np.all(np.abs(nearest - best) <= 1)  # ties: either neighbour


@pytest.mark.parametrize("unit_roundoff", [2.0**-24, 2.0**-53])
def test_threshold_windows_cover_every_estimate_between_the_neighbours(unit_roundoff):
    grid = INSIGHTFACE_THRESHOLDS
    windows = threshold_windows(grid, 512, unit_roundoff)
    rng = np.random.default_rng(6)
    k = rng.integers(0, grid.size, 20000)
    low = np.where(k > 0, grid[np.maximum(k - 1, 0)], -0.1)
    high = np.where(k < grid.size - 1, grid[np.minimum(k + 1, grid.size - 1)], 4.1)
    estimates = np.concatenate([low + (high - low) * rng.random(k.size), grid, [2.0, -0.1, 4.1]])
    k = np.concatenate([k, np.arange(grid.size), [200, 0, grid.size - 1]])
    assert np.all(distance_error_window(estimates, 512, unit_roundoff) <= windows[k])
    assert windows.max() < 1.5 * windows.min() + 2e-4  # not vacuous: about a per-estimate window


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", [512, 64])
def test_grid_bins_equal_insightface_bins(dtype, dim, recomputed_rows):
    first, second = near_threshold_pairs(dtype, dim)
    expected = brute_force_bins(insightface_distances(first, second))
    np.testing.assert_array_equal(grid_bins(first, second, INSIGHTFACE_THRESHOLDS, chunk=100), expected)
    assert 0 < sum(recomputed_rows) < first.shape[0]  # both the exact path and the estimate were used


@pytest.mark.parametrize("n_pairs", [6_000, 60_000])
def test_grid_bins_equal_insightface_bins_on_random_features(n_pairs, recomputed_rows):
    """Benchmark-like 512-d float32 pairs (genuine = first + noise): all 400 thresholds, every pair."""
    rng = np.random.default_rng(n_pairs)
    first = rng.standard_normal((n_pairs, 512), dtype=np.float32)
    genuine = first + np.float32(6.0) * rng.standard_normal((n_pairs, 512), dtype=np.float32)
    second = np.where(rng.random((n_pairs, 1)) < 0.5, genuine, rng.standard_normal((n_pairs, 512), dtype=np.float32))
    expected = threshold_bins(squared_distances(first, second, chunk=4096), INSIGHTFACE_THRESHOLDS)
    np.testing.assert_array_equal(grid_bins(first, second, INSIGHTFACE_THRESHOLDS), expected)
    assert 0 < sum(recomputed_rows) < 0.1 * n_pairs


def test_grid_bins_send_out_of_range_rows_to_the_exact_path():
    rng = np.random.default_rng(4)
    first = rng.normal(size=(8, 512)).astype(np.float32)
    second = rng.normal(size=(8, 512)).astype(np.float32)
    first[0] *= np.float32(1e-22)  # squared norm near float32 underflow
    second[1] *= np.float32(1e17)  # squared norm near float32 overflow
    first[2] = 0.0
    second[3, 7] = np.nan
    got = grid_bins(first, second, INSIGHTFACE_THRESHOLDS)
    expected = brute_force_bins(insightface_distances(first, second))
    np.testing.assert_array_equal(got, expected)
    assert got[3] == -1
    wide = second.astype(np.float64)  # a float32 row too small for float32 stays exact beside a float64 row
    np.testing.assert_array_equal(grid_bins(first, wide, INSIGHTFACE_THRESHOLDS)[0],
                                  brute_force_bins(insightface_distances(first, wide))[0])


def test_grid_bins_of_float64_rows_at_extreme_but_safe_scales():
    """Norm products beyond float64's range (1e-140 x 1e-140, 1e140 x 1e140 rows) still give the right bins."""
    first, second = near_threshold_pairs(np.float64, 512)
    for scale in (1e-140, 1e140):
        estimates, safe = _cosine_distance_estimates(first * scale, second * scale)
        nonzero = np.any(first != 0, axis=1) & np.any(second != 0, axis=1)
        assert np.array_equal(safe, nonzero) and np.all(np.isfinite(estimates[safe]))
        expected = brute_force_bins(insightface_distances(first * scale, second * scale))
        np.testing.assert_array_equal(grid_bins(first * scale, second * scale, INSIGHTFACE_THRESHOLDS), expected)


@pytest.mark.parametrize("dim", [512, 4096])
def test_error_window_bounds_the_observed_gap(dim):
    """Heavy-tailed rows of mixed scale: estimate and insightface's float32 distance never differ beyond the window."""
    rng = np.random.default_rng(5)
    n_pairs = 2000
    first = rng.standard_t(2, size=(n_pairs, dim)) * rng.uniform(1e-3, 1e3, size=(n_pairs, 1))
    second = np.where(rng.random((n_pairs, 1)) < 0.5, first + rng.standard_t(2, size=(n_pairs, dim)), -first)
    first, second = first.astype(np.float32), second.astype(np.float32)
    estimates, safe = _cosine_distance_estimates(first, second)
    assert safe.all()
    gap = np.abs(estimates - insightface_distances(first, second))
    window = distance_error_window(estimates, dim, 2.0**-24)
    assert np.all(gap <= window)
    assert 1e-6 * window.min() < gap.max()  # the comparison is not vacuous: the gap is measurable


def test_uneven_grids_take_the_exact_path(recomputed_rows):
    first, second = near_threshold_pairs(np.float32, 64)
    grid = np.array([0.5, 1.0, 1.7, 2.0, 3.1])
    got = grid_bins(first, second, grid)
    np.testing.assert_array_equal(got, brute_force_bins(insightface_distances(first, second), grid))
    assert recomputed_rows == []  # all pairs through squared_distances, no estimate
