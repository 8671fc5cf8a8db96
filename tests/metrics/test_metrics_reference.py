"""Every test vector of biometric-protocols.md §10, at the precision stated there."""

import numpy as np
import pytest

from overspec import metrics as M


def test_iris_sets_are_the_listed_bob_vectors(iris_sets):
    assert iris_sets["linsep_neg"][:6].tolist() == [1.4, 1.4, 1.3, 1.5, 1.4, 1.7]
    assert iris_sets["linsep_pos"][-4:].tolist() == [5.0, 5.2, 5.4, 5.1]
    assert iris_sets["linsep_pos"][:6].tolist() == [6.0, 5.1, 5.9, 5.6, 5.8, 6.6]
    assert iris_sets["nonsep_neg"][:6].tolist() == [5.1, 4.9, 4.7, 4.6, 5.0, 5.4]
    assert iris_sets["nonsep_pos"][:6].tolist() == [7.0, 6.4, 6.9, 5.5, 6.5, 5.7]
    assert all(v.size == 50 for v in iris_sets.values())


# --- §10.2 nonsep ---------------------------------------------------------------------------------------------


@pytest.fixture
def nonsep(iris_sets):
    return iris_sets["nonsep_pos"], iris_sets["nonsep_neg"]


def test_nonsep_bob_eer_and_min_hter(nonsep):
    result = M.eer(*nonsep, method="bob")
    assert result.threshold == pytest.approx(5.45)
    assert (result.value, result.far, result.frr) == pytest.approx((0.11, 0.10, 0.12))
    assert M.hter(*nonsep, *nonsep, criterion="min-hter").threshold == pytest.approx(5.45)


def test_nonsep_eer_variants(nonsep):
    rocch = M.eer(*nonsep, method="rocch")
    assert rocch.value == pytest.approx(0.116363636, abs=1e-9)
    interp = M.eer(*nonsep, method="interp")
    assert interp.value == pytest.approx(0.1166667, abs=1e-7)
    assert interp.threshold == pytest.approx(5.4833, abs=1e-4)
    argmin = M.eer(*nonsep, method="argmin")
    assert (argmin.value, argmin.frr, argmin.threshold) == pytest.approx((0.10, 0.12, 5.5))
    fvc = M.eer(*nonsep, method="fvc")
    assert (fvc.value, min(fvc.far, fvc.frr), max(fvc.far, fvc.frr), fvc.threshold) == pytest.approx(
        (0.11, 0.10, 0.12, 5.5)
    )


def test_nonsep_rocch_hull_points(nonsep):
    hull = M.rocch(*nonsep)
    # Bosaris order is FAR descending; ours ascending.
    np.testing.assert_allclose(hull.far[::-1], [1, 0.68, 0.28, 0.10, 0.06, 0, 0], atol=1e-12)
    np.testing.assert_allclose(hull.frr[::-1], [0, 0, 0.08, 0.12, 0.22, 0.48, 1], atol=1e-12)


def test_nonsep_auc_exact_and_log_scale(nonsep):
    assert M.auc(*nonsep) == pytest.approx(0.9326, abs=1e-12)
    assert M.auc(*nonsep, log_scale=True) == pytest.approx(1.4183699583300993, rel=1e-12)


@pytest.mark.parametrize(
    "far, threshold, far_real, frr_real",
    [
        (0.0, np.nextafter(5.8, np.inf), 0.0, 0.48),
        (0.001, np.nextafter(5.8, np.inf), 0.0, 0.48),
        (0.01, np.nextafter(5.8, np.inf), 0.0, 0.48),
        (0.05, 5.8, 0.02, 0.42),
        (0.1, 5.5, 0.10, 0.12),
        (0.2, 5.4, 0.20, 0.10),
        (0.5, 5.1, 0.44, 0.06),
    ],
)
def test_nonsep_bob_far_threshold(nonsep, far, threshold, far_real, frr_real):
    found = M.far_threshold(nonsep[1], far)
    assert found == threshold
    assert M.far_frr(*nonsep, found) == pytest.approx((far_real, frr_real))


