"""The fast distance path of verification_kfold: same side of every grid threshold as insightface's own arithmetic."""

import numpy as np
import pytest

from overspec.metrics._verification import (
    INSIGHTFACE_THRESHOLDS,
    _cosine_distance_estimates,
    distance_error_window,
    grid_distances,
    squared_distances,
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", [512, 64])
def test_grid_distances_fall_on_the_same_side_of_every_threshold(dtype, dim):
    first, second = near_threshold_pairs(dtype, dim)
    expected = insightface_distances(first, second)
    got = grid_distances(first, second, INSIGHTFACE_THRESHOLDS, chunk=100)
    below_expected = expected[:, None] < INSIGHTFACE_THRESHOLDS[None, :]
    below_got = got[:, None] < INSIGHTFACE_THRESHOLDS[None, :]
    np.testing.assert_array_equal(below_got, below_expected)
    exact = got == expected
    assert exact.any() and not exact.all()  # both the exact path and the estimate were used


def test_grid_distances_send_out_of_range_rows_to_the_exact_path():
    rng = np.random.default_rng(4)
    first = rng.normal(size=(8, 512)).astype(np.float32)
    second = rng.normal(size=(8, 512)).astype(np.float32)
    first[0] *= np.float32(1e-22)  # squared norm near float32 underflow
    second[1] *= np.float32(1e17)  # squared norm near float32 overflow
    first[2] = 0.0
    second[3, 7] = np.nan
    got = grid_distances(first, second, INSIGHTFACE_THRESHOLDS)
    expected = insightface_distances(first, second)
    np.testing.assert_array_equal(got[:4], expected[:4])
    wide = second.astype(np.float64)  # a float32 row too small for float32 stays exact beside a float64 row
    np.testing.assert_array_equal(grid_distances(first, wide, INSIGHTFACE_THRESHOLDS)[0],
                                  insightface_distances(first, wide)[0])


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


def test_uneven_grids_take_the_exact_path():
    first, second = near_threshold_pairs(np.float32, 64)
    grid = np.array([0.5, 1.0, 1.7, 2.0, 3.1])
    got = grid_distances(first, second, grid)
    np.testing.assert_array_equal(got, insightface_distances(first, second))
