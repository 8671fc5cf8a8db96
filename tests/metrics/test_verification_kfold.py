"""10-fold counting of verification_kfold against insightface's per-threshold loop: ties, uneven folds, curves."""

import numpy as np
import pytest
from sklearn.model_selection import KFold

from overspec import metrics as M
from overspec.metrics._verification import INSIGHTFACE_THRESHOLDS, kfold_from_distances


def insightface_grid_loop(dist, issame, n_folds=10):
    """insightface ``calculate_roc`` / ``calculate_accuracy`` on given distances, threshold by threshold."""
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

    tprs, fprs = np.zeros((n_folds, thresholds.size)), np.zeros((n_folds, thresholds.size))
    accuracies, best_thresholds = np.zeros(n_folds), np.zeros(n_folds)
    for fold, (train, test) in enumerate(KFold(n_splits=n_folds, shuffle=False).split(np.arange(issame.size))):
        acc_train = np.array([accuracy(t, dist[train], issame[train])[2] for t in thresholds])
        best = np.argmax(acc_train)
        for k, threshold in enumerate(thresholds):
            tprs[fold, k], fprs[fold, k], _ = accuracy(threshold, dist[test], issame[test])
        accuracies[fold] = accuracy(thresholds[best], dist[test], issame[test])[2]
        best_thresholds[fold] = thresholds[best]
    return np.mean(accuracies), np.std(accuracies), accuracies, best_thresholds, tprs.mean(0), fprs.mean(0)


def assert_equals_loop(result, expected):
    mean, std, accuracies, thresholds, tpr, fpr = expected
    assert (result.accuracy, result.std) == (mean, std)
    np.testing.assert_array_equal(result.fold_accuracies, accuracies)
    np.testing.assert_array_equal(result.fold_thresholds, thresholds)
    np.testing.assert_allclose(result.tpr, tpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(result.fpr, fpr, rtol=0, atol=1e-15)


def tied_distances(n_pairs, seed):
    """Distances on grid thresholds exactly, one ULP either side, and in between; labels leaning to small distances."""
    rng = np.random.default_rng(seed)
    on_grid = INSIGHTFACE_THRESHOLDS[rng.integers(0, 400, n_pairs)]
    distances = np.select([rng.random(n_pairs) < 0.3, rng.random(n_pairs) < 0.3, rng.random(n_pairs) < 0.5],
                          [on_grid, np.nextafter(on_grid, -1), np.nextafter(on_grid, 5)], rng.uniform(0, 4, n_pairs))
    issame = rng.random(n_pairs) < 1 / (1 + np.exp(3 * (distances - 1.5)))
    return distances.astype(np.float32) if seed % 2 else distances, issame


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_folds", [10, 3])
def test_kfold_counts_equal_the_loop_with_ties_at_thresholds(seed, n_folds):
    distances, issame = tied_distances(997 + seed, seed)  # folds of unequal size
    expected = insightface_grid_loop(distances, issame, n_folds)
    assert_equals_loop(kfold_from_distances(distances, issame, n_folds), expected)


def test_kfold_counts_with_a_fold_without_genuine_pairs():
    distances, issame = tied_distances(400, 7)
    issame[:40] = False  # fold 0 has no "same" pair: its TPR is 0 at every threshold, as in the loop
    issame[40:80] = True  # fold 1 has no "different" pair
    assert_equals_loop(kfold_from_distances(distances, issame), insightface_grid_loop(distances, issame))


def test_verification_kfold_equals_the_loop_at_lfw_size():
    """6,000 benchmark-like 512-d float32 pairs (LFW's size): every fold, threshold and curve point identical."""
    rng = np.random.default_rng(11)
    n_pairs = 6000
    issame = rng.random(n_pairs) < 0.5
    first = rng.standard_normal((n_pairs, 512), dtype=np.float32)
    genuine = first + np.float32(6.0) * rng.standard_normal((n_pairs, 512), dtype=np.float32)
    second = np.where(issame[:, None], genuine, rng.standard_normal((n_pairs, 512), dtype=np.float32))

    def normalise(x):
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        norms[norms == 0] = 1
        return x / norms[:, None]

    distances = np.sum(np.square(normalise(first) - normalise(second)), 1)
    assert_equals_loop(M.verification_kfold(first, second, issame), insightface_grid_loop(distances, issame))