@pytest.mark.parametrize(
    "frr, threshold, far_real, frr_real",
    [(0.01, 4.9, 0.68, 0.0), (0.05, 5.0, 0.60, 0.02), (0.1, 5.4, 0.20, 0.10), (0.2, 5.5, 0.10, 0.12)],
)
def test_nonsep_bob_frr_threshold(nonsep, frr, threshold, far_real, frr_real):
    found = M.frr_threshold(nonsep[0], frr)
    assert found == threshold
    assert M.far_frr(*nonsep, found) == pytest.approx((far_real, frr_real))


def test_nonsep_pyeer_operating_points(nonsep):
    # pyeer's FMR-N values coincide here with the insightface nearest rule, its ZeroFNMR with the at-most rule.
    fnmr = 1.0 - M.tar_at_far(*nonsep, [0.01, 0.001, 0.0, 0.05, 0.1], rule="nearest").value
    np.testing.assert_allclose(fnmr, [0.42, 0.48, 0.48, 0.22, 0.12], atol=1e-12)
    assert M.apcer_at_bpcer(*nonsep, 0.0).value == pytest.approx(0.68)


def test_nonsep_decidability_dev_eval_and_ppndf(nonsep, iris_sets):
    assert M.d_prime(*nonsep) == pytest.approx(2.12556, abs=1e-5)
    pos, neg = nonsep
    result = M.hter(pos[:25], neg[:25], pos[25:], neg[25:], criterion="min-hter")
    assert result.threshold == pytest.approx(5.45)
    assert (result.far, result.frr, result.value) == pytest.approx((0.08, 0.12, 0.10))
    np.testing.assert_allclose(
        M.ppndf([0.001, 0.01, 0.1, 0.5, 0.9]), [-3.0902, -2.3263, -1.2816, 0.0, 1.2816], atol=1e-4
    )


NONSEP_SKLEARN_ROC = [
    (0, 0, np.inf), (0, .02, 7.0), (0, .06, 6.8), (0, .12, 6.7), (0, .16, 6.6), (0, .18, 6.5), (0, .22, 6.4),
    (0, .28, 6.3), (0, .32, 6.2), (0, .48, 6.0), (0, .52, 5.9), (.02, .58, 5.8), (.06, .68, 5.7), (.06, .78, 5.6),
    (.10, .88, 5.5), (.20, .90, 5.4), (.22, .90, 5.3), (.28, .92, 5.2), (.44, .94, 5.1), (.60, .98, 5.0),
    (.68, 1, 4.9), (.78, 1, 4.8), (.82, 1, 4.7), (.90, 1, 4.6), (.92, 1, 4.5), (.98, 1, 4.4), (1, 1, 4.3),
]


def test_nonsep_roc_points_listed(nonsep):
    curve = M.roc(*nonsep, drop_intermediate=True)
    listed = np.array(NONSEP_SKLEARN_ROC)
    np.testing.assert_allclose(curve.far, listed[:, 0], atol=1e-12)
    np.testing.assert_allclose(curve.tar, listed[:, 1], atol=1e-12)
    np.testing.assert_array_equal(curve.thresholds, listed[:, 2])


# --- §10.3 linsep ---------------------------------------------------------------------------------------------


def test_linsep_expectations(iris_sets):
    pos, neg = iris_sets["linsep_pos"], iris_sets["linsep_neg"]
    for method in ("bob", "rocch", "interp", "fvc", "argmin"):
        assert M.eer(pos, neg, method=method).value == 0.0, method
    assert M.eer(pos, neg, method="bob").threshold == pytest.approx(3.2)
    assert M.hter(pos, neg, pos, neg, criterion="min-hter").threshold == pytest.approx(3.2)
    assert M.eer(pos, neg, method="fvc").threshold == 4.5
    assert M.eer(pos, neg, method="argmin").threshold == 4.5
    assert M.auc(pos, neg) == 1.0
    assert M.d_prime(pos, neg) == pytest.approx(10.0987, abs=1e-4)


# --- §10.4 bob.measure's own expectations ---------------------------------------------------------------------


