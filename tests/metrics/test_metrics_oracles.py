"""Metrics against independent computations: scikit-learn, and literal loop ports of the legacy code they mirror.

The ports below are written the way the reference code bases compute (per threshold / per probe loops); they are
the oracles, the vectorised library is the code under test.
"""

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from scipy.spatial import ConvexHull
from sklearn.metrics import det_curve, roc_auc_score, roc_curve
from sklearn.model_selection import KFold

from overspec import metrics as M

SEEDS = range(6)


def scores_with_ties(seed: int, n_genuine: int = 60, n_impostor: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes rounded to one decimal, so ties within and across classes are common."""
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(1.0, 1.0, n_genuine), 1), np.round(rng.normal(0.0, 1.0, n_impostor), 1)


def labelled(genuine, impostor):
    return np.r_[np.ones(genuine.size), np.zeros(impostor.size)], np.r_[genuine, impostor]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("drop", [False, True])
def test_roc_equals_sklearn(seed, drop):
    genuine, impostor = scores_with_ties(seed)
    fpr, tpr, thresholds = roc_curve(*labelled(genuine, impostor), drop_intermediate=drop)
    curve = M.roc(genuine, impostor, drop_intermediate=drop)
    np.testing.assert_allclose(curve.far, fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(curve.tar, tpr, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(curve.thresholds, thresholds)


@pytest.mark.parametrize("seed", SEEDS)
def test_auc_and_det_equal_sklearn(seed):
    genuine, impostor = scores_with_ties(seed)
    labels, scores = labelled(genuine, impostor)
    assert M.auc(genuine, impostor) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    fpr, fnr, thresholds = det_curve(labels, scores, drop_intermediate=False)
    curve = M.det(genuine, impostor)
    np.testing.assert_allclose(curve.far, fpr, atol=1e-15)
    np.testing.assert_allclose(curve.frr, fnr, atol=1e-12)
    np.testing.assert_array_equal(curve.thresholds, thresholds)


def bob_eer_threshold_loop(negatives, positives, weighted=False):
    """bob.measure ``_minimizing_threshold`` as a sequential loop over the merged sorted lists (exact counts)."""
    neg, pos = np.sort(negatives), np.sort(positives)
    n_neg, n_pos = neg.size, pos.size

    def predicate(fa, fr):  # in units of 1 / (n_neg * n_pos), exact
        return fa * n_pos + fr * n_neg if weighted else abs(fa * n_pos - fr * n_neg)

    fa, fr, i_neg, i_pos = n_neg, 0, 0, 0
    current = min(neg[0], pos[0])
    best_value, best_threshold = None, None
    while i_pos < n_pos and i_neg < n_neg:
        value = predicate(fa, fr)
        if best_value is None or value <= best_value:
            best_value, best_threshold = value, current
        if pos[i_pos] >= neg[i_neg]:
            current = neg[i_neg]
        else:
            current = pos[i_pos]
        while i_neg < n_neg and neg[i_neg] == current:
            i_neg, fa = i_neg + 1, fa - 1
        while i_pos < n_pos and pos[i_pos] == current:
            i_pos, fr = i_pos + 1, fr + 1
        if i_neg < n_neg or i_pos < n_pos:
            if i_neg < n_neg and i_pos < n_pos:
                current = (current + min(neg[i_neg], pos[i_pos])) / 2
            elif i_neg < n_neg:
                current = (current + neg[i_neg]) / 2
            else:
                current = (current + pos[i_pos]) / 2
        else:
            current = np.nextafter(current, np.inf)
    if predicate(fa, fr) < best_value:
        best_value, best_threshold = predicate(fa, fr), current
    if (i_neg < n_neg or i_pos < n_pos) and predicate(0, n_pos) < best_value:
        best_threshold = np.nextafter(max(neg[-1], pos[-1]), np.inf)
    return best_threshold


@pytest.mark.parametrize("seed", SEEDS)
def test_bob_thresholds_equal_sequential_loop(seed):
    genuine, impostor = scores_with_ties(seed)
    assert M.eer(genuine, impostor, "bob").threshold == bob_eer_threshold_loop(impostor, genuine)
    via_hter = M.hter(genuine, impostor, genuine, impostor, criterion="min-hter").threshold
    assert via_hter == bob_eer_threshold_loop(impostor, genuine, weighted=True)


def pyeer_eer(genuine, impostor):
    """pyeer 0.5.6 ``calculate_roc`` + ``get_eer_values`` (FVC2000), ported line by line."""
    stacked = sorted([(s, 1) for s in genuine] + [(s, 0) for s in impostor], key=lambda item: item[0])
    scores = np.array(stacked)
    cumulative = np.cumsum(scores[:, 1])
    thresholds, first = np.unique(scores[:, 0], return_index=True)
    fnm = cumulative[first] - scores[first][:, 1]
    fm = impostor.size - (first - fnm)
    fnmr, fmr = fnm / genuine.size, fm / impostor.size
    diff = fmr - fnmr
    t2 = np.where(diff <= 0)[0][0]
    t1 = t2 - 1 if diff[t2] != 0 and t2 != 0 else t2
    chosen = t1 if fmr[t1] + fnmr[t1] <= fmr[t2] + fnmr[t2] else t2
    return (fnmr[chosen] + fmr[chosen]) / 2, thresholds[chosen]


def ssdg_eer(genuine, impostor):
    """SSDG ``get_EER_states`` ported: 10,001-point grid plus 1.1, last threshold of minimal |FRR - FAR|."""
    probs, labels = np.r_[genuine, impostor], np.r_[np.ones(genuine.size), np.zeros(impostor.size)]
    best = (1.0, None)
    for i in list(range(10001)) + [None]:
        thr = 1.1 if i is None else 0.0 + i * 1.0 / 10000.0
        predict = probs >= thr
        far = np.sum((labels == 0) & predict) / np.sum(labels == 0)
        frr = np.sum((labels == 1) & ~predict) / np.sum(labels == 1)
        if abs(frr - far) <= best[0]:
            best = (abs(frr - far), ((far + frr) / 2.0, thr))
    return best[1]


def brentq_eer(genuine, impostor):
    """DG-FAS ``brentq`` EER on scikit-learn's ROC."""
    fpr, tpr, _ = roc_curve(*labelled(genuine, impostor))
    return brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)


