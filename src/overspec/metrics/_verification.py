"""insightface 10-fold face verification accuracy (LFW, CFP-FP, AgeDB-30, ...) without the threshold-grid loop.

Reproduces ``recognition/arcface_torch/eval/verification.py`` (``evaluate`` -> ``calculate_roc``) exactly:
embeddings are L2-normalised row-wise (scikit-learn ``normalize``), distance d = sum((e1 - e2) ** 2), a pair is
called "same" iff d < t (strict), t runs over ``numpy.arange(0, 4, 0.01)``, folds are contiguous (scikit-learn
``KFold(n_splits, shuffle=False)``), each fold's threshold is the first arg-max of accuracy on the other folds,
and the result is the mean and population standard deviation of the held-out fold accuracies. Instead of
evaluating 400 thresholds per fold, the distances of each fold are sorted once and every grid threshold is
answered by ``searchsorted`` (cumulative counts); counts are integers, so the arg-max is identical.
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


def _normalised_rows(embeddings: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation as scikit-learn ``normalize`` does it (zero rows stay zero)."""
    norms = np.sqrt(np.einsum("ij,ij->i", embeddings, embeddings))
    norms[norms == 0.0] = 1.0
    return embeddings / norms[:, np.newaxis]


def squared_distances(embeddings1: np.ndarray, embeddings2: np.ndarray, chunk: int = 512) -> np.ndarray:
    """insightface distance ``sum((normalise(e1) - normalise(e2)) ** 2, 1)``, in row chunks that stay in cache.

    Every row is computed by the same numpy operations as on the whole arrays, so the values are bitwise identical.
    """
    distances = np.empty(embeddings1.shape[0], dtype=np.result_type(embeddings1, embeddings2))
    for start in range(0, embeddings1.shape[0], chunk):
        rows = slice(start, start + chunk)
        difference = _normalised_rows(embeddings1[rows]) - _normalised_rows(embeddings2[rows])
        distances[rows] = np.sum(np.square(difference), axis=1)
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
    distances = squared_distances(first, second)
    if not np.all(np.isfinite(distances)):
        bad = "embeddings1" if not np.all(np.isfinite(first)) else "embeddings2"
        raise InputError(f"{bad} contains NaN or infinite values (or rows too large to normalise)")
    same = labels.astype(bool)
    if same.all() or not same.any():
        empty = "different (impostor)" if same.all() else "same (genuine)"
        raise InputError(f"issame has no {empty} pairs: accuracy needs both genuine and impostor pairs")
    return kfold_from_distances(distances, same, n_folds)
