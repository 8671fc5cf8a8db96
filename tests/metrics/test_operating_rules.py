"""The three operating-point rules against the code bases they are named after, on tied and small score sets.

``at_most`` against scikit-learn's full ROC (``roc_curve(drop_intermediate=False)``), ``nearest`` against
insightface's and SMDD / MADation's selection code, ``bob`` against a sequential reimplementation of bob.measure
6.1.1's ``far_threshold`` / ``frr_threshold`` loops and hand-worked vectors (biometric-protocols.md §5.1, §10).
bob.measure itself is not installable next to numpy 2 (it pins numpy ~=1.26), so it is not an oracle here.
"""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from overspec import metrics as M

# (n_genuine, n_impostor): tiny sets where the rules part ways, and a larger one
SIZES = [(2, 2), (3, 5), (7, 4), (10, 20), (60, 80)]
TARGETS = [0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.7, 0.99, 1.0]


def tied_scores(seed: int, n_genuine: int, n_impostor: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes on a coarse grid, so ties within and across classes are common."""
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(0.6, 0.5, n_genuine), 1), np.round(rng.normal(0.0, 0.5, n_impostor), 1)


def cases():
    return [(seed, n_g, n_i) for seed in range(4) for n_g, n_i in SIZES]


def full_roc(genuine, impostor):
    """scikit-learn's full ROC, with FNR as an exact count ratio (bob's and overspec's rates)."""
    labels = np.r_[np.ones(genuine.size), np.zeros(impostor.size)]
    fpr, tpr, thresholds = roc_curve(labels, np.r_[genuine, impostor], drop_intermediate=False)
    fnr = (genuine.size - np.round(tpr * genuine.size)) / genuine.size
    return fpr, tpr, fnr, thresholds


# --- at_most: scikit-learn's full ROC -----------------------------------------------------------------------


@pytest.mark.parametrize("seed, n_genuine, n_impostor", cases())
def test_at_most_is_the_best_point_of_sklearns_full_roc(seed, n_genuine, n_impostor):
    genuine, impostor = tied_scores(seed, n_genuine, n_impostor)
    fpr, tpr, fnr, thresholds = full_roc(genuine, impostor)
    tar = M.tar_at_far(genuine, impostor, TARGETS, rule="at_most")
    bpcer = M.bpcer_at_apcer(genuine, impostor, TARGETS, rule="at_most")
    apcer = M.apcer_at_bpcer(genuine, impostor, TARGETS, rule="at_most")
    for k, target in enumerate(TARGETS):
        meeting_far = np.flatnonzero(fpr <= target)
        best = meeting_far[np.argmax(tpr[meeting_far])]
        assert tar.value[k] == tpr[meeting_far].max() == tpr[meeting_far[-1]]
        assert (tar.achieved[k], tar.threshold[k]) == (fpr[meeting_far[-1]], thresholds[meeting_far[-1]])
        assert bpcer.value[k] == pytest.approx(1.0 - tpr[best], abs=1e-15)
        assert bpcer.threshold[k] == thresholds[meeting_far[-1]]
        meeting_fnr = np.flatnonzero(fnr <= target)
        assert apcer.value[k] == fpr[meeting_fnr].min() == fpr[meeting_fnr[0]]
        assert (apcer.achieved[k], apcer.threshold[k]) == (fnr[meeting_fnr[0]], thresholds[meeting_fnr[0]])


# --- nearest: insightface and SMDD / MADation code ----------------------------------------------------------


def insightface_tar(genuine, impostor, target):
    """insightface ``eval_ijbc``: default ROC reversed, min over (distance, index) pairs."""
    labels = np.r_[np.ones(genuine.size), np.zeros(impostor.size)]
    fpr, tpr, _ = roc_curve(labels, np.r_[genuine, impostor])
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    _, index = min(zip(abs(fpr - target), range(len(fpr))))
    return tpr[index], fpr[index]


def smdd_points(genuine, impostor, target):
    """SMDD / MADation ``get_apcer_op`` (first index) and ``get_bpcer_op`` (last index) on the default ROC."""
    labels = np.r_[np.ones(genuine.size), np.zeros(impostor.size)]
    apcer, tpr, thresholds = roc_curve(labels, np.r_[genuine, impostor], pos_label=1)
    bpcer = 1 - tpr
    distance = abs(apcer - target)
    first = np.where(distance == np.min(distance))[0][0]
    distance = abs(bpcer - target)
    last = np.where(distance == np.min(distance))[0][-1]
    return (bpcer[first], thresholds[first]), (apcer[last], thresholds[last])


@pytest.mark.parametrize("seed, n_genuine, n_impostor", cases())
def test_nearest_is_insightfaces_and_smdds_rule(seed, n_genuine, n_impostor):
    genuine, impostor = tied_scores(seed, n_genuine, n_impostor)
    tar = M.tar_at_far(genuine, impostor, TARGETS, rule="nearest")
    bpcer = M.bpcer_at_apcer(genuine, impostor, TARGETS, rule="nearest")
    apcer = M.apcer_at_bpcer(genuine, impostor, TARGETS, rule="nearest")
    for k, target in enumerate(TARGETS):
        assert (tar.value[k], tar.achieved[k]) == insightface_tar(genuine, impostor, target)
        (bpcer_value, bpcer_threshold), (apcer_value, apcer_threshold) = smdd_points(genuine, impostor, target)
        assert bpcer.value[k] == pytest.approx(bpcer_value, abs=1e-15)
        assert bpcer.threshold[k] == bpcer_threshold
        assert (apcer.value[k], apcer.threshold[k]) == (apcer_value, apcer_threshold)


# --- bob: bob.measure 6.1.1 far_threshold / frr_threshold ---------------------------------------------------


def bob_far_threshold_loop(negatives, far_value):
    """bob ``far_threshold``: walk the negatives from the top, a tie group at a time, until the FAR would exceed."""
    if len(negatives) < 2:
        raise RuntimeError("the number of negative scores must be at least 2")
    ordered = sorted(negatives)
    if far_value >= 1 - np.finfo(float).eps:
        return np.nextafter(ordered[0], -np.inf)
    descending = ordered[::-1]
    threshold = np.nextafter(descending[0], np.inf)  # nothing accepted: FAR = 0
    position = 0
    while position < len(descending):
        candidate = descending[position]
        while position + 1 < len(descending) and descending[position + 1] == candidate:
            position += 1
        if (position + 1) / len(descending) > far_value:  # every negative up to here would be accepted
            break
        threshold = candidate
        position += 1
    return threshold


def bob_frr_threshold_loop(positives, frr_value):
    """bob ``frr_threshold``: walk the positives from the bottom; a tie group's FRR is taken at its last member."""
    if len(positives) < 2:
        raise RuntimeError("the number of positive scores must be at least 2")
    ascending = sorted(positives)
    if frr_value >= 1 - np.finfo(float).eps:
        return np.nextafter(ascending[-1], np.inf)
    threshold = np.nextafter(ascending[0], np.inf)
    position = 0
    while position < len(ascending):
        candidate = ascending[position]
        while position + 1 < len(ascending) and ascending[position + 1] == candidate:
            position += 1
        if position / len(ascending) > frr_value:
            break
        threshold = candidate
        position += 1
    return threshold


@pytest.mark.parametrize("seed, n_genuine, n_impostor", cases())
def test_bob_rule_equals_bobs_threshold_loops(seed, n_genuine, n_impostor):
    genuine, impostor = tied_scores(seed, n_genuine, n_impostor)
    tar = M.tar_at_far(genuine, impostor, TARGETS, rule="bob")
    bpcer = M.bpcer_at_apcer(genuine, impostor, TARGETS, rule="bob")
    apcer = M.apcer_at_bpcer(genuine, impostor, TARGETS, rule="bob")
    for k, target in enumerate(TARGETS):
        t_far = bob_far_threshold_loop(impostor, target)
        t_frr = bob_frr_threshold_loop(genuine, target)
        assert M.far_threshold(impostor, target) == t_far == tar.threshold[k] == bpcer.threshold[k]
        assert M.frr_threshold(genuine, target) == t_frr == apcer.threshold[k]
        far, frr = M.far_frr(genuine, impostor, t_far)
        assert tar.achieved[k] == far and tar.value[k] == pytest.approx(1 - frr, abs=1e-15)
        assert (bpcer.achieved[k], bpcer.value[k]) == (far, frr)
        far, frr = M.far_frr(genuine, impostor, t_frr)
        assert (apcer.value[k], apcer.achieved[k]) == (far, frr)
        assert tar.achieved[k] <= target


@pytest.mark.parametrize("seed, n_genuine, n_impostor", cases())
def test_bob_is_never_better_than_at_most_on_far_targets(seed, n_genuine, n_impostor):
    genuine, impostor = tied_scores(seed, n_genuine, n_impostor)
    targets = TARGETS[:-1]  # at FAR = 1 bob stops just below the lowest impostor: a different point
    bob = M.tar_at_far(genuine, impostor, targets, rule="bob")
    at_most = M.tar_at_far(genuine, impostor, targets, rule="at_most")
    assert np.all(bob.value <= at_most.value) and np.all(bob.achieved <= np.asarray(targets))


def test_bob_pad30_bpcer_at_apcer_hand_worked(pad30):
    # attacks from the top: .72 (1/20), .66 (2/20), .62 (3/20), .58 (4/20), .52 (5/20): bob stops on an attack
    # score, at-most may stop on a bona fide score between two attacks (.65 between .62 and .66, .55 below .58)
    bob = M.bpcer_at_apcer(pad30["bona_fide"], pad30["attack"], [0.01, 0.1, 0.2], rule="bob")
    np.testing.assert_allclose(bob.value, [0.7, 0.6, 0.4], atol=1e-12)
    np.testing.assert_array_equal(bob.threshold, [np.nextafter(0.72, np.inf), 0.66, 0.58])
    np.testing.assert_allclose(bob.achieved, [0.0, 0.1, 0.2], atol=1e-12)
    at_most = M.bpcer_at_apcer(pad30["bona_fide"], pad30["attack"], [0.01, 0.1, 0.2], rule="at_most")
    np.testing.assert_allclose(at_most.value, [0.7, 0.5, 0.3], atol=1e-12)
    assert bob.rule == "bob" and at_most.rule == "at_most"


def test_bob_pad30_apcer_at_bpcer_hand_worked(pad30):
    # bona fide without ties: bob's frr_threshold is the at-most threshold (.40, .45, .50)
    bob = M.apcer_at_bpcer(pad30["bona_fide"], pad30["attack"], [0.01, 0.1, 0.2], rule="bob")
    np.testing.assert_allclose(bob.value, [0.45, 0.35, 0.30], atol=1e-12)
    np.testing.assert_array_equal(bob.threshold, [0.40, 0.45, 0.50])


def test_bob_nonsep_roc_for_far(iris_sets):
    # bob far_threshold values of reference §10.2 and roc_for_far of §10.4, through tar_at_far
    genuine, impostor = iris_sets["nonsep_pos"], iris_sets["nonsep_neg"]
    point = M.tar_at_far(genuine, impostor, [0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0], rule="bob")
    np.testing.assert_allclose(point.achieved, [0, 0, 0, 0.02, 0.10, 0.20, 0.44, 1.0], atol=1e-12)
    np.testing.assert_allclose(1 - point.value, [0.48, 0.48, 0.48, 0.42, 0.12, 0.10, 0.06, 0.0], atol=1e-12)
    assert point.threshold[-1] == np.nextafter(impostor.min(), -np.inf)


def test_bob_threshold_on_the_top_impostor_of_180():
    # reference §5.1: 180 impostors, FAR 0.01: both rules realise FAR 1/180, bob's threshold is the top impostor
    # score, the at-most threshold the genuine score 178.5 just below it
    impostor, genuine = np.arange(180.0), np.array([150.0, 178.5, 200.0, 201.0])
    bob = M.tar_at_far(genuine, impostor, 0.01, rule="bob")
    at_most = M.tar_at_far(genuine, impostor, 0.01, rule="at_most")
    assert (bob.threshold, bob.achieved, bob.value) == (179.0, 1 / 180, 0.5)
    assert (at_most.threshold, at_most.achieved, at_most.value) == (178.5, 1 / 180, 0.75)


def test_bob_far_threshold_compares_rates_not_a_ceiled_index():
    # 7 of 10 negatives >= 3.0 is FAR 0.7 <= 0.7: bob keeps 3.0; ceil((1 - 0.7) * 10) = ceil(3.0000000000000004)
    # = 4 would give 4.0 (FAR 0.6)
    assert M.far_threshold(np.arange(10.0), 0.7) == 3.0
    assert M.tar_at_far(np.arange(10.0), np.arange(10.0), 0.7, rule="bob").achieved == 0.7


def test_bob_frr_threshold_counts_a_tie_group_at_its_last_member():
    bona_fide, attack = [0.2, 0.5, 0.5, 0.9], [0.1, 0.3, 0.5, 0.7]
    # group 0.5 holds positions 1-2: bob estimates its FRR as 2/4 > 0.3 and stops at 0.2, although t = 0.5
    # rejects only 1/4
    assert M.frr_threshold(bona_fide, 0.3) == 0.2
    bob = M.apcer_at_bpcer(bona_fide, attack, 0.3, rule="bob")
    assert (bob.value, bob.achieved, bob.threshold) == (0.75, 0.0, 0.2)
    at_most = M.apcer_at_bpcer(bona_fide, attack, 0.3, rule="at_most")
    assert (at_most.value, at_most.achieved, at_most.threshold) == (0.5, 0.25, 0.5)


def test_bob_frr_threshold_lowest_group_too_large():
    # the lowest group (positions 0-2) is estimated at 2/4 > 0.25: bob returns just above it, rejecting 3 of 4
    bona_fide = [0.2, 0.2, 0.2, 0.9]
    assert M.frr_threshold(bona_fide, 0.25) == np.nextafter(0.2, np.inf)
    point = M.apcer_at_bpcer(bona_fide, [0.1, 0.3, 0.5, 0.7], 0.25, rule="bob")
    assert (point.achieved, point.value) == (0.75, 0.75)


@pytest.mark.parametrize("call, name", [
    (lambda: M.tar_at_far([0.9, 0.8], [0.1], 0.1, rule="bob"), "impostor"),
    (lambda: M.bpcer_at_apcer([0.9, 0.8], [0.1], 0.1, rule="bob"), "attack"),
    (lambda: M.apcer_at_bpcer([0.9], [0.1, 0.2], 0.1, rule="bob"), "bona_fide"),
    (lambda: M.far_threshold([0.1], 0.1), "impostor"),
    (lambda: M.frr_threshold([0.9], 0.1), "genuine"),
])
def test_bob_needs_two_scores_of_the_constrained_class(call, name):
    with pytest.raises(ValueError, match=f"^{name} has 1 score: bob's threshold rule needs at least 2"):
        call()
