"""The selection paths (bob EER, bob FAR thresholds, at-most TAR@FAR without sorting the larger class) against
independent computations: bob's sequential loop, bob's documented ``far_threshold`` loop, scikit-learn's ROC.

Sizes above 2 x 65,536 scores make the larger class go through the sampled cut; some orders are built so that the
strided sample misleads it, which must cost time only.
"""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from overspec import metrics as M
from overspec.metrics._selection import smallest_count_above, top_ascending
from tests.metrics.test_metrics_oracles import bob_eer_threshold_loop


def tied(rng, n, mean, decimals):
    """Normal scores rounded to ``decimals``: ties inside and across classes."""
    return np.round(rng.normal(mean, 1.0, n), decimals)


def bob_far_threshold_loop(negatives, target):
    """bob.measure ``far_threshold`` as documented: walk tie groups from the top while #(>= score) / N <= target."""
    scores = np.sort(negatives)[::-1]
    if target >= 1 - np.finfo(np.float64).eps:
        return np.nextafter(scores[-1], -np.inf)
    valid, position = np.nextafter(scores[0], np.inf), 0
    while position < scores.size:
        current = scores[position]
        while position < scores.size - 1 and scores[position + 1] == current:
            position += 1
        if (position + 1) / scores.size > target:
            break
        valid, position = current, position + 1
    return valid


def check_bob_eer(genuine, impostor):
    """eer(method='bob') has bob's loop threshold and the rates counted at it."""
    result = M.eer(genuine, impostor, "bob")
    assert result.threshold == bob_eer_threshold_loop(impostor, genuine)
    far = np.count_nonzero(impostor >= result.threshold) / impostor.size
    frr = np.count_nonzero(genuine < result.threshold) / genuine.size
    assert (result.far, result.frr, result.value) == (far, frr, (far + frr) / 2)


@pytest.mark.parametrize("seed", range(40))
def test_bob_eer_equals_the_sequential_loop_on_small_tied_sets(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 60, 2)
    decimals = int(rng.integers(0, 3))
    genuine, impostor = tied(rng, sizes[0], rng.normal(0, 2), decimals), tied(rng, sizes[1], 0.0, decimals)
    check_bob_eer(genuine, impostor)
    check_bob_eer(impostor, genuine)


@pytest.mark.parametrize(
    "genuine, impostor",
    [
        ([1.0, 1.0, 1.0], [1.0, 1.0]),  # every score equal
        ([5.0, 6.0], [1.0, 2.0, 3.0]),  # separated: EER 0
        ([1.0, 2.0], [5.0, 6.0, 7.0]),  # inverted: everything wrong
        ([0.5], [0.1, 0.5, 0.9]),  # one genuine, tied with an impostor
        ([0.0, 1.0, 2.0, 3.0], [1.5]),  # one impostor
        ([2.0, 2.0, 3.0], [2.0, 3.0, 3.0]),  # both maxima equal: the "reject all" candidate is the next one
    ],
)
def test_bob_eer_edge_sets(genuine, impostor):
    check_bob_eer(np.array(genuine), np.array(impostor))


@pytest.mark.parametrize("order", ["random", "sorted", "misleading"])
def test_bob_eer_on_large_sets_whatever_the_order(order):
    rng = np.random.default_rng(7)
    genuine, impostor = tied(rng, 3_000, 1.5, 3), tied(rng, 140_000, 0.0, 3)
    if order == "sorted":
        impostor = np.sort(impostor)
    elif order == "misleading":
        # the strided sample (every other score) sees only the lowest half of the impostor scores
        ordered = np.sort(impostor)
        impostor = np.empty_like(ordered)
        impostor[0::2], impostor[1::2] = ordered[: ordered.size // 2], ordered[ordered.size // 2:]
    check_bob_eer(genuine, impostor)


def test_top_ascending_holds_the_largest_scores_with_their_ties():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=300_000), 2)
    hidden = np.sort(scores)
    hidden_top = np.empty_like(hidden)  # the largest scores at odd positions, which the strided sample skips
    hidden_top[0::2], hidden_top[1::2] = hidden[: hidden.size // 2], hidden[hidden.size // 2:]
    for values in (scores, hidden_top):
        for count in (1, 17, 3_000, 140_000, 200_000):
            top = top_ascending(values, count)
            expected = np.sort(values)[values.size - top.size:]
            assert top.size >= count and np.array_equal(top, expected)
            lowest = top[0]
            above = top[top > lowest]
            assert above.size == np.count_nonzero(values > lowest)


@pytest.mark.parametrize("total", [1, 3, 7, 10, 99_000, 9_900_000])
def test_smallest_count_above_is_the_first_count_whose_rate_exceeds(total):
    for rate in [0.0, 1e-4, 1e-3, 0.01, 1 / 3, 0.1, 0.5, 0.999, 1.0]:
        k = smallest_count_above(rate, total)
        assert k / total > rate and (k == 0 or (k - 1) / total <= rate)


@pytest.mark.parametrize("seed", range(4))
def test_at_most_and_bob_far_rules_on_large_tied_sets(seed):
    rng = np.random.default_rng(seed)
    genuine, impostor = tied(rng, 2_000, 2.0, 2), tied(rng, 150_000, 0.0, 2)
    if seed % 2:
        impostor = np.sort(impostor)[::-1]
    targets = [0.0, 1e-5, 1e-4, 1e-3, 0.0101, 0.3, 0.7, 1.0]
    labels, scores = np.r_[np.ones(genuine.size), np.zeros(impostor.size)], np.r_[genuine, impostor]
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    chosen = np.searchsorted(fpr, targets, side="right") - 1
    at_most = M.tar_at_far(genuine, impostor, targets)
    np.testing.assert_array_equal(at_most.threshold, thresholds[chosen])
    np.testing.assert_array_equal(at_most.value, tpr[chosen])
    np.testing.assert_array_equal(at_most.achieved, fpr[chosen])
    bpcer = M.bpcer_at_apcer(genuine, impostor, targets).value  # (N - k) / N, not 1 - k / N: compared as counts
    np.testing.assert_array_equal(np.rint(bpcer * genuine.size), genuine.size - np.rint(tpr[chosen] * genuine.size))
    bob = M.tar_at_far(genuine, impostor, targets, rule="bob")
    expected = np.array([bob_far_threshold_loop(impostor, t) for t in targets])
    np.testing.assert_array_equal(bob.threshold, expected)
    np.testing.assert_array_equal(bob.achieved, [np.count_nonzero(impostor >= t) / impostor.size for t in expected])
    np.testing.assert_array_equal(bob.value, [np.count_nonzero(genuine >= t) / genuine.size for t in expected])
    pad = M.bpcer_at_apcer(genuine, impostor, targets, rule="bob")
    np.testing.assert_array_equal(pad.value, [np.count_nonzero(genuine < t) / genuine.size for t in expected])
    assert M.far_threshold(impostor, 1e-4) == expected[2]
