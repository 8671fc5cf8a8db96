"""insightface 10-fold face verification accuracy (LFW, CFP-FP, AgeDB-30, ...) without the threshold-grid loop.

Reproduces ``recognition/arcface_torch/eval/verification.py`` (``evaluate`` -> ``calculate_roc``) exactly:
embeddings are L2-normalised row-wise (scikit-learn ``normalize``), distance d = sum((e1 - e2) ** 2), a pair is
called "same" iff d < t (strict), t runs over ``numpy.arange(0, 4, 0.01)``, folds are contiguous (scikit-learn
``KFold(n_splits, shuffle=False)``), each fold's threshold is the first arg-max of accuracy on the other folds,
and the result is the mean and population standard deviation of the held-out fold accuracies. Instead of
evaluating 400 thresholds per fold, the distances of each fold are sorted once and every grid threshold is
answered by ``searchsorted`` (cumulative counts); counts are integers, so the arg-max is identical.

The distances themselves come from three row-wise dot products (``2 - 2 cos`` of the raw embeddings, one pass over
the data); only pairs whose estimate lies within a proven rounding-error bound of a grid threshold are recomputed with
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


def squared_distances(embeddings1: np.ndarray, embeddings2: np.ndarray, chunk: int = 128) -> np.ndarray:
    """insightface distance ``sum((normalise(e1) - normalise(e2)) ** 2, 1)``, in row chunks that stay in cache.

    Every row goes through the same numpy operations as on the whole arrays, so the values are bitwise identical;
    the chunk buffers are reused to spare allocations.
    """
    n_pairs, dim = embeddings1.shape
    result_type = np.result_type(embeddings1, embeddings2)
    distances = np.empty(n_pairs, dtype=result_type)
    first = np.empty((min(chunk, n_pairs), dim), dtype=embeddings1.dtype)
    second = np.empty((min(chunk, n_pairs), dim), dtype=embeddings2.dtype)
    difference = np.empty((min(chunk, n_pairs), dim), dtype=result_type)
    for start in range(0, n_pairs, chunk):
        rows = slice(start, start + chunk)
        size = min(chunk, n_pairs - start)
        np.subtract(
            _normalised_rows(embeddings1[rows], first[:size]),
            _normalised_rows(embeddings2[rows], second[:size]),
            out=difference[:size],
        )
        np.sum(np.square(difference[:size], out=difference[:size]), axis=1, out=distances[rows])
    return distances


def _gamma(k: int, unit_roundoff: float) -> float:
    """Higham's ``k u / (1 - k u)``: relative error bound of k roundings, e.g. a k-term dot product in any order."""
    return k * unit_roundoff / (1.0 - k * unit_roundoff)


def distance_error_window(estimates: np.ndarray, dim: int, unit_roundoff: float) -> np.ndarray:
    """Per pair, how far the dot-product estimate can be from ``squared_distances`` (rounding unit ``u``).

    Both rows are nonzero and in range, ``D = 2 - 2c <= 4`` is the exact distance, ``g = _gamma(dim)``. Estimate:
    three dot products with ``|error| <= g |a||b|``, the rest in float64, so ``|estimate - D| <= 2 (1 + |c|) g / (1 -
    g)``. insightface: its norm is ``|x| (1 + t)``, ``|t| <= g / 2 + u + g^2``, which moves the distance of the rescaled
    rows by ``2 t D + 4 t^2``; each element's own rounding moves the row by ``<= u (1 + t)``; difference, square and sum
    add a relative ``_gamma(dim + 2)``. The last term covers float64 rounding and underflow of single elements.
    """
    g = _gamma(dim, unit_roundoff)
    u = unit_roundoff
    estimate_error = 4 * g / (1 - g)
    cosine = np.minimum(np.abs(1 - estimates / 2) + estimate_error / 2, 1.0)
    upper = np.clip(estimates + estimate_error, 0.0, 4.0)
    t = g / 2 + u + g**2
    rescaled = upper * (1 + 2 * t) + 4 * t**2
    element = 2 * u * (1 + t)
    reference = (
        2 * t * upper + 4 * t**2 + 2 * element * np.sqrt(rescaled) + element**2
        + _gamma(dim + 2, u) * (np.sqrt(rescaled) + element) ** 2
    )
    return 2 * (1 + cosine) * g / (1 - g) + reference + 1e-12