def test_bob_linsep_far_frr(iris_sets):
    pos, neg = iris_sets["linsep_pos"], iris_sets["linsep_neg"]
    low, high = min(pos.min(), neg.min()) - 0.1, max(pos.max(), neg.max()) + 0.1
    assert M.far_frr(pos, neg, low) == (1.0, 0.0)
    assert M.far_frr(pos, neg, high) == (0.0, 1.0)
    assert M.far_frr(pos, neg, 3.0) == (0.0, 0.0)


def test_bob_roc_for_far(nonsep):
    point = M.tar_at_far(*nonsep, [0.01, 0.1, 1.0])
    np.testing.assert_allclose(point.achieved, [0.0, 0.1, 1.0], atol=1e-12)
    np.testing.assert_allclose(1.0 - point.value, [0.48, 0.12, 0.0], atol=1e-12)


def test_bob_uncomputable_thresholds():
    pos = [0, 0, 0, 0, 0.1, 0.2, 0.3, 0.4, 0.5]
    neg = [0.5, 0.6, 0.7, 0.8, 0.9, 1, 1, 1, 1]
    assert M.far_threshold(neg, 0.5) == 1.0
    assert M.frr_threshold(pos, 0.5) == pytest.approx(0.1)
    same = np.arange(10.0)
    assert M.far_threshold(same, 0.11) == 9.0
    assert M.far_threshold(same, 0.91) == 1.0
    assert M.far_threshold(same, 1.0) <= 0.0
    assert M.frr_threshold(same, 0.11) == 1.0
    assert M.frr_threshold(same, 0.91) == 9.0


