"""Property tables walked over the metric functions: order, monotone transforms, swaps, bad input, edge cases."""

import numpy as np
import pytest

from overspec import metrics as M

def _species(impostor):
    return ["a" if i % 3 else "b" for i in range(len(impostor))]


# name -> (function of (genuine, impostor) returning numbers, invariant to strictly increasing transforms?)
RATE_METRICS = {
    "auc": (lambda g, i: M.auc(g, i), True),
    "auc_log": (lambda g, i: M.auc(g, i, log_scale=True), True),
    "roc": (lambda g, i: np.r_[M.roc(g, i).far, M.roc(g, i).tar], True),
    "det": (lambda g, i: np.r_[M.det(g, i).far, M.det(g, i).frr], True),
    "rocch": (lambda g, i: np.r_[M.rocch(g, i).far, M.rocch(g, i).tar], True),
    **{
        f"eer_{method}": (lambda g, i, m=method: [M.eer(g, i, m).value, M.eer(g, i, m).far], method != "ssdg")
        for method in M.EER_METHODS
    },
    "tar_at_far_at_most": (lambda g, i: M.tar_at_far(g, i, [0.01, 0.1, 0.5]).value, True),
    "tar_at_far_nearest": (lambda g, i: M.tar_at_far(g, i, [0.01, 0.1, 0.5], "nearest").value, True),
    "bpcer_at_apcer": (lambda g, i: M.bpcer_at_apcer(g, i, [0.05, 0.2]).value, True),
    "bpcer_at_apcer_nearest": (lambda g, i: M.bpcer_at_apcer(g, i, [0.05, 0.2], "nearest").value, True),
    "apcer_at_bpcer": (lambda g, i: M.apcer_at_bpcer(g, i, [0.05, 0.2]).value, True),
    "apcer_at_bpcer_nearest": (lambda g, i: M.apcer_at_bpcer(g, i, [0.05, 0.2], "nearest").value, True),
    "hter_eer": (lambda g, i: M.hter(g, i, g[::2], i[::2]).value, True),
    "hter_min_hter": (lambda g, i: M.hter(g, i, g[::2], i[::2], criterion="min-hter").value, True),
    "hter_at_test_eer": (lambda g, i: M.hter_at_test_eer(g, i).value, True),
    "d_eer": (lambda g, i: M.d_eer(g, i).value, True),
    "iso30107_bpcer10": (
        lambda g, i: list(
            M.iso30107(g, i, _species(i), M.iso30107_threshold(g, i, _species(i), "bpcer10")).apcer.values()
        ),
        True,
    ),
    "d_prime": (lambda g, i: M.d_prime(g, i), False),
}


def data(seed=0):
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(0.3, 1.0, 40), 2), np.round(rng.uniform(0.0, 0.7, 50), 2)


@pytest.mark.parametrize("name", RATE_METRICS)
def test_invariant_to_sample_order(name):
    function, _ = RATE_METRICS[name]
    genuine, impostor = data(1)
    if name.startswith("hter_") or name.startswith("iso30107"):
        pytest.skip("inputs built from positions (dev/test split, species labels); order covered by the cases below")
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(
        np.asarray(function(genuine, impostor)), np.asarray(function(rng.permutation(genuine), rng.permutation(impostor)))
    )


@pytest.mark.parametrize("name", RATE_METRICS)
@pytest.mark.parametrize("transform", [lambda x: np.exp(3 * x), lambda x: x**3 + 10 * x - 4], ids=["exp", "cubic"])
def test_strictly_increasing_transform(name, transform):
    function, invariant = RATE_METRICS[name]
    if not invariant:
        pytest.skip("not rank-based by design: the SSDG grid assumes probabilities, d' uses means and variances")
    genuine, impostor = data(2)
    before = np.asarray(function(genuine, impostor), dtype=float)
    after = np.asarray(function(transform(genuine), transform(impostor)), dtype=float)
    np.testing.assert_allclose(after, before, atol=1e-12)


@pytest.mark.parametrize("method", ["bob", "rocch", "interp", "fvc"])
def test_swap_and_negate_gives_the_same_eer(method):
    # Swapping the roles and negating the scores describes the same decisions: the EER value is unchanged and the
    # two error rates trade places.
    genuine, impostor = data(3)
    original = M.eer(genuine, impostor, method)
    mirrored = M.eer(-impostor, -genuine, method)
    assert mirrored.value == pytest.approx(original.value, abs=1e-12)
    if method == "bob":
        assert (mirrored.far, mirrored.frr) == pytest.approx((original.frr, original.far))


def test_swapping_classes_complements_auc():
    genuine, impostor = data(4)
    assert M.auc(impostor, genuine) == pytest.approx(1.0 - M.auc(genuine, impostor), abs=1e-12)


