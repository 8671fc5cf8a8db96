"""1:N rank-k and TPIR@FPIR reduced a block of probe rows at a time, on float32 and float64 matrices.

The reference is a plain per-probe loop in float64 (insightface ``ijb_evals.py``'s open-set definitions with
bob's pessimistic ties), independent of the vectorised reduction; blocks are shrunk so that they split the probes.
"""

import numpy as np
import pytest

from overspec import metrics as M
from overspec.errors import InputError
from overspec.metrics import _identification

FPIRS = [0.0, 0.01, 0.1, 0.3, 0.5, 1.0]
RANKS = [1, 2, 5, 20]


def matrix(seed: int, tied: bool, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of 57 probes (some of unenrolled subjects) against 20 gallery entries (two for subject 3)."""
    rng = np.random.default_rng(seed)
    gallery = np.r_[np.arange(19), 3]
    probes = rng.integers(0, 30, 57)
    scores = rng.normal(0.0, 1.0, (57, 20)) + 2.0 * (probes[:, None] == gallery[None, :])
    if tied:
        scores = np.round(scores, 0)
    return scores.astype(dtype), probes, gallery


def reference(scores, probes, gallery):
    """Per probe: (mated, mate score, rank) or the non-mated maximum, by a plain loop in float64."""
    mated, nonmated = [], []
    for row, subject in zip(scores.astype(np.float64), probes, strict=True):
        is_mate = gallery == subject
        if is_mate.any():
            mate = max(row[is_mate])
            mated.append((mate, 1 + sum(1 for s, m in zip(row, is_mate, strict=True) if not m and s >= mate)))
        else:
            nonmated.append(max(row))
    return mated, nonmated


def reference_rank(mated, k):
    return sum(1 for _, rank in mated if rank <= k) / len(mated)


def reference_tpir(mated, nonmated, fpir):
    descending = sorted(nonmated, reverse=True)
    threshold = descending[max(int(len(descending) * fpir) - 1, 0)]
    tpir = sum(1 for mate, rank in mated if rank == 1 and mate > threshold) / len(mated)
    return tpir, threshold, sum(1 for s in nonmated if s >= threshold) / len(nonmated)


@pytest.mark.parametrize("rows", [1, 7, 1024])
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_blocked_reduction_equals_a_plain_loop(monkeypatch, rows, tied, dtype, seed):
    monkeypatch.setattr(_identification, "_PROBE_ROWS", rows)
    scores, probes, gallery = matrix(seed, tied, dtype)
    mated, nonmated = reference(scores, probes, gallery)
    np.testing.assert_array_equal(M.rank_k(scores, probes, gallery, RANKS), [reference_rank(mated, k) for k in RANKS])
    result = M.tpir_at_fpir(scores, probes, gallery, FPIRS)
    expected = np.array([reference_tpir(mated, nonmated, f) for f in FPIRS])
    np.testing.assert_array_equal(np.c_[result.tpir, result.threshold, result.fpir], expected)
    assert result.threshold.dtype == np.float64


def test_float32_matrix_gives_the_widened_results():
    scores, probes, gallery = matrix(4, False, np.float32)
    narrow = M.tpir_at_fpir(scores, probes, gallery, FPIRS)
    wide = M.tpir_at_fpir(scores.astype(np.float64), probes, gallery, FPIRS)
    for field in ("tpir", "threshold", "fpir"):
        np.testing.assert_array_equal(getattr(narrow, field), getattr(wide, field))


def test_a_non_finite_score_in_a_later_block_is_refused(monkeypatch):
    monkeypatch.setattr(_identification, "_PROBE_ROWS", 4)
    scores, probes, gallery = matrix(0, False, np.float32)
    scores[50, 3] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        M.rank_k(scores, probes, gallery)
