"""Pair-set verification protocol: flip-sum embedding and insightface 10-fold accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from overspec.protocols.verification import evaluate_verification, flip_sum_embeddings

# biometric-protocols.md §10.8: 20 pairs, e1 = (1, 0), e2 = (cos a, sin a), even pairs are "same".
ANGLES = [0.10, 1.60, 0.30, 1.20, 0.90, 1.50, 0.20, 0.70, 1.10, 1.40,
          0.40, 1.30, 0.80, 0.60, 0.50, 1.70, 1.00, 0.95, 0.25, 1.45]
ISSAME = [True, False] * 10


def _interleaved(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    out = np.empty((2 * first.shape[0], first.shape[1]))
    out[0::2], out[1::2] = first, second
    return out


def _reference_pairs() -> np.ndarray:
    a = np.asarray(ANGLES)
    return _interleaved(np.tile([1.0, 0.0], (20, 1)), np.column_stack([np.cos(a), np.sin(a)]))


def test_flip_sum_adds_raw_embeddings_before_normalising():
    # (3, 0) + (0, 1) = (3, 1) / sqrt(10); normalising each first would give (1, 1) / sqrt(2).
    np.testing.assert_allclose(flip_sum_embeddings([[3.0, 0.0]], [[0.0, 1.0]]), [[3 / 10**0.5, 1 / 10**0.5]])
    np.testing.assert_allclose(flip_sum_embeddings([[0.0, 2.0]], None), [[0.0, 1.0]])
    np.testing.assert_array_equal(flip_sum_embeddings([[0.0, 0.0]], [[0.0, 0.0]]), [[0.0, 0.0]])


def test_reference_ten_fold_example():
    joint = _reference_pairs()
    # Split each unit vector into two unequal raw passes whose sum points the same way; normalising the passes
    # before summing would change the direction, so the vector only comes out if the protocol sums raw vectors.
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.3, size=joint.shape)
    result = evaluate_verification(0.2 * joint + noise, 3.0 * joint - noise, ISSAME)
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["accuracy_std"] == pytest.approx(0.25)
    np.testing.assert_allclose(result["fold_accuracies"], [1, 1, 0.5, 0.5, 0.5, 1, 0.5, 1, 0.5, 1])
    np.testing.assert_allclose(result["fold_thresholds"], [1.10, 1.10, 0.25, 1.10, 0.25, 1.10, 1.10, 1.10, 1.10, 1.10])
    assert result["num_pairs"] == 20


def test_tar_at_far_extra_matches_scikit_learn_roc():
    rng = np.random.default_rng(5)
    pairs = 400
    issame = np.arange(pairs) % 2 == 0
    first = rng.normal(size=(pairs, 8))
    second = np.where(issame[:, None], first + rng.normal(0, 0.9, size=(pairs, 8)), rng.normal(size=(pairs, 8)))
    result = evaluate_verification(_interleaved(first, second), None, issame, far=0.05)
    cosine = np.sum(first * second, axis=1) / np.linalg.norm(first, axis=1) / np.linalg.norm(second, axis=1)
    fpr, tpr, _ = roc_curve(issame, cosine, drop_intermediate=False)
    expected = tpr[np.flatnonzero(fpr <= 0.05)[-1]]  # best TAR with FAR <= 5 %
    assert result["tar_at_far"]["tar"] == pytest.approx(expected)
    assert result["tar_at_far"]["achieved_far"] <= 0.05 and result["tar_at_far"]["rule"] == "at_most"


def test_xnorm_is_mean_raw_norm_of_both_passes():
    emb = np.array([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0], [0.0, 2.0]])  # norms 5, 1, 1, 2
    flip = np.array([[0.0, 2.0], [6.0, 8.0], [0.0, 3.0], [4.0, 0.0]])  # norms 2, 10, 3, 4
    assert evaluate_verification(emb, flip, [True, False], n_folds=2)["xnorm"] == pytest.approx(28 / 8)


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match="even number of rows"):
        evaluate_verification(np.ones((3, 4)), None, [True])
    with pytest.raises(ValueError, match="issame must have 2 entries"):
        evaluate_verification(np.ones((4, 4)), None, [True])
    with pytest.raises(ValueError, match="emb_flip shape"):
        evaluate_verification(np.ones((4, 4)), np.ones((4, 3)), [True, False])