# name -> (call with the genuine-like and impostor-like argument, argument names)
SCORE_FUNCTIONS = {
    "roc": (lambda g, i: M.roc(g, i), ("genuine", "impostor")),
    "det": (lambda g, i: M.det(g, i), ("genuine", "impostor")),
    "auc": (lambda g, i: M.auc(g, i), ("genuine", "impostor")),
    "rocch": (lambda g, i: M.rocch(g, i), ("genuine", "impostor")),
    "far_frr": (lambda g, i: M.far_frr(g, i, 0.5), ("genuine", "impostor")),
    "d_prime": (lambda g, i: M.d_prime(g, i), ("genuine", "impostor")),
    **{f"eer_{m}": (lambda g, i, m=m: M.eer(g, i, m), ("genuine", "impostor")) for m in M.EER_METHODS},
    "tar_at_far": (lambda g, i: M.tar_at_far(g, i, 0.1), ("genuine", "impostor")),
    "bpcer_at_apcer": (lambda g, i: M.bpcer_at_apcer(g, i, 0.1), ("bona_fide", "attack")),
    "apcer_at_bpcer": (lambda g, i: M.apcer_at_bpcer(g, i, 0.1), ("bona_fide", "attack")),
    "hter_dev": (lambda g, i: M.hter(g, i, [0.5], [0.2]), ("dev_genuine", "dev_impostor")),
    "hter_test": (lambda g, i: M.hter([0.5], [0.2], g, i), ("test_genuine", "test_impostor")),
    "hter_at_test_eer": (lambda g, i: M.hter_at_test_eer(g, i), ("genuine", "impostor")),
    "d_eer": (lambda g, i: M.d_eer(g, i), ("bona_fide", "attack")),
    "iso30107": (lambda g, i: M.iso30107(g, i, ["a"] * len(i), 0.5), ("bona_fide", "attack")),
    "iso30107_threshold": (lambda g, i: M.iso30107_threshold(g, i, ["a"] * len(i), "eer"), ("bona_fide", "attack")),
    "far_threshold": (lambda g, i: M.far_threshold(i, 0.1), (None, "impostor")),
    "frr_threshold": (lambda g, i: M.frr_threshold(g, 0.1), ("genuine", None)),
}
GOOD = [0.9, 0.8, 0.7]


@pytest.mark.parametrize("name", SCORE_FUNCTIONS)
@pytest.mark.parametrize("bad, message", [([0.5, np.nan], "NaN or infinite"), ([0.5, np.inf], "NaN or infinite"),
                                          ([], "is empty")])
@pytest.mark.parametrize("position", [0, 1])
def test_bad_scores_rejected_naming_the_argument(name, bad, message, position):
    function, names = SCORE_FUNCTIONS[name]
    if names[position] is None:
        pytest.skip("argument not used by this function")
    args = [GOOD, [0.1, 0.2]]
    args[position] = bad
    with pytest.raises(ValueError, match=f"^{names[position]} .*{message}"):
        function(*args)


@pytest.mark.parametrize("call", [
    lambda: M.eer(GOOD, GOOD, method="average"),
    lambda: M.tar_at_far(GOOD, GOOD, 0.1, rule="closest"),
    lambda: M.hter(GOOD, GOOD, GOOD, GOOD, criterion="far"),
    lambda: M.iso30107_threshold(GOOD, GOOD, ["a"] * 3, "half"),
])
def test_unknown_option_lists_accepted_values(call):
    with pytest.raises(ValueError, match="is not one of"):
        call()


@pytest.mark.parametrize("target", [-0.1, 1.5, np.nan])
def test_target_rates_outside_unit_interval_rejected(target):
    with pytest.raises(ValueError, match="far must lie in"):
        M.tar_at_far(GOOD, [0.1], target)


@pytest.mark.parametrize("method", [m for m in M.EER_METHODS if m != "argmin"])
def test_constant_scores(method):
    result = M.eer([0.4] * 5, [0.4] * 7, method)
    assert result.value == pytest.approx(0.5)
    assert M.auc([0.4] * 5, [0.4] * 7) == 0.5


def test_constant_scores_argmin_reproduces_the_legacy_artefact():
    # scikit-learn's ROC is (0, 0, inf), (1, 1, 0.4); both are equally far from TPR + FPR = 1 and the first wins
    result = M.eer([0.4] * 5, [0.4] * 7, "argmin")
    assert (result.value, result.frr, result.threshold) == (0.0, 1.0, np.inf)


@pytest.mark.parametrize("method", [m for m in M.EER_METHODS if m != "ssdg"])
def test_perfect_scores(method):
    genuine, impostor = [0.9, 0.8, 0.95], [0.1, 0.3, 0.2, 0.25]
    result = M.eer(genuine, impostor, method)
    assert result.value == 0.0
    assert M.far_frr(genuine, impostor, result.threshold) == (0.0, 0.0)
    assert M.auc(genuine, impostor) == 1.0
    assert M.tar_at_far(genuine, impostor, 0.0).value == 1.0
    assert M.apcer_at_bpcer(genuine, impostor, 0.0).value == 0.0


def test_all_ties_across_classes_are_accepted_together():
    # genuine and impostor share 0.5: at t = 0.5 both are accepted (a false accept and a true accept)
    assert M.far_frr([0.5, 0.9], [0.5, 0.1], 0.5) == (0.5, 0.0)
    curve = M.roc([0.5, 0.9], [0.5, 0.1])
    assert list(zip(curve.far, curve.tar)) == [(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]
    assert M.auc([0.5, 0.9], [0.5, 0.1]) == pytest.approx(0.875)  # the tie counts one half


def test_iso30107_and_hter_invariant_to_order():
    genuine, impostor = data(6)
    species = np.array(_species(impostor))
    rng = np.random.default_rng(7)
    order = rng.permutation(impostor.size)
    first = M.iso30107(genuine, impostor, species, 0.5)
    second = M.iso30107(rng.permutation(genuine), impostor[order], species[order], 0.5)
    assert first == second
    assert M.iso30107_threshold(genuine, impostor, species, "bpcer10") == M.iso30107_threshold(
        genuine, impostor[order], species[order], "bpcer10"
    )
    assert M.hter(genuine, impostor, genuine, impostor) == M.hter(
        rng.permutation(genuine), impostor[order], genuine[::-1], impostor[::-1]
    )