def madation_eer(genuine, impostor):
    fpr, tpr, thresholds = roc_curve(*labelled(genuine, impostor))
    index = np.nanargmin(np.abs(tpr + fpr - 1.0))
    return fpr[index], thresholds[index]


def hull_eer(genuine, impostor):
    """EER of the ROC convex hull via qhull: crossing of the lower-left hull boundary with FAR = FRR."""
    curve = M.roc(genuine, impostor)
    points = np.unique(np.c_[curve.far, curve.frr], axis=0)
    points = np.vstack([points, [1.0, 1.0]])
    hull = points[ConvexHull(points).vertices]
    best = 1.0
    for a, b in zip(hull, np.roll(hull, -1, axis=0)):
        if (a[0] - a[1]) * (b[0] - b[1]) <= 0 and not np.allclose(a, b):
            # segment crosses the diagonal: solve a + s (b - a) on x = y
            denominator = (b[0] - a[0]) - (b[1] - a[1])
            s = 0.0 if denominator == 0 else (a[1] - a[0]) / denominator
            best = min(best, a[0] + s * (b[0] - a[0]))
    return best


@pytest.mark.parametrize("seed", SEEDS)
def test_eer_variants_equal_ported_code(seed):
    genuine, impostor = scores_with_ties(seed)
    value, threshold = pyeer_eer(genuine, impostor)
    fvc = M.eer(genuine, impostor, "fvc")
    assert (fvc.value, fvc.threshold) == (value, threshold)
    assert M.eer(genuine, impostor, "interp").value == pytest.approx(brentq_eer(genuine, impostor), abs=1e-9)
    value, threshold = madation_eer(genuine, impostor)
    argmin = M.eer(genuine, impostor, "argmin")
    assert (argmin.value, argmin.threshold) == (value, threshold)
    assert M.eer(genuine, impostor, "rocch").value == pytest.approx(hull_eer(genuine, impostor), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_ssdg_eer_equals_ported_grid_loop(seed):
    rng = np.random.default_rng(seed)
    genuine = np.round(rng.beta(5, 2, 40), 2)
    impostor = np.round(rng.beta(2, 4, 50), 2)
    result = M.eer(genuine, impostor, "ssdg")
    assert (result.value, result.threshold) == ssdg_eer(genuine, impostor)


def brute_force_at_most(genuine, impostor, target, constrain="far"):
    """Every distinct score (and +inf) as threshold; best other rate among those meeting the target."""
    best = None
    for threshold in np.r_[np.unique(np.r_[genuine, impostor]), np.inf]:
        far, frr = M.far_frr(genuine, impostor, threshold)
        constrained, other = (far, frr) if constrain == "far" else (frr, far)
        if constrained <= target and (best is None or other < best):
            best = other
    return best


@pytest.mark.parametrize("seed", SEEDS)
def test_at_most_rules_equal_brute_force(seed):
    genuine, impostor = scores_with_ties(seed)
    targets = [0.0, 0.005, 0.01, 0.0125, 0.1, 0.3, 1.0]
    tar = M.tar_at_far(genuine, impostor, targets)
    bpcer = M.bpcer_at_apcer(genuine, impostor, targets)
    apcer = M.apcer_at_bpcer(genuine, impostor, targets)
    for i, target in enumerate(targets):
        assert 1 - tar.value[i] == pytest.approx(brute_force_at_most(genuine, impostor, target, "far"))
        assert bpcer.value[i] == pytest.approx(brute_force_at_most(genuine, impostor, target, "far"))
        assert apcer.value[i] == pytest.approx(brute_force_at_most(genuine, impostor, target, "frr"))
        assert tar.achieved[i] <= target and apcer.achieved[i] <= target
        assert M.far_frr(genuine, impostor, tar.threshold[i]) == pytest.approx((tar.achieved[i], 1 - tar.value[i]))


@pytest.mark.parametrize("seed", SEEDS)
def test_nearest_rules_equal_legacy_code(seed):
    genuine, impostor = scores_with_ties(seed)
    fpr, tpr, thresholds = roc_curve(*labelled(genuine, impostor))
    targets = [0.0, 0.001, 0.01, 0.0125, 0.05, 0.1, 0.2, 0.5]
    # insightface eval_ijbc: reverse the arrays, argmin |fpr - target|
    flipped_fpr, flipped_tpr = np.flipud(fpr), np.flipud(tpr)
    expected_tar = [flipped_tpr[np.argmin(np.abs(flipped_fpr - t))] for t in targets]
    np.testing.assert_allclose(M.tar_at_far(genuine, impostor, targets, "nearest").value, expected_tar, atol=1e-15)
    # MADation get_apcer_op: first index of argmin |apcer - op|; get_bpcer_op: last index of min |bpcer - op|
    bpcer = 1 - tpr
    first = [np.argmin(abs(fpr - t)) for t in targets]
    got = M.bpcer_at_apcer(genuine, impostor, targets, "nearest")
    np.testing.assert_allclose(got.value, bpcer[first], atol=1e-15)
    np.testing.assert_array_equal(got.threshold, thresholds[first])
    last = [np.where(abs(bpcer - t) == np.min(abs(bpcer - t)))[0][-1] for t in targets]
    got = M.apcer_at_bpcer(genuine, impostor, targets, "nearest")
    np.testing.assert_allclose(got.value, fpr[last], atol=1e-15)
    np.testing.assert_array_equal(got.threshold, thresholds[last])


def insightface_calculate_roc(embeddings1, embeddings2, issame, n_folds=10):
    """insightface ``evaluate`` / ``calculate_roc`` / ``calculate_accuracy`` (no PCA), ported."""
    thresholds = np.arange(0, 4, 0.01)

    def normalise(x):
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        norms[norms == 0] = 1
        return x / norms[:, None]

    dist = np.sum(np.square(normalise(embeddings1) - normalise(embeddings2)), 1)
    accuracy, best_thresholds = [], []
    for train, test in KFold(n_splits=n_folds, shuffle=False).split(np.arange(issame.size)):
        acc_train = np.zeros(thresholds.size)
        for k, threshold in enumerate(thresholds):
            predict = np.less(dist[train], threshold)
            correct = np.sum(predict & issame[train]) + np.sum(~predict & ~issame[train])
            acc_train[k] = float(correct) / dist[train].size
        best = np.argmax(acc_train)
        predict = np.less(dist[test], thresholds[best])
        correct = np.sum(predict & issame[test]) + np.sum(~predict & ~issame[test])
        accuracy.append(float(correct) / dist[test].size)
        best_thresholds.append(thresholds[best])
    return np.mean(accuracy), np.std(accuracy), np.array(best_thresholds), np.array(accuracy)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_verification_kfold_equals_insightface_loop(seed, dtype):
    rng = np.random.default_rng(seed)
    n_pairs = 301 + seed
    issame = rng.random(n_pairs) < 0.5
    e1 = rng.normal(size=(n_pairs, 16)).astype(dtype)
    noise = rng.normal(size=(n_pairs, 16)).astype(dtype)
    e2 = np.where(issame[:, None], e1 + 0.9 * noise, noise).astype(dtype)
    mean, std, thresholds, accuracies = insightface_calculate_roc(e1, e2, issame)
    result = M.verification_kfold(e1, e2, issame)
    assert (result.accuracy, result.std) == (mean, std)
    np.testing.assert_array_equal(result.fold_thresholds, thresholds)
    np.testing.assert_array_equal(result.fold_accuracies, accuracies)


def insightface_1n(similarity, query_ids, reg_ids, fars):
    """insightface ``ijb_evals.evaluation_1N`` TPIR part and top-k counts, ported (loop over probes)."""
    top = {1: 0, 5: 0}
    pos_sims, neg_sims, non_gallery = [], [], []
    for index, query_id in enumerate(query_ids):
        if query_id in reg_ids:
            label = np.argwhere(reg_ids == query_id)[0, 0]
            order = np.argsort(similarity[index])[::-1]
            for k in top:
                top[k] += label in order[:k]
            pos_sims.append(similarity[index][reg_ids == query_id][0])
            neg_sims.append(similarity[index][reg_ids != query_id])
        else:
            non_gallery.append(similarity[index])
    pos_sims, neg_sims, non_gallery = np.array(pos_sims), np.array(neg_sims), np.array(non_gallery)
    correct = pos_sims > neg_sims.max(1)
    non_gallery_max = non_gallery.max(1)
    ordered = np.sort(non_gallery_max)[::-1]
    tpirs, threshes = [], []
    for far in fars:
        thresh = ordered[max(int(ordered.shape[0] * far) - 1, 0)]
        tpirs.append(np.logical_and(correct, pos_sims > thresh).sum() / pos_sims.shape[0])
        threshes.append(thresh)
    return {k: v / len(pos_sims) for k, v in top.items()}, np.array(tpirs), np.array(threshes)


@pytest.mark.parametrize("seed", range(4))
def test_identification_equals_insightface(seed):
    rng = np.random.default_rng(seed)
    gallery_ids = np.arange(30)
    probe_ids = rng.integers(0, 45, 200)  # ids >= 30 are not enrolled
    similarity = rng.normal(size=(200, 30))
    enrolled = probe_ids < 30
    similarity[np.flatnonzero(enrolled), probe_ids[enrolled]] += 2.5
    fars = [0.01, 0.05, 0.1, 0.3, 1.0]
    tops, tpirs, threshes = insightface_1n(similarity, probe_ids, gallery_ids, fars)
    result = M.tpir_at_fpir(similarity, probe_ids, gallery_ids, fars)
    np.testing.assert_array_equal(result.tpir, tpirs)
    np.testing.assert_array_equal(result.threshold, threshes)
    # continuous scores: no ties, so the argsort ranks of insightface and our pessimistic ranks agree
    np.testing.assert_allclose(M.rank_k(similarity, probe_ids, gallery_ids, [1, 5]), [tops[1], tops[5]])


@pytest.mark.parametrize("seed", range(3))
def test_verification_kfold_equals_insightface_loop_at_thresholds(seed):
    """512-d float32 pairs placed on and a few ULPs around grid thresholds: folds and thresholds identical."""
    rng = np.random.default_rng(seed)
    centres = np.arange(0, 4, 0.01)[rng.integers(0, 400, 800)]
    targets = np.clip(centres + rng.choice([0.0, 1e-7, -1e-7, 1e-6, -1e-6, 1e-4, -1e-4], 800), 0, 4)
    first = rng.normal(size=(800, 512))
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    other = rng.normal(size=(800, 512))
    other -= np.sum(other * first, axis=1, keepdims=True) * first
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    cosine = 1 - targets / 2
    second = cosine[:, None] * first + np.sqrt(1 - cosine**2)[:, None] * other
    e1, e2 = (3.0 * first).astype(np.float32), (0.7 * second).astype(np.float32)
    issame = (targets + rng.normal(0, 0.5, 800)) < 2.0
    mean, std, thresholds, accuracies = insightface_calculate_roc(e1, e2, issame)
    result = M.verification_kfold(e1, e2, issame)
    assert (result.accuracy, result.std) == (mean, std)
    np.testing.assert_array_equal(result.fold_thresholds, thresholds)
    np.testing.assert_array_equal(result.fold_accuracies, accuracies)