def test_bob_obvious_thresholds():
    neg, pos = np.arange(10.0), np.arange(10.0, 20.0)
    for step in range(21):
        rate = step / 20
        expected = (step // 2) / 10
        far, _ = M.far_frr(pos, neg, M.far_threshold(neg, rate))
        _, frr = M.far_frr(pos, neg, M.frr_threshold(pos, rate))
        assert far == pytest.approx(expected) and far <= rate
        assert frr == pytest.approx(expected) and frr <= rate


def test_bob_cmc_toy():
    probes = [((0.3, 1.1, 0.5), (0.7,)), ((1.4, -1.3, 0.6), (0.2,)), ((0.8, 0, 1.5), (-0.8, 1.8)),
              ((2, 1.3, 1.6, 0.9), (2.4,))]
    # One gallery row per score; probes with fewer entries are padded with far-below non-mate scores.
    width = max(len(neg) + len(pos) for neg, pos in probes)
    scores = np.full((len(probes), width), -100.0)
    gallery_ids = np.array([f"g{j}" for j in range(width)])
    probe_ids = []
    for row, (neg, pos) in enumerate(probes):
        scores[row, : len(pos)] = pos
        scores[row, len(pos) : len(pos) + len(neg)] = neg
        probe_ids.append(f"p{row}")
    # Per-probe mates: relabel the mate columns of each row to that probe's id through a per-row gallery.
    rates = []
    for k in (1, 2, 3, 4, 5):
        hits = 0
        for row, (neg, pos) in enumerate(probes):
            ids = gallery_ids.copy()
            ids[: len(pos)] = probe_ids[row]
            hits += M.rank_k(scores[row : row + 1], [probe_ids[row]], ids, k=k)
        rates.append(hits / len(probes))
    assert rates == pytest.approx([0.5, 0.75, 1.0, 1.0, 1.0])


# --- §10.5 30-score PAD / MAD example -------------------------------------------------------------------------


def test_pad30_auc_and_eer_variants(pad30):
    bf, att = pad30["bona_fide"], pad30["attack"]
    assert M.auc(bf, att) == pytest.approx(0.8475, abs=1e-12)
    bob = M.eer(bf, att, method="bob")
    assert (bob.value, bob.far, bob.frr, bob.threshold) == pytest.approx((0.275, 0.25, 0.30, 0.51))
    ssdg = M.eer(bf, att, method="ssdg")
    assert (ssdg.value, ssdg.threshold) == pytest.approx((0.275, 0.52))
    argmin = M.eer(bf, att, method="argmin")
    assert (argmin.value, argmin.frr, argmin.threshold) == pytest.approx((0.25, 0.30, 0.52))
    fvc = M.eer(bf, att, method="fvc")
    assert (fvc.value, min(fvc.far, fvc.frr), max(fvc.far, fvc.frr), fvc.threshold) == pytest.approx(
        (0.25, 0.2, 0.3, 0.5)
    )
    interp = M.eer(bf, att, method="interp")
    assert interp.value == pytest.approx(0.26667, abs=1e-5)
    assert interp.threshold == pytest.approx(0.50833, abs=1e-5)
    assert M.eer(bf, att, method="rocch").value == pytest.approx(0.242857, abs=1e-6)
    assert M.d_eer(bf, att).value == pytest.approx(0.25)


def test_pad30_foundpad_hter(pad30):
    result = M.hter_at_test_eer(pad30["bona_fide"], pad30["attack"], method="argmin")
    assert (result.value, result.far, result.frr, result.threshold) == pytest.approx((0.275, 0.25, 0.30, 0.52))


@pytest.mark.parametrize(
    "criterion, threshold, apcer_print, apcer_replay, bpcer, acer, pooled",
    [("bpcer10", 0.72, 0.0, 0.1, 0.7, 0.4, 0.05), ("bpcer5", 0.66, 0.0, 0.2, 0.6, 0.4, 0.1),
     ("eer", 0.51, 0.1, 0.4, 0.3, 0.35, 0.25)],
)
def test_pad30_iso_per_pai(pad30, criterion, threshold, apcer_print, apcer_replay, bpcer, acer, pooled):
    t = M.iso30107_threshold(pad30["bona_fide"], pad30["attack"], pad30["species"], criterion)
    assert t == pytest.approx(threshold)
    result = M.iso30107(pad30["bona_fide"], pad30["attack"], pad30["species"], t)
    assert result.apcer == pytest.approx({"print": apcer_print, "replay": apcer_replay})
    assert result.apcer_ap == pytest.approx(max(apcer_print, apcer_replay))
    assert (result.bpcer, result.acer, result.apcer_pooled) == pytest.approx((bpcer, acer, pooled))


def test_pad30_iso_fixed_threshold(pad30):
    result = M.iso30107(pad30["bona_fide"], pad30["attack"], pad30["species"], 0.5)
    assert result.apcer == pytest.approx({"print": 0.2, "replay": 0.4})
    assert (result.bpcer, result.acer) == pytest.approx((0.2, 0.30))


def test_pad30_bpcer_at_apcer(pad30):
    nearest = M.bpcer_at_apcer(pad30["bona_fide"], pad30["attack"], [0.01, 0.1, 0.2], rule="nearest")
    np.testing.assert_allclose(nearest.value, [1.0, 0.6, 0.4], atol=1e-12)
    np.testing.assert_array_equal(nearest.threshold, [np.inf, 0.66, 0.58])
    at_most = M.bpcer_at_apcer(pad30["bona_fide"], pad30["attack"], [0.01, 0.1, 0.2])
    np.testing.assert_allclose(at_most.value, [0.7, 0.5, 0.3], atol=1e-12)
    np.testing.assert_array_equal(at_most.threshold, [0.75, 0.65, 0.55])
    np.testing.assert_array_equal(at_most.reachable, [False, True, True])


def test_pad30_apcer_at_bpcer(pad30):
    nearest = M.apcer_at_bpcer(pad30["bona_fide"], pad30["attack"], [0.01, 0.1], rule="nearest")
    np.testing.assert_allclose(nearest.value, [1.0, 0.4], atol=1e-12)
    np.testing.assert_array_equal(nearest.threshold, [0.05, 0.44])
    at_most = M.apcer_at_bpcer(pad30["bona_fide"], pad30["attack"], [0.01, 0.1, 0.2])
    np.testing.assert_allclose(at_most.value, [0.45, 0.35, 0.30], atol=1e-12)
    np.testing.assert_array_equal(at_most.threshold, [0.40, 0.45, 0.50])
    # at most on the full ROC equals bob's frr_threshold on the pooled attacks
    for target, value in zip([0.01, 0.1, 0.2], at_most.value):
        far, _ = M.far_frr(pad30["bona_fide"], pad30["attack"], M.frr_threshold(pad30["bona_fide"], target))
        assert far == pytest.approx(value)


def test_pad30_drop_intermediate_roc_points(pad30):
    curve = M.roc(pad30["bona_fide"], pad30["attack"], drop_intermediate=True)
    listed = [(0, 1, np.inf), (0, .9, .9), (0, .7, .75), (.05, .7, .72), (.05, .6, .7), (.1, .6, .66), (.1, .5, .65),
              (.15, .5, .62), (.15, .4, .6), (.2, .4, .58), (.2, .3, .55), (.25, .3, .52), (.35, .1, .45),
              (.4, .1, .44), (.45, 0, .4)]
    got = list(zip(curve.far, curve.frr, curve.thresholds))[: len(listed)]
    np.testing.assert_allclose(np.array(got), np.array(listed), atol=1e-12)
    assert (curve.far[-1], curve.frr[-1], curve.thresholds[-1]) == (1.0, 0.0, 0.05)


# --- §10.6 per-PAI rule (the CSV itself is not available offline: synthetic equivalent) -------------------------


def test_per_pai_bpcer20_is_max_of_species_thresholds():
    rng = np.random.default_rng(6)
    sizes = [966, 992, 960, 1034, 1048]
    species = np.repeat([f"x{i}" for i in range(5)], sizes)
    attack = np.concatenate([rng.normal(-10 + i, 6, n) for i, n in enumerate(sizes)])
    bona_fide = rng.normal(10, 6, 5000)
    t = M.iso30107_threshold(bona_fide, attack, species, "bpcer20")
    result = M.iso30107(bona_fide, attack, species, t)
    assert result.apcer_ap <= 0.05
    worst = max(result.apcer, key=result.apcer.get)
    # The worst species sits on its own bob threshold; one step lower would push it above 5 %.
    worst_scores = attack[species == worst]
    assert t == M.far_threshold(worst_scores, 0.05)
    below = worst_scores[worst_scores < t].max()
    assert np.count_nonzero(worst_scores >= below) / worst_scores.size > 0.05


# --- §10.7 TAR@FAR selection ----------------------------------------------------------------------------------


def test_tar_at_far_selection_rules(nonsep):
    nearest = M.tar_at_far(*nonsep, [0.01, 0.05, 0.1, 0.2], rule="nearest")
    np.testing.assert_allclose(nearest.value, [0.58, 0.78, 0.88, 0.90], atol=1e-12)
    np.testing.assert_allclose(nearest.achieved, [0.02, 0.06, 0.10, 0.20], atol=1e-12)
    at_most = M.tar_at_far(*nonsep, [0.01, 0.05, 0.1, 0.2], rule="at_most")
    np.testing.assert_allclose(at_most.value, [0.52, 0.58, 0.88, 0.90], atol=1e-12)
    np.testing.assert_allclose(at_most.achieved, [0.0, 0.02, 0.10, 0.20], atol=1e-12)


# --- §10.8 10-fold verification -------------------------------------------------------------------------------


def test_ten_fold_verification_example():
    angles = np.array([0.10, 1.60, 0.30, 1.20, 0.90, 1.50, 0.20, 0.70, 1.10, 1.40, 0.40, 1.30, 0.80, 0.60, 0.50,
                       1.70, 1.00, 0.95, 0.25, 1.45])
    e1 = np.tile([1.0, 0.0], (20, 1))
    e2 = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    np.testing.assert_allclose(np.sum((e1 - e2) ** 2, axis=1)[:4], [0.0100, 2.0584, 0.0893, 1.2753], atol=1e-4)
    result = M.verification_kfold(e1, e2, [True, False] * 10, n_folds=10)
    np.testing.assert_allclose(result.fold_thresholds, [1.10, 1.10, 0.25, 1.10, 0.25, 1.10, 1.10, 1.10, 1.10, 1.10])
    np.testing.assert_array_equal(result.fold_accuracies, [1, 1, 0.5, 0.5, 0.5, 1, 0.5, 1, 0.5, 1])
    assert (result.accuracy, result.std) == (0.75, 0.25)
