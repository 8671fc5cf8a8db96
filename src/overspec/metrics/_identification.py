"""Open-set 1:N identification: rank-k identification rate and TPIR at FPIR.

Scores come as a probe x gallery similarity matrix (higher = more similar) with a subject id per probe and per
gallery entry. A probe is *mated* when its subject is enrolled in the gallery (several entries per subject are
allowed: the mate score is their maximum), *non-mated* otherwise. References: insightface
``recognition/_evaluation_/ijb/ijb_evals.py`` (PR #1739, per-gallery open-set evaluation); bob.measure
``detection_identification_rate`` / ``cmc``, whose pessimistic tie rule (a non-mate score equal to the mate score
ranks above it) is used here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from overspec.metrics._validation import as_rates, is_scalar
from overspec.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdentificationScores:
    """Validated 1:N scores reduced to what the metrics need."""

    mate_scores: np.ndarray
    mate_ranks: np.ndarray
    nonmated_max: np.ndarray
    n_mated: int


@dataclass(frozen=True)
class TPIRResult:
    """TPIR at FPIR target(s), the score thresholds used and the FPIR realised at them (floats or arrays)."""

    target: float | np.ndarray
    tpir: float | np.ndarray
    threshold: float | np.ndarray
    fpir: float | np.ndarray


#: Probe rows reduced per step, so no temporary the size of the whole score matrix is made.
_PROBE_ROWS = 1024


def _identification_scores(scores: ArrayLike, probe_ids: ArrayLike, gallery_ids: ArrayLike) -> IdentificationScores:
    """Validate a probes x gallery matrix and reduce it, a block of probe rows at a time, to each mated probe's mate
    score and rank and each non-mated probe's maximum score.

    A float32 matrix is reduced as float32 (maxima and comparisons of float32 values are exact, so the results are
    those of the widened matrix, returned as float64) and never copied whole.
    """
    matrix = np.asarray(scores)
    if matrix.dtype != np.float32:
        matrix = np.asarray(matrix, dtype=np.float64)
    probes = np.asarray(probe_ids)
    gallery = np.asarray(gallery_ids)
    if matrix.ndim != 2 or matrix.size == 0:
        raise InputError(f"scores must be a non-empty probes x gallery matrix, got shape {matrix.shape}")
    if probes.shape != (matrix.shape[0],) or gallery.shape != (matrix.shape[1],):
        raise InputError(
            f"probe_ids {probes.shape} and gallery_ids {gallery.shape} must match scores {matrix.shape}"
        )
    mated = np.empty(matrix.shape[0], dtype=bool)
    mate_scores = np.empty(matrix.shape[0], dtype=matrix.dtype)
    nonmate_at_or_above = np.empty(matrix.shape[0], dtype=np.int64)
    row_max = np.empty(matrix.shape[0], dtype=matrix.dtype)
    for start in range(0, matrix.shape[0], _PROBE_ROWS):
        rows = slice(start, start + _PROBE_ROWS)
        block = matrix[rows]
        if not np.all(np.isfinite(block)):
            raise InputError("scores contains NaN or infinite values")
        mate = probes[rows, None] == gallery[None, :]
        mated[rows] = mate.any(axis=1)
        mate_scores[rows] = np.where(mate, block, -np.inf).max(axis=1)
        nonmate_at_or_above[rows] = np.count_nonzero((block >= mate_scores[rows, None]) & ~mate, axis=1)
        row_max[rows] = block.max(axis=1)
    return IdentificationScores(
        mate_scores[mated].astype(np.float64), 1 + nonmate_at_or_above[mated],
        row_max[~mated].astype(np.float64), int(mated.sum()),
    )


def rank_k(scores: ArrayLike, probe_ids: ArrayLike, gallery_ids: ArrayLike, k: int | ArrayLike = 1) -> float | np.ndarray:
    """Fraction of mated probes whose mate is within the top ``k`` gallery entries (CMC at k); higher = similar.

    Ranks are pessimistic on ties (bob.measure): rank = 1 + number of non-mate scores >= the mate score.
    Non-mated probes are ignored (for insightface's two-gallery average weight the hits by mated counts).

    >>> scores = [[0.9, 0.2, 0.4], [0.3, 0.5, 0.6], [0.1, 0.2, 0.3]]
    >>> rank_k(scores, ["a", "b", "x"], ["a", "b", "c"], k=[1, 2])
    array([0.5, 1. ])
    """
    data = _identification_scores(scores, probe_ids, gallery_ids)
    if data.n_mated == 0:
        raise InputError("rank_k needs at least one mated probe (a probe id present in gallery_ids)")
    ranks = np.atleast_1d(np.asarray(k))
    if not np.issubdtype(ranks.dtype, np.integer) or np.any(ranks < 1):
        raise InputError(f"k must be a positive integer or a sequence of them, got {np.asarray(k).tolist()}")
    rates = np.count_nonzero(data.mate_ranks[None, :] <= ranks[:, None], axis=1) / data.n_mated
    return float(rates[0]) if is_scalar(k) else rates


def tpir_at_fpir(
    scores: ArrayLike, probe_ids: ArrayLike, gallery_ids: ArrayLike, fpir: ArrayLike = 0.01
) -> TPIRResult:
    """True positive identification rate at a false positive identification rate target (insightface ``ijb_evals``).

    Threshold = the non-mated probes' maximum scores sorted descending, element ``max(int(N_nonmated * fpir) - 1, 0)``;
    a mated probe is a true positive iff its mate score is above every non-mate score (rank 1) and above the
    threshold (both strict). ``fpir`` in the result is the realised rate #(non-mated max >= threshold) / N_nonmated.

    >>> scores = [[0.9, 0.2], [0.3, 0.7], [0.1, 0.6], [0.5, 0.4]]
    >>> result = tpir_at_fpir(scores, ["a", "b", "x", "y"], ["a", "b"], fpir=0.5)
    >>> result.tpir, result.threshold, result.fpir
    (1.0, 0.6, 0.5)
    """
    data = _identification_scores(scores, probe_ids, gallery_ids)
    targets = as_rates(fpir, "fpir")
    if data.n_mated == 0 or data.nonmated_max.size == 0:
        raise InputError("tpir_at_fpir needs both mated and non-mated probes (open-set identification)")
    descending = np.sort(data.nonmated_max)[::-1]
    index = np.maximum((descending.size * targets).astype(np.int64) - 1, 0)
    thresholds = descending[index]
    rank_one = data.mate_ranks == 1
    tpir = np.count_nonzero(rank_one[None, :] & (data.mate_scores[None, :] > thresholds[:, None]), axis=1) / data.n_mated
    realised = np.count_nonzero(data.nonmated_max[None, :] >= thresholds[:, None], axis=1) / descending.size
    if is_scalar(fpir):
        return TPIRResult(float(targets[0]), float(tpir[0]), float(thresholds[0]), float(realised[0]))
    return TPIRResult(targets, tpir, thresholds, realised)
