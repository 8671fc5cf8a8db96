"""Public API contract: every documented example runs, hand-worked toy cases, shapes of vector results."""

import doctest
import importlib
import inspect

import numpy as np
import pytest

from overspec import metrics as M

MODULES = ["_roc", "_eer", "_operating", "_pad", "_verification", "_identification"]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(f"overspec.metrics.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", [n for n in M.__all__ if inspect.isfunction(getattr(M, n))])
def test_public_functions_document_an_example(name):
    assert ">>>" in (getattr(M, name).__doc__ or ""), f"{name} has no runnable example"


def test_far_frr_vector_thresholds_hand_worked():
    far, frr = M.far_frr([1, 2, 3, 4], [0, 1, 2], [-np.inf, 1, 2.5, np.inf])
    np.testing.assert_allclose(far, [1, 2 / 3, 0, 0])
    np.testing.assert_allclose(frr, [0, 0, 0.5, 1])


def test_single_score_per_class():
    assert M.eer([1.0], [0.0]).value == 0.0
    assert M.auc([1.0], [0.0]) == 1.0
    point = M.tar_at_far([1.0], [0.0], 0.0)
    assert (point.value, point.reachable) == (1.0, False)


def test_vector_targets_give_arrays_scalar_targets_give_floats():
    genuine, impostor = [0.9, 0.8, 0.4, 0.7], [0.1, 0.5, 0.2]
    scalar = M.tar_at_far(genuine, impostor, 0.5)
    assert isinstance(scalar.value, float) and isinstance(scalar.reachable, bool)
    vector = M.tar_at_far(genuine, impostor, [0.0, 0.5])
    assert vector.value.shape == (2,) and vector.threshold.shape == (2,)


def test_hter_toy_hand_worked():
    # dev: bob EER threshold between 0.4 and 0.7 (0.55); test at 0.55: impostor 0.6 accepted, genuine 0.5 rejected
    result = M.hter([0.9, 0.7], [0.2, 0.4], [0.8, 0.5], [0.3, 0.6])
    assert (result.threshold, result.far, result.frr, result.value, result.criterion) == (
        0.55, 0.5, 0.5, 0.5, "dev-eer"
    )


def test_iso30107_species_shape_checked():
    with pytest.raises(ValueError, match="attack_species must have one label per attack score"):
        M.iso30107([0.9], [0.1, 0.2], ["print"], 0.5)


def test_identification_toy_hand_worked():
    # probe a: mate 0.9 beats 0.2 -> rank 1; probe b: mate 0.7 vs non-mate 0.7 tie -> rank 2 (pessimistic)
    scores = [[0.9, 0.2], [0.7, 0.7], [0.3, 0.8]]
    assert M.rank_k(scores, ["a", "b", "z"], ["a", "b"], k=1) == 0.5
    assert M.rank_k(scores, ["a", "b", "z"], ["a", "b"], k=2) == 1.0
    # one non-mated probe (max 0.8) -> threshold 0.8 at any FPIR; probe a's 0.9 > 0.8 is the only true positive
    result = M.tpir_at_fpir(scores, ["a", "b", "z"], ["a", "b"], fpir=[0.01, 1.0])
    np.testing.assert_array_equal(result.tpir, [0.5, 0.5])
    np.testing.assert_array_equal(result.fpir, [1.0, 1.0])


def test_identification_needs_mated_and_nonmated_probes():
    with pytest.raises(ValueError, match="needs both mated and non-mated"):
        M.tpir_at_fpir([[0.9, 0.1]], ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="scores contains NaN"):
        M.rank_k([[np.nan, 0.1]], ["a"], ["a", "b"])


def test_verification_input_checks():
    e = np.ones((4, 3))
    with pytest.raises(ValueError, match="differ in shape"):
        M.verification_kfold(e, np.ones((4, 2)), [True] * 4, n_folds=2)
    with pytest.raises(ValueError, match="issame must have one entry per pair"):
        M.verification_kfold(e, e, [True] * 3, n_folds=2)
    with pytest.raises(ValueError, match="embeddings1 contains NaN"):
        M.verification_kfold(np.full((4, 3), np.nan), e, [True] * 4, n_folds=2)
    with pytest.raises(ValueError, match="n_folds must be between 2"):
        M.verification_kfold(e, e, [True] * 4, n_folds=5)
