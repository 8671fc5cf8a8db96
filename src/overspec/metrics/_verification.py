"""insightface 10-fold face verification accuracy (LFW, CFP-FP, AgeDB-30, ...) without the threshold-grid loop.

Reproduces ``recognition/arcface_torch/eval/verification.py`` (``evaluate`` -> ``calculate_roc``) exactly:
embeddings are L2-normalised row-wise (scikit-learn ``normalize``), distance d = sum((e1 - e2) ** 2), a pair is
called "same" iff d < t (strict), t runs over ``numpy.arange(0, 4, 0.01)``, folds are contiguous (scikit-learn
``KFold(n_splits, shuffle=False)``), each fold's threshold is the first arg-max of accuracy on the other folds,
and the result is the mean and population standard deviation of the held-out fold accuracies. Instead of
evaluating 400 thresholds per fold, each pair gets its threshold bin (how many thresholds lie at or below its
distance: it is called "same" at ``t_k`` iff its bin <= k) and a histogram of (label, bin) per fold answers every
threshold by cumulative sums; counts are integers, so the arg-max is identical.

The bins come from three row-wise dot products (``2 - 2 cos`` of the raw embeddings, one pass over the data); only
pairs whose estimate lies within a proven rounding-error bound of their nearest grid threshold are recomputed with
insightface's own operations, so every pair falls on the same side of every threshold as in insightface.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from overspec.errors import InputError

logger = logging.getLogger(__name__)

INSIGHTFACE_THRESHOLDS = np.arange(0, 4, 0.01)


@dataclass(frozen=True)
class VerificationResult:
    """k-fold verification: mean and population std of fold accuracies, and what each fold chose.

    ``tpr`` / ``fpr`` are the held-out TPR / FPR at every grid threshold averaged over folds (insightface's curves).
    """

    accuracy: float
    std: float
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray
    thresholds: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray


def _normalised_rows(embeddings: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation as scikit-learn ``normalize`` does it (zero rows stay zero), written into ``out``."""
    norms = np.sqrt(np.einsum("ij,ij->i", embeddings, embeddings))
    norms[norms == 0.0] = 1.0
    return np.divide(embeddings, norms[:, np.newaxis], out=out)


@dataclass(frozen=True)
class _RowBuffers:
    """Row buffers of the exact path, allocated once per call (fresh large buffers each time cost page faults)."""

    first: np.ndarray
    second: np.ndarray
    difference: np.ndarray

    @classmethod
    def for_pairs(cls, embeddings1: np.ndarray, embeddings2: np.ndarray, rows: int) -> _RowBuffers:
        """Buffers for up to ``rows`` pairs of these arrays (the difference in their common dtype)."""
        dim, common = embeddings1.shape[1], np.result_type(embeddings1, embeddings2)
        return cls(np.empty((rows, dim), embeddings1.dtype), np.empty((rows, dim), embeddings2.dtype),
                   np.empty((rows, dim), common))


def _distances_into(first: np.ndarray, second: np.ndarray, buffers: _RowBuffers, out: np.ndarray) -> None:
    """insightface's distances of row blocks ``first``, ``second`` (at most the buffers' rows) written into ``out``."""
    size = first.shape[0]
    np.subtract(
        _normalised_rows(first, buffers.first[:size]),
        _normalised_rows(second, buffers.second[:size]),
        out=buffers.difference[:size],
    )
    np.sum(np.square(buffers.difference[:size], out=buffers.difference[:size]), axis=1, out=out)


def squared_distances(embeddings1: np.ndarray, embeddings2: np.ndarray, chunk: int = 128) -> np.ndarray:
    """insightface distance ``sum((normalise(e1) - normalise(e2)) ** 2, 1)``, in row chunks that stay in cache.

    Every row goes through the same numpy operations as on the whole arrays, so the values are bitwise identical;
    the chunk buffers are reused to spare allocations.
    """
    n_pairs = embeddings1.shape[0]
    distances = np.empty(n_pairs, dtype=np.result_type(embeddings1, embeddings2))
    buffers = _RowBuffers.for_pairs(embeddings1, embeddings2, min(chunk, n_pairs))
    for start in range(0, n_pairs, chunk):
        rows = slice(start, start + chunk)
        _distances_into(embeddings1[rows], embeddings2[rows], buffers, distances[rows])
    return distances


def _distances_of_rows(
    embeddings1: np.ndarray, embeddings2: np.ndarray, rows: np.ndarray, buffers: _RowBuffers
) -> np.ndarray:
    """:func:`squared_distances` of the pairs at indices ``rows``, gathered block by block into ``buffers``."""
    distances = np.empty(rows.size, dtype=buffers.difference.dtype)
    block = buffers.first.shape[0]
    for start in range(0, rows.size, block):
        part = rows[start : start + block]
        # mode="clip" (the indices are in range): with the default mode, take copies through a temporary buffer
        first = embeddings1.take(part, axis=0, out=buffers.first[: part.size], mode="clip")
        second = embeddings2.take(part, axis=0, out=buffers.second[: part.size], mode="clip")
        _distances_into(first, second, buffers, distances[start : start + part.size])
    return distances


def _gamma(k: int, unit_roundoff: float) -> float:
    """Higham's ``k u / (1 - k u)``: relative error bound of k roundings, e.g. a k-term dot product in any order."""
    return k * unit_roundoff / (1.0 - k * unit_roundoff)


def _window_over(lowest: np.ndarray, highest: np.ndarray, dim: int, unit_roundoff: float) -> np.ndarray:
    """How far any dot-product estimate in ``[lowest, highest]`` can be from ``squared_distances`` (rounding ``u``).

    Both rows are nonzero and in range, ``D = 2 - 2c <= 4`` is the exact distance, ``g = _gamma(dim)``. Estimate:
    three dot products with ``|error| <= g |a||b|``, the rest in float64, so ``|estimate - D| <= 2 (1 + |c|) g / (1 -
    g)``. insightface: its norm is ``|x| (1 + t)``, ``|t| <= g / 2 + u + g^2``, which moves the distance of the rescaled
    rows by ``2 t D + 4 t^2``; each element's own rounding moves the row by ``<= u (1 + t)``; difference, square and sum
    add a relative ``_gamma(dim + 2)``. The bound grows with ``|c|`` (convex in the estimate, so largest at an end of
    the interval) and with ``D`` (largest at the top). The last term covers float64 rounding and underflow of single
    elements.
    """
    g = _gamma(dim, unit_roundoff)
    u = unit_roundoff
    estimate_error = 4 * g / (1 - g)
    farthest = np.maximum(np.abs(1 - lowest / 2), np.abs(1 - highest / 2))
    cosine = np.minimum(farthest + estimate_error / 2, 1.0)
    upper = np.clip(highest + estimate_error, 0.0, 4.0)
    t = g / 2 + u + g**2
    rescaled = upper * (1 + 2 * t) + 4 * t**2
    element = 2 * u * (1 + t)
    reference = (
        2 * t * upper + 4 * t**2 + 2 * element * np.sqrt(rescaled) + element**2
        + _gamma(dim + 2, u) * (np.sqrt(rescaled) + element) ** 2
    )
    return 2 * (1 + cosine) * g / (1 - g) + reference + 1e-12


def distance_error_window(estimates: np.ndarray, dim: int, unit_roundoff: float) -> np.ndarray:
    """Per pair, how far the dot-product estimate can be from ``squared_distances`` (see :func:`_window_over`)."""
    return _window_over(estimates, estimates, dim, unit_roundoff)


def threshold_windows(grid: np.ndarray, dim: int, unit_roundoff: float) -> np.ndarray:
    """Per grid threshold, an error window valid for every estimate between its two neighbours (open at the ends).

    An estimate is compared with its nearest threshold only, which lies strictly between that threshold's
    neighbours, so one window per threshold bounds the error of every estimate compared with it.
    """
    below = np.concatenate([[-np.inf], grid[:-1]])
    above = np.concatenate([grid[1:], [np.inf]])
    return _window_over(below, above, dim, unit_roundoff)


def _cosine_distance_estimates(
    embeddings1: np.ndarray, embeddings2: np.ndarray, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """``2 - 2 cos`` of each pair from row-wise dot products, and whether both squared norms are safely in range.

    The three dot products of a block of rows read it once from memory (a block stays in the L2 cache).
    Out-of-range rows (zero, near underflow or overflow, NaN) are left to the exact path: the error window assumes
    neither underflow nor overflow of whole rows. The range is checked on the extremes first (one pass when all
    rows are fine, the usual case).
    """
    n_pairs = embeddings1.shape[0]
    dots = np.empty((3, n_pairs), dtype=np.result_type(embeddings1, embeddings2))
    for start in range(0, n_pairs, block):
        rows = slice(start, start + block)
        first, second = embeddings1[rows, np.newaxis, :], embeddings2[rows, np.newaxis, :]
        dots[0, rows] = np.matmul(first, first.transpose(0, 2, 1))[:, 0, 0]
        dots[1, rows] = np.matmul(second, second.transpose(0, 2, 1))[:, 0, 0]
        dots[2, rows] = np.matmul(first, second.transpose(0, 2, 1))[:, 0, 0]
    squared = dots[:2].astype(np.float64)
    safe = _rows_in_range(squared[0], embeddings1.dtype) & _rows_in_range(squared[1], embeddings2.dtype)
    norms = np.sqrt(squared, out=squared)  # a product of the norms cannot overflow or underflow in range
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        estimates = 2.0 - 2.0 * dots[2] / (norms[0] * norms[1])
    return estimates, safe


def _rows_in_range(squared_norms: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Whether squared norms lie 2^60 inside ``dtype``'s normal range (no whole-row underflow or overflow)."""
    info = np.finfo(dtype)
    low, high = float(info.tiny) * 2.0**60, float(info.max) * 2.0**-60
    if low <= squared_norms.min() and squared_norms.max() <= high:  # NaN fails both tests
        return np.ones(squared_norms.shape, dtype=bool)
    return (squared_norms >= low) & (squared_norms <= high)


def _nearest_threshold(estimates: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Index of the grid threshold nearest each estimate (evenly spaced ascending grid; NaN gets any index).

    Rounding may pick the other neighbour only half a step away from both, far outside any error window, and
    never an index beyond the estimate's two neighbours.
    """
    step = grid[1] - grid[0]
    with np.errstate(invalid="ignore"):
        position = (estimates * (1.0 / step) + (0.5 - grid[0] / step)).astype(np.intp)
    return np.clip(position, 0, grid.size - 1, out=position)


def threshold_bins(distances: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """How many grid thresholds lie at or below each distance, so the pair is "same" at ``grid[k]`` iff bin <= k.

    Non-finite distances get -1.
    """
    bins = np.searchsorted(grid, distances, side="right")
    bins[~np.isfinite(distances)] = -1
    return bins


def _estimated_bins(
    embeddings1: np.ndarray, embeddings2: np.ndarray, grid: np.ndarray, windows: np.ndarray, buffers: _RowBuffers
) -> np.ndarray:
    """:func:`threshold_bins` of one chunk: from the estimate where it is outside its nearest threshold's window.

    A pair further than the window from its nearest threshold is further still from all others, so its exact
    distance lies on the same side of every threshold; the other pairs are computed exactly while in cache.
    """
    estimates, safe = _cosine_distance_estimates(embeddings1, embeddings2)
    nearest = _nearest_threshold(estimates, grid)
    threshold = grid[nearest]
    with np.errstate(invalid="ignore"):
        sure = np.abs(estimates - threshold) > windows[nearest]  # NaN estimates are never sure
    bins = nearest + (estimates >= threshold)
    unsure = np.flatnonzero(~(sure & safe))
    if unsure.size:
        bins[unsure] = threshold_bins(_distances_of_rows(embeddings1, embeddings2, unsure, buffers), grid)
    return bins


def _fast_path_applies(embeddings1: np.ndarray, embeddings2: np.ndarray, grid: np.ndarray) -> bool:
    """Whether the estimate's error window is proven for these inputs: float32 / float64 rows, an even grid."""
    dtypes = {np.dtype(embeddings1.dtype), np.dtype(embeddings2.dtype)}
    if not dtypes <= {np.dtype(np.float32), np.dtype(np.float64)} or grid.size < 2 or not grid[1] > grid[0]:
        return False
    even = np.allclose(np.diff(grid), grid[1] - grid[0], rtol=1e-9, atol=0)
    return bool(even) and (embeddings1.shape[1] + 3) * _unit_roundoff(dtypes) <= 1e-3


def _unit_roundoff(dtypes: set[np.dtype]) -> float:
    """The largest rounding unit among the inputs' float dtypes."""
    return max(float(np.finfo(dtype).eps) / 2 for dtype in dtypes)


def grid_bins(
    embeddings1: np.ndarray, embeddings2: np.ndarray, thresholds: np.ndarray, chunk: int = 2048
) -> np.ndarray:
    """:func:`threshold_bins` of insightface's distances (``squared_distances``), without computing most of them.

    float32 / float64 pairs and an evenly spaced ascending grid: from the dot-product estimate wherever it is further
    than its window from the nearest threshold, exactly otherwise, chunk by chunk while the rows are in cache; other
    dtypes or grids take the exact distances.
    """
    grid = np.asarray(thresholds, dtype=np.float64)
    if not _fast_path_applies(embeddings1, embeddings2, grid):
        return threshold_bins(squared_distances(embeddings1, embeddings2), grid)
    unit_roundoff = _unit_roundoff({np.dtype(embeddings1.dtype), np.dtype(embeddings2.dtype)})
    windows = threshold_windows(grid, embeddings1.shape[1], unit_roundoff)
    buffers = _RowBuffers.for_pairs(embeddings1, embeddings2, 128)
    bins = np.empty(embeddings1.shape[0], dtype=np.intp)
    for start in range(0, embeddings1.shape[0], chunk):
        rows = slice(start, start + chunk)
        bins[rows] = _estimated_bins(embeddings1[rows], embeddings2[rows], grid, windows, buffers)
    return bins


def _as_embeddings(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise InputError(f"{name} must be a non-empty 2-D array (pairs x dimensions), got shape {array.shape}")
    return array


def fold_bounds(n_pairs: int, n_folds: int) -> np.ndarray:
    """Start offsets of scikit-learn ``KFold(n_folds, shuffle=False)`` folds, plus the end (contiguous blocks)."""
    sizes = np.full(n_folds, n_pairs // n_folds, dtype=np.int64)
    sizes[: n_pairs % n_folds] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def kfold_from_bins(
    bins: np.ndarray, issame: np.ndarray, n_folds: int = 10, thresholds: np.ndarray = INSIGHTFACE_THRESHOLDS
) -> VerificationResult:
    """insightface ``calculate_roc`` on :func:`threshold_bins` ("same" at ``thresholds[k]`` iff the bin is <= k).

    ``bins`` are finite distances' bins (no -1: non-finite input is rejected before).

    A histogram of (label, bin) per fold gives its counts of same and different pairs below every threshold as
    cumulative sums; counts are integers, so the arg-max and the accuracies equal the loop's.
    """
    n_bins = thresholds.size + 1
    bounds = fold_bounds(bins.size, n_folds)
    counts = np.empty((n_folds, 2, n_bins), dtype=np.intp)
    for fold in range(n_folds):
        part = slice(bounds[fold], bounds[fold + 1])
        keys = np.multiply(issame[part], n_bins, dtype=np.intp) + bins[part]
        counts[fold] = np.bincount(keys, minlength=2 * n_bins).reshape(2, n_bins)
    below = np.cumsum(counts, axis=2)[:, :, :-1]  # [fold, label, k]: pairs with bin <= k, i.e. distance < t_k
    diff_below, same_below = below[:, 0], below[:, 1]
    n_diff, n_same = counts[:, 0].sum(axis=1), counts[:, 1].sum(axis=1)
    # Correct calls = same pairs below t + different pairs at or above t; training folds = total minus the fold.
    correct = same_below + (n_diff[:, None] - diff_below)
    train_correct = correct.sum(axis=0)[None, :] - correct
    best = np.argmax(train_correct, axis=1)
    folds = np.arange(n_folds)
    fold_accuracies = correct[folds, best] / np.diff(bounds)
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = np.where(n_same[:, None] == 0, 0.0, same_below / n_same[:, None])
        fpr = np.where(n_diff[:, None] == 0, 0.0, diff_below / n_diff[:, None])
    return VerificationResult(
        float(np.mean(fold_accuracies)),
        float(np.std(fold_accuracies)),
        fold_accuracies,
        thresholds[best],
        thresholds,
        tpr.mean(axis=0),
        fpr.mean(axis=0),
    )


def kfold_from_distances(
    distances: np.ndarray, issame: np.ndarray, n_folds: int = 10, thresholds: np.ndarray = INSIGHTFACE_THRESHOLDS
) -> VerificationResult:
    """insightface ``calculate_roc`` on precomputed distances ("same" iff distance < threshold)."""
    return kfold_from_bins(threshold_bins(distances, thresholds), issame, n_folds, thresholds)


def verification_kfold(
    embeddings1: ArrayLike, embeddings2: ArrayLike, issame: ArrayLike, n_folds: int = 10
) -> VerificationResult:
    """insightface k-fold verification accuracy of pairs (``embeddings1[k]``, ``embeddings2[k]``, ``issame[k]``).

    Distance convention (not the score convention of the other metrics): squared L2 distance of L2-normalised
    embeddings, "same" iff distance < threshold, thresholds 0, 0.01, ..., 3.99; embeddings keep their float dtype
    (float32 distances as in insightface). Returns mean accuracy and population std over the contiguous folds.

    >>> e1 = np.array([[1.0, 0.0]] * 4)
    >>> e2 = np.array([[1.0, 0.1], [0.0, 1.0], [1.0, 0.2], [-1.0, 0.1]])
    >>> result = verification_kfold(e1, e2, [True, False, True, False], n_folds=2)
    >>> result.accuracy, result.std, result.fold_thresholds.tolist()
    (0.75, 0.25, [0.04, 0.01])
    """
    first = _as_embeddings(embeddings1, "embeddings1")
    second = _as_embeddings(embeddings2, "embeddings2")
    labels = np.asarray(issame)
    if first.shape != second.shape:
        raise InputError(f"embeddings1 and embeddings2 differ in shape: {first.shape} vs {second.shape}")
    if labels.shape != (first.shape[0],):
        raise InputError(f"issame must have one entry per pair ({first.shape[0]}), got shape {labels.shape}")
    if not (labels.dtype == bool or np.isin(labels, (0, 1)).all()):
        raise InputError("issame must hold booleans (or 0 / 1)")
    if not 2 <= n_folds <= first.shape[0]:
        raise InputError(f"n_folds must be between 2 and the number of pairs ({first.shape[0]}), got {n_folds}")
    bins = grid_bins(first, second, INSIGHTFACE_THRESHOLDS)
    if np.any(bins < 0):
        bad = "embeddings1" if not np.all(np.isfinite(first)) else "embeddings2"
        raise InputError(f"{bad} contains NaN or infinite values (or rows too large to normalise)")
    same = labels.astype(bool)
    if same.all() or not same.any():
        empty = "different (impostor)" if same.all() else "same (genuine)"
        raise InputError(f"issame has no {empty} pairs: accuracy needs both genuine and impostor pairs")
    return kfold_from_bins(bins, same, n_folds)
