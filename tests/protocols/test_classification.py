"""Classification metrics: hand-worked vectors, ties, scikit-learn agreement and input errors."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

from overspec.protocols._classification import classification_metrics, per_sample_predictions


def test_hand_worked_three_samples() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2]])
    labels = np.array([0, 2, 0])
    out = per_sample_predictions(scores, labels)
    np.testing.assert_array_equal(out["pred"], [0, 2, 1])
    np.testing.assert_array_equal(out["correct"], [True, True, False])
    metrics = classification_metrics(scores, labels)
    assert metrics["acc1"] == pytest.approx(2 / 3)
    # class 0: 1 of 2 right, class 2: 1 of 1 right; class 1 absent from labels is ignored
    assert metrics["mean_per_class_recall"] == pytest.approx(0.75)
    assert np.isnan(metrics["acc5"])


def test_top5_counts_true_class_ranked_within_five() -> None:
    scores = np.array([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0], [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    labels = np.array([4, 5])  # ranks 4 (inside the top 5) and 5 (outside)
    out = per_sample_predictions(scores, labels)
    np.testing.assert_array_equal(out["correct5"], [True, False])
    np.testing.assert_array_equal(out["correct"], [False, False])
    assert classification_metrics(scores, labels)["acc5"] == pytest.approx(0.5)


def test_ties_go_to_lower_class_index_consistently() -> None:
    scores = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    out = per_sample_predictions(scores, np.array([0, 1]))
    np.testing.assert_array_equal(out["pred"], [0, 0])
    np.testing.assert_array_equal(out["correct"], [True, False])


def test_constant_scores_predict_class_zero() -> None:
    metrics = classification_metrics(np.zeros((4, 6)), np.array([0, 1, 2, 3]))
    assert metrics["acc1"] == pytest.approx(0.25)
    assert metrics["acc5"] == pytest.approx(1.0)  # ranks 0..3


def test_agrees_with_scikit_learn_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((400, 12))
    labels = rng.integers(0, 11, size=400)  # class 11 never occurs in labels
    top = np.argmax(scores[:50], axis=1)
    labels[:50] = np.where(top < 11, top, labels[:50])
    metrics = classification_metrics(scores, labels)
    pred = np.argmax(scores, axis=1)
    assert metrics["acc1"] == pytest.approx(np.mean(pred == labels))
    assert metrics["acc5"] == pytest.approx(top_k_accuracy_score(labels, scores, k=5, labels=np.arange(12)))
    with pytest.warns(UserWarning):  # scikit-learn warns that predictions include a class absent from y_true
        expected = balanced_accuracy_score(labels, pred)
    assert metrics["mean_per_class_recall"] == pytest.approx(expected)


def test_order_of_samples_does_not_matter() -> None:
    rng = np.random.default_rng(1)
    scores, labels = rng.standard_normal((50, 7)), rng.integers(0, 7, size=50)
    perm = rng.permutation(50)
    assert classification_metrics(scores, labels) == classification_metrics(scores[perm], labels[perm])


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.zeros(3), np.array([0, 1, 2]), "2-D"),
        (np.zeros((3, 2)), np.array([0, 1]), "one per score row"),
        (np.zeros((2, 2)), np.array([0, 2]), r"labels must lie in \[0, 2\)"),
        (np.array([[0.0, np.nan]]), np.array([0]), "NaN"),
        (np.zeros((2, 2)), np.array([0.0, 1.0]), "integer"),
        (np.zeros((0, 2)), np.array([], dtype=int), "empty"),
    ],
)
def test_rejects_malformed_input(scores: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(scores, labels)
