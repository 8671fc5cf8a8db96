"""10-fold face verification (LFW / CFP-FP / AgeDB-30 protocol) ÷ insightface's evaluation loop (goal ≤ 0.02).

The loop is insightface ``recognition/arcface_torch/eval/verification.py`` as a user runs it on the embeddings of a
``.bin`` set: L2-normalise (scikit-learn ``normalize``), squared distances, ``KFold(10)``, 400 thresholds per fold
on the training folds, held-out accuracy, TPR / FPR at every threshold; restated below. overspec's side is
``overspec.metrics.verification_kfold``, which the runner reaches through
``overspec.protocols.verification.evaluate_verification``. Both sides get the same 512-d float32 pairs at 6,000
(LFW), 60,000 and 600,000 pairs, in interleaved rounds (the first side alternates); the median of the rounds is
compared and every round's results (fold accuracies, fold thresholds, mean TPR / FPR) are asserted identical.

Run: ``.venv/bin/python benchmarks/bench_verification.py`` (a few minutes on 2 cores, most of it the loop at 600k
pairs; about 6 GB of memory there); ``--sizes 6000,60000`` for a quick look, ``--large-rounds 5`` for a steadier
median at 600k.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.model_selection import KFold

from overspec import metrics as M
from overspec.metrics._verification import (
    INSIGHTFACE_THRESHOLDS,
    _cosine_distance_estimates,
    _nearest_threshold,
    threshold_windows,
)

GOAL = 0.02


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


def verification_pairs(n_pairs: int, seed: int = 0, dim: int = 512, chunk: int = 65536):
    """float32 pairs: genuine = first + 6 × noise (cosine ≈ 0.16), impostor = an independent row; half each."""
    rng = np.random.default_rng(seed)
    issame = rng.random(n_pairs) < 0.5
    first = rng.standard_normal((n_pairs, dim), dtype=np.float32)
    second = np.empty_like(first)
    for start in range(0, n_pairs, chunk):
        rows = slice(start, start + chunk)
        noise = rng.standard_normal(first[rows].shape, dtype=np.float32)
        genuine = first[rows] + np.float32(6.0) * noise
        second[rows] = np.where(issame[rows, None], genuine, rng.standard_normal(noise.shape, dtype=np.float32))
    return first, second, issame


def assert_identical(result: M.VerificationResult, expected: tuple) -> None:
    """overspec's folds equal the loop's exactly: accuracies, thresholds, mean and std; the curves to rounding."""
    mean, std, accuracies, thresholds, tpr, fpr = expected
    assert (result.accuracy, result.std) == (mean, std)
    assert np.array_equal(result.fold_accuracies, accuracies) and np.array_equal(result.fold_thresholds, thresholds)
    assert np.allclose(result.tpr, tpr, rtol=0, atol=1e-15) and np.allclose(result.fpr, fpr, rtol=0, atol=1e-15)


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def bench_size(n_pairs: int, rounds: int) -> None:
    """Interleaved rounds of both sides on one pair set; print the medians, the ratio and the goal line."""
    e1, e2, issame = verification_pairs(n_pairs)
    loop_times, overspec_times = [], []
    for round_ in range(rounds):
        sides = [(loop_times, insightface_loop), (overspec_times, M.verification_kfold)]
        results = {}
        for times, function in sides if round_ % 2 == 0 else sides[::-1]:
            seconds, results[function] = _timed(function, e1, e2, issame)
            times.append(seconds)
        assert_identical(results[M.verification_kfold], results[insightface_loop])
    loop, fast = float(np.median(loop_times)), float(np.median(overspec_times))
    result = results[M.verification_kfold]
    exact = _exact_share(e1[:60_000], e2[:60_000])
    print(
        f"{n_pairs:>7} pairs x 512-d float32: insightface loop {loop:8.3f} s, overspec {fast * 1e3:8.2f} ms "
        f"({fast / n_pairs * 1e6:.3f} us a pair; {exact:.1%} of pairs near a threshold recomputed exactly), "
        f"ratio {fast / loop:.4f}  (median of {rounds}; accuracy {result.accuracy:.4f} +- {result.std:.4f}, "
        "identical every round)"
    )
    verdict = "met" if fast / loop <= GOAL else "NOT met"
    print(f"goal: 10-fold verification / insightface loop, {n_pairs} pairs: {fast / loop:.4f} <= {GOAL}: {verdict}")


def _exact_share(embeddings1: np.ndarray, embeddings2: np.ndarray) -> float:
    """Share of pairs within their nearest threshold's error window, recomputed with insightface's own arithmetic."""
    grid = INSIGHTFACE_THRESHOLDS
    estimates, safe = _cosine_distance_estimates(embeddings1, embeddings2)
    nearest = _nearest_threshold(estimates, grid)
    windows = threshold_windows(grid, embeddings1.shape[1], float(np.finfo(embeddings1.dtype).eps) / 2)
    sure = safe & (np.abs(estimates - grid[nearest]) > windows[nearest])
    return float(np.mean(~sure))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="6000,60000,600000", help="comma-separated pair counts")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per size (median taken)")
    parser.add_argument("--large-rounds", type=int, default=3, help="rounds at 200,000 pairs and more")
    args = parser.parse_args()
    print("10-fold verification (one process; wall-clock, median of interleaved rounds; ratio = overspec / loop)")
    for n_pairs in (int(size) for size in args.sizes.split(",")):
        bench_size(n_pairs, args.rounds if n_pairs < 200_000 else args.large_rounds)


if __name__ == "__main__":
    main()
