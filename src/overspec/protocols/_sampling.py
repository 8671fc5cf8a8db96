"""How probe samples are drawn: stratified validation splits, stratified folds and k-shot subsets (all seeded)."""

from __future__ import annotations

import numpy as np
from overspec.errors import InputError

__all__ = ["KSHOTS", "Fold", "kshot_indices", "stratified_folds", "stratified_split"]

#: The k-shot probe sizes a config may ask for (images per class).
KSHOTS = (1, 2, 4, 8, 16)

Fold = tuple[np.ndarray, np.ndarray]


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> Fold:
    """Return sorted ``(train_idx, val_idx)``: about ``val_fraction`` of each class, seeded; one stays in train."""
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        val.append(members[: min(int(round(val_fraction * len(members))), len(members) - 1)])
    val_idx = np.sort(np.concatenate(val))
    if len(val_idx) == 0:
        raise InputError(f"val_fraction={val_fraction} leaves no validation sample (every class is too small)")
    return np.setdiff1d(np.arange(len(labels)), val_idx), val_idx


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> list[Fold]:
    """Return ``n_folds`` ``(train_idx, val_idx)`` pairs; each class is dealt round-robin over folds after a shuffle."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        fold_of[members] = np.arange(len(members)) % n_folds
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(n_folds)]


def kshot_indices(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Return sorted indices of ``k`` samples drawn without replacement from every class present in ``labels``.

    Raises ValueError naming the classes with fewer than ``k`` samples (never returns a short or empty set).
    """
    if k < 1:
        raise InputError(f"k must be a positive integer, got {k}")
    classes, counts = np.unique(labels, return_counts=True)
    short = classes[counts < k]
    if len(short):
        raise InputError(f"{len(short)} classes have fewer than k={k} training samples: {short[:10].tolist()}")
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == cls), size=k, replace=False) for cls in classes]
    return np.sort(np.concatenate(picks))
