"""Speed of overspec.metrics against the straightforward per-threshold loops the field uses.

(a) ``verification_kfold`` vs insightface's 400-threshold grid loop (``calculate_roc``, reimplemented below), on
    LFW-sized 6,000 pairs and on 60,000 pairs; the results are asserted identical.

EER, TAR@FAR and BPCER@APCER on 10^7 scores are compared with bob.measure and pyeer themselves in
``bench_scores.py`` (peer environment, ``make bench-peers``).

Run: ``.venv/bin/python benchmarks/bench_metrics.py`` (about a minute on 2 cores). Ratios < 1 mean faster.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.model_selection import KFold

from overspec import metrics as M
from overspec.metrics._verification import kfold_from_distances, squared_distances


def timed(function, *args, repeat: int = 3, **kwargs):
    """(best wall time over ``repeat`` runs, last result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, result


def insightface_loop(embeddings1, embeddings2, issame, n_folds=10):
    """insightface ``evaluate`` + ``calculate_roc`` + ``calculate_accuracy`` as written there (grid loop)."""

    def normalise(x):
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        norms[norms == 0] = 1
        return x / norms[:, None]

    dist = np.sum(np.square(normalise(embeddings1) - normalise(embeddings2)), 1)
    return insightface_grid_loop(dist, issame, n_folds)


def insightface_grid_loop(dist, issame, n_folds=10):
    """The per-fold, per-threshold part of insightface ``calculate_roc`` on given distances."""
    thresholds = np.arange(0, 4, 0.01)

    def accuracy(threshold, dist, actual):
        predict = np.less(dist, threshold)
        tp = np.sum(np.logical_and(predict, actual))
        fp = np.sum(np.logical_and(predict, np.logical_not(actual)))
        tn = np.sum(np.logical_and(np.logical_not(predict), np.logical_not(actual)))
        fn = np.sum(np.logical_and(np.logical_not(predict), actual))
        tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
        fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
        return tpr, fpr, float(tp + tn) / dist.size

    tprs = np.zeros((n_folds, thresholds.size))
    fprs = np.zeros((n_folds, thresholds.size))
    accuracies, best_thresholds = np.zeros(n_folds), np.zeros(n_folds)
    for fold, (train, test) in enumerate(KFold(n_splits=n_folds, shuffle=False).split(np.arange(issame.size))):
        acc_train = np.zeros(thresholds.size)
        for k, threshold in enumerate(thresholds):
            _, _, acc_train[k] = accuracy(threshold, dist[train], issame[train])
        best = np.argmax(acc_train)
        for k, threshold in enumerate(thresholds):
            tprs[fold, k], fprs[fold, k], _ = accuracy(threshold, dist[test], issame[test])
        _, _, accuracies[fold] = accuracy(thresholds[best], dist[test], issame[test])
        best_thresholds[fold] = thresholds[best]
    return np.mean(accuracies), np.std(accuracies), accuracies, best_thresholds, tprs.mean(0), fprs.mean(0)


def verification_pairs(n_pairs: int, seed: int = 0, dim: int = 512):
    rng = np.random.default_rng(seed)
    issame = rng.random(n_pairs) < 0.5
    e1 = rng.normal(size=(n_pairs, dim)).astype(np.float32)
    e2 = np.where(issame[:, None], e1 + 6.0 * rng.normal(size=(n_pairs, dim)), rng.normal(size=(n_pairs, dim)))
    return e1, e2.astype(np.float32), issame


def bench_verification(n_pairs: int) -> None:
    e1, e2, issame = verification_pairs(n_pairs)
    loop_time, expected = timed(insightface_loop, e1, e2, issame, repeat=1)
    fast_time, result = timed(M.verification_kfold, e1, e2, issame, repeat=5)
    mean, std, accuracies, thresholds, tpr, fpr = expected
    assert (result.accuracy, result.std) == (mean, std)
    assert np.array_equal(result.fold_accuracies, accuracies) and np.array_equal(result.fold_thresholds, thresholds)
    assert np.allclose(result.tpr, tpr, rtol=0, atol=1e-15) and np.allclose(result.fpr, fpr, rtol=0, atol=1e-15)
    print(
        f"(a) verification_kfold {n_pairs:>6} pairs x 512-d: grid loop {loop_time:8.3f} s, overspec "
        f"{fast_time * 1e3:7.2f} ms, ratio {fast_time / loop_time:.4f}  (accuracy {mean:.4f} +- {std:.4f}, identical)"
    )
    distances = squared_distances(e1, e2)
    grid_loop_time, _ = timed(insightface_grid_loop, distances, issame, repeat=1)
    grid_time, _ = timed(kfold_from_distances, distances, issame, repeat=5)
    print(
        f"    threshold selection only (distances given): loop {grid_loop_time:8.3f} s, overspec "
        f"{grid_time * 1e3:7.2f} ms, ratio {grid_time / grid_loop_time:.4f}"
    )


def main() -> None:
    print("overspec.metrics benchmark (one process; wall-clock, best of repeats; ratio = overspec / loop)")
    bench_verification(6_000)
    bench_verification(60_000)


if __name__ == "__main__":
    main()