def _cosine_distance_estimates(
    embeddings1: np.ndarray, embeddings2: np.ndarray, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """``2 - 2 cos`` of each pair from row-wise dot products, and whether both squared norms are safely in range.

    The three dot products of a block of rows read it once from memory (a block stays in the L2 cache).
    Out-of-range rows (zero, near underflow or overflow, NaN) are left to the exact path: the error window assumes
    neither underflow nor overflow of whole rows.
    """
    self1, self2, cross = (np.empty(embeddings1.shape[0], dtype=np.float64) for _ in range(3))
    for start in range(0, embeddings1.shape[0], block):
        rows = slice(start, start + block)
        first, second = embeddings1[rows, np.newaxis, :], embeddings2[rows, np.newaxis, :]
        self1[rows] = np.matmul(first, first.transpose(0, 2, 1))[:, 0, 0]
        self2[rows] = np.matmul(second, second.transpose(0, 2, 1))[:, 0, 0]
        cross[rows] = np.matmul(first, second.transpose(0, 2, 1))[:, 0, 0]
    safe = _in_range(self1, embeddings1.dtype) & _in_range(self2, embeddings2.dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        estimates = 2.0 - 2.0 * cross / np.sqrt(self1 * self2)
    return estimates, safe


def _in_range(squared_norms: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Whether squared norms lie 2^60 inside ``dtype``'s normal range (no whole-row underflow or overflow)."""
    info = np.finfo(dtype)
    return (squared_norms >= float(info.tiny) * 2.0**60) & (squared_norms <= float(info.max) * 2.0**-60)


def _gap_to_grid(estimates: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Distance from each estimate to the nearest threshold of an evenly spaced ascending grid (NaN stays NaN).

    Rounding may pick the wrong neighbour only half a step away from both, far outside any error window.
    """
    position = np.clip(np.rint((estimates - grid[0]) / (grid[1] - grid[0])), 0, grid.size - 1)
    nearest = grid[np.nan_to_num(position).astype(np.intp)]
    return np.abs(estimates - nearest)


def grid_distances(
    embeddings1: np.ndarray, embeddings2: np.ndarray, thresholds: np.ndarray, chunk: int = 2048
) -> np.ndarray:
    """Pair distances on the same side of every grid threshold as :func:`squared_distances`' (so identical folds).

    float32 / float64 pairs and an evenly spaced ascending grid: the dot-product estimate wherever it is further
    than its :func:`distance_error_window` from every threshold; the other pairs (and other dtypes or grids) are
    computed by :func:`squared_distances` itself, chunk by chunk while the rows are in cache.
    """
    dtypes = {np.dtype(embeddings1.dtype), np.dtype(embeddings2.dtype)}
    dim = embeddings1.shape[1]
    unit_roundoff = max(float(np.finfo(dtype).eps) / 2 for dtype in dtypes)
    grid = np.asarray(thresholds, dtype=np.float64)
    even = grid.size >= 2 and grid[1] > grid[0] and np.allclose(np.diff(grid), grid[1] - grid[0], rtol=1e-9, atol=0)
    if not (even and dtypes <= {np.dtype(np.float32), np.dtype(np.float64)}) or (dim + 3) * unit_roundoff > 1e-3:
        return squared_distances(embeddings1, embeddings2)
    distances = np.empty(embeddings1.shape[0], dtype=np.float64)
    for start in range(0, embeddings1.shape[0], chunk):
        first, second = embeddings1[start : start + chunk], embeddings2[start : start + chunk]
        estimates, safe = _cosine_distance_estimates(first, second)
        with np.errstate(invalid="ignore"):
            sure = safe & (_gap_to_grid(estimates, grid) > distance_error_window(estimates, dim, unit_roundoff))
        unsure = np.flatnonzero(~sure)
        if unsure.size:
            estimates[unsure] = squared_distances(first.take(unsure, axis=0), second.take(unsure, axis=0))
        distances[start : start + first.shape[0]] = estimates
    return distances


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


def kfold_from_distances(
    distances: np.ndarray, issame: np.ndarray, n_folds: int = 10, thresholds: np.ndarray = INSIGHTFACE_THRESHOLDS
) -> VerificationResult:
    """insightface ``calculate_roc`` on precomputed distances ("same" iff distance < threshold)."""
    bounds = fold_bounds(distances.size, n_folds)
    # Per fold: counts of same pairs and of different pairs with distance < t, for every grid threshold.
    same_below = np.empty((n_folds, thresholds.size), dtype=np.int64)
    diff_below = np.empty_like(same_below)
    n_same = np.empty(n_folds, dtype=np.int64)
    n_diff = np.empty(n_folds, dtype=np.int64)
    for fold in range(n_folds):
        part = slice(bounds[fold], bounds[fold + 1])
        fold_distances, fold_same = distances[part], issame[part]
        same_sorted = np.sort(fold_distances[fold_same])
        diff_sorted = np.sort(fold_distances[~fold_same])
        same_below[fold] = np.searchsorted(same_sorted, thresholds, side="left")
        diff_below[fold] = np.searchsorted(diff_sorted, thresholds, side="left")
        n_same[fold], n_diff[fold] = same_sorted.size, diff_sorted.size
    # Correct calls = same pairs below t + different pairs at or above t; training folds = total minus the fold.
    correct = same_below + (n_diff[:, None] - diff_below)
    train_correct = correct.sum(axis=0)[None, :] - correct
    best = np.argmax(train_correct, axis=1)
    folds = np.arange(n_folds)
    fold_sizes = np.diff(bounds)
    fold_accuracies = correct[folds, best] / fold_sizes
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
    distances = grid_distances(first, second, INSIGHTFACE_THRESHOLDS)
    if not np.all(np.isfinite(distances)):
        bad = "embeddings1" if not np.all(np.isfinite(first)) else "embeddings2"
        raise InputError(f"{bad} contains NaN or infinite values (or rows too large to normalise)")
    same = labels.astype(bool)
    if same.all() or not same.any():
        empty = "different (impostor)" if same.all() else "same (genuine)"
        raise InputError(f"issame has no {empty} pairs: accuracy needs both genuine and impostor pairs")
    return kfold_from_distances(distances, same, n_folds)
