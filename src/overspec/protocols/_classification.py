"""Single-label classification metrics from a score matrix, as reported by CLIP_benchmark.

Keys follow CLIP_benchmark (``acc1``, ``acc5``, ``mean_per_class_recall``); accuracies are fractions in [0, 1].
Ties are broken towards the lower class index (a stable descending sort), so top-1 and top-5 agree with each other
and are deterministic; per-sample outcomes are kept for paired statistics between models.
"""

from __future__ import annotations

import numpy as np
from overspec.errors import InputError

__all__ = ["classification_metrics", "per_sample_predictions"]


def _validated(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(scores, labels)`` as a float (N, C) and an int (N,) array; raise on malformed input."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise InputError(f"scores must be a 2-D (samples, classes) array, got shape {scores.shape}")
    if labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        raise InputError(f"labels must be 1-D with {scores.shape[0]} entries (one per score row), got {labels.shape}")
    if scores.shape[0] == 0:
        raise InputError("cannot score an empty set: scores has no rows")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise InputError(
            f"labels must lie in [0, {scores.shape[1]}) (score columns), got [{labels.min()}, {labels.max()}]"
        )
    if not np.all(np.isfinite(scores)):
        raise InputError("scores contain NaN or infinite values")
    return scores, labels.astype(np.int64)


def _true_class_rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return each sample's 0-based rank of its true class (ties: lower class index ranks first)."""
    true_score = scores[np.arange(len(labels)), labels][:, None]
    columns = np.arange(scores.shape[1])[None, :]
    beats = (scores > true_score) | ((scores == true_score) & (columns < labels[:, None]))
    return beats.sum(axis=1)


def per_sample_predictions(logits_or_scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Return per-sample ``pred`` (top-1 class), ``correct`` and ``correct5`` (true class within the top 5).

    With fewer than 5 classes ``correct5`` is all True (``acc5`` is then reported as NaN).
    """
    scores, labels = _validated(logits_or_scores, labels)
    rank = _true_class_rank(scores, labels)
    return {"pred": np.argmax(scores, axis=1), "correct": rank == 0, "correct5": rank < 5}


def _mean_per_class_recall(correct: np.ndarray, labels: np.ndarray) -> float:
    """Return the mean over classes present in ``labels`` of the fraction of that class predicted correctly."""
    classes, inverse = np.unique(labels, return_inverse=True)
    hits = np.bincount(inverse, weights=correct.astype(np.float64), minlength=len(classes))
    return float(np.mean(hits / np.bincount(inverse, minlength=len(classes))))


def classification_metrics(logits_or_scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Return ``acc1``, ``acc5`` (NaN below 5 classes) and ``mean_per_class_recall`` of a score matrix.

    ``mean_per_class_recall`` equals scikit-learn's ``balanced_accuracy_score`` over the classes present in labels.

    Example:
        >>> m = classification_metrics(np.array([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]]), np.array([0, 1, 1]))
        >>> round(m["acc1"], 4), round(m["mean_per_class_recall"], 4)
        (0.6667, 0.75)
    """
    outcome = per_sample_predictions(logits_or_scores, labels)
    labels = np.asarray(labels)
    return {
        "acc1": float(np.mean(outcome["correct"])),
        "acc5": float(np.mean(outcome["correct5"])) if np.shape(logits_or_scores)[1] >= 5 else float("nan"),
        "mean_per_class_recall": _mean_per_class_recall(outcome["correct"], labels),
    }
