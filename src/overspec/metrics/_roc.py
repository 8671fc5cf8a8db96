"""ROC, DET, AUC and the ROC convex hull from one sort of the scores.

Convention (bob.measure, ISO/IEC 19795-1 wording): higher score = more genuine / bona fide, a sample is accepted
iff ``score >= threshold``. FAR(t) = #(impostor >= t) / N_impostor, FRR(t) = #(genuine < t) / N_genuine.
Ties are handled as groups: every score equal to ``t`` is accepted together. References: bob.measure 6.1.1
``_library.py``; scikit-learn ``roc_curve`` / ``det_curve``; Bosaris ``rocch`` (Brümmer & de Villiers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from overspec.metrics._validation import as_scores, as_thresholds, is_scalar
from overspec.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sweep:
    """Counts at every distinct score (ascending): how many genuine / impostor scores lie strictly below it."""

    values: np.ndarray
    genuine_below: np.ndarray
    impostor_below: np.ndarray
    n_genuine: int
    n_impostor: int


@dataclass(frozen=True)
class Curve:
    """A curve of error rates, one entry per threshold; ``thresholds`` accept iff ``score >= threshold``."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray

    @property
    def frr(self) -> np.ndarray:
        """False rejection rate, 1 - TAR."""
        return 1.0 - self.tar


def sweep(genuine: np.ndarray, impostor: np.ndarray) -> Sweep:
    """Sort the pooled (already validated) scores once and count each class below every distinct value.

    Below a distinct value's first position in the pooled sorted scores lie exactly the scores smaller than it, so
    only the smaller class needs a ``searchsorted``; the other count is the difference.
    """
    ordered = np.concatenate([genuine, impostor])
    ordered.sort()  # in place: one pooled copy at a time (31M IJB-C scores are 250 MB in float64)
    is_new = np.empty(ordered.size, dtype=bool)
    is_new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=is_new[1:])
    starts = np.flatnonzero(is_new)
    values = ordered[starts]
    del ordered, is_new
    if genuine.size <= impostor.size:
        genuine_below = np.searchsorted(np.sort(genuine), values, side="left")
        impostor_below = starts - genuine_below
    else:
        impostor_below = np.searchsorted(np.sort(impostor), values, side="left")
        genuine_below = starts - impostor_below
    return Sweep(values, genuine_below, impostor_below, genuine.size, impostor.size)


def roc_counts(s: Sweep, drop_intermediate: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (false accepts, true accepts, thresholds) in scikit-learn order: thresholds descending from +inf.

    With ``drop_intermediate`` the points scikit-learn's ``roc_curve`` drops by default are removed too, which the
    legacy "nearest" and "argmin" rules need to reproduce published numbers.
    """
    false_accepts = (s.n_impostor - s.impostor_below)[::-1]
    true_accepts = (s.n_genuine - s.genuine_below)[::-1]
    thresholds = s.values[::-1]
    if drop_intermediate and false_accepts.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(false_accepts, 2), np.diff(true_accepts, 2)), True]
        false_accepts, true_accepts, thresholds = false_accepts[keep], true_accepts[keep], thresholds[keep]
    return (
        np.concatenate([[0], false_accepts]),
        np.concatenate([[0], true_accepts]),
        np.concatenate([[np.inf], thresholds]),
    )


def roc_from_sweep(s: Sweep, drop_intermediate: bool = False) -> Curve:
    """ROC curve (FAR ascending) from a sweep; see :func:`roc`."""
    false_accepts, true_accepts, thresholds = roc_counts(s, drop_intermediate)
    return Curve(false_accepts / s.n_impostor, true_accepts / s.n_genuine, thresholds)


def roc(genuine: ArrayLike, impostor: ArrayLike, drop_intermediate: bool = False) -> Curve:
    """ROC curve at every distinct score, FAR ascending, starting at (0, 0) with threshold +inf.

    Convention: higher = more genuine, accept iff score >= threshold; identical to scikit-learn
    ``roc_curve(labels, scores, drop_intermediate=drop_intermediate)`` with genuine as the positive class.

    >>> curve = roc([0.9, 0.6], [0.1, 0.6])
    >>> curve.far.tolist(), curve.tar.tolist(), curve.thresholds.tolist()
    ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0], [inf, 0.9, 0.6, 0.1])
    """
    return roc_from_sweep(sweep(as_scores(genuine, "genuine"), as_scores(impostor, "impostor")), drop_intermediate)


def det(genuine: ArrayLike, impostor: ArrayLike) -> Curve:
    """DET points (FAR decreasing, thresholds ascending) from the last FAR = 0 point to the first FRR = 0 point.

    Same points as scikit-learn ``det_curve(..., drop_intermediate=False)``; plot ``ppndf(curve.far)`` against
    ``ppndf(curve.frr)`` for the usual normal-deviate axes.

    >>> curve = det([0.9, 0.6], [0.1, 0.6])
    >>> curve.far.tolist(), curve.frr.tolist(), curve.thresholds.tolist()
    ([0.5, 0.0], [0.0, 0.5], [0.6, 0.9])
    """
    full = roc(genuine, impostor)
    first = int(np.searchsorted(full.far, 0.0, side="right")) - 1
    last = int(np.searchsorted(full.tar, 1.0, side="left")) + 1
    part = slice(first, last)
    return Curve(full.far[part][::-1], full.tar[part][::-1], full.thresholds[part][::-1])


def auc(genuine: ArrayLike, impostor: ArrayLike, log_scale: bool = False) -> float:
    """Area under the ROC curve (exact: ties count one half, as scikit-learn ``roc_auc_score``).

    With ``log_scale`` the TAR is integrated over log10(FAR) on the points with FAR > 0 (bob.measure
    ``roc_auc_score(log_scale=True)``), which rewards performance at low FAR.

    >>> auc([0.9, 0.6], [0.1, 0.6])
    0.875
    """
    curve = roc(genuine, impostor)
    if not log_scale:
        return float(np.trapezoid(curve.tar, curve.far))
    positive = curve.far > 0
    return float(np.trapezoid(curve.tar[positive], np.log10(curve.far[positive])))


def far_frr(genuine: ArrayLike, impostor: ArrayLike, threshold: ArrayLike) -> tuple:
    """(FAR, FRR) at one threshold or an array of thresholds; accept iff score >= threshold.

    FAR = #(impostor >= t) / N_impostor, FRR = #(genuine < t) / N_genuine (bob.measure ``farfrr``).

    >>> far_frr([0.9, 0.6], [0.1, 0.6], 0.6)
    (0.5, 0.0)
    """
    genuine_sorted = np.sort(as_scores(genuine, "genuine"))
    impostor_sorted = np.sort(as_scores(impostor, "impostor"))
    thresholds = as_thresholds(threshold)
    far = (impostor_sorted.size - np.searchsorted(impostor_sorted, thresholds, side="left")) / impostor_sorted.size
    frr = np.searchsorted(genuine_sorted, thresholds, side="left") / genuine_sorted.size
    if is_scalar(threshold):
        return float(far[0]), float(frr[0])
    return far, frr


def rocch(genuine: ArrayLike, impostor: ArrayLike) -> Curve:
    """Vertices of the ROC convex hull (Bosaris ``rocch``), FAR ascending, from (0, 0) with threshold +inf.

    The hull is the ROC reachable by randomising between two thresholds; its EER is ``eer(..., method="rocch")``.

    >>> hull = rocch([0.9, 0.6], [0.1, 0.6])
    >>> hull.far.tolist(), hull.tar.tolist()
    ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0])
    """
    return hull_from_sweep(sweep(as_scores(genuine, "genuine"), as_scores(impostor, "impostor")))


def hull_from_sweep(s: Sweep) -> Curve:
    """Lower-left convex hull of the (FAR, FRR) points; the vertical start segment at FAR = 0 is kept."""
    curve = roc_from_sweep(s)
    far, frr, thresholds = curve.far, curve.frr, curve.thresholds
    # One point per FAR value: the lowest FRR, i.e. the last point of each run of equal FAR.
    last_of_run = np.r_[far[1:] != far[:-1], True]
    far, frr, thresholds = far[last_of_run], frr[last_of_run], thresholds[last_of_run]
    kept = _lower_hull(far, frr)
    hull_far, hull_frr, hull_thr = far[kept], frr[kept], thresholds[kept]
    if hull_frr[0] < 1.0:
        hull_far = np.r_[0.0, hull_far]
        hull_frr = np.r_[1.0, hull_frr]
        hull_thr = np.r_[np.inf, hull_thr]
    return Curve(hull_far, 1.0 - hull_frr, hull_thr)


def _lower_hull(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of points sorted by strictly increasing x (monotone chain)."""
    hull: list[int] = []
    for index in range(x.size):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (x[b] - x[a]) * (y[index] - y[a]) - (y[b] - y[a]) * (x[index] - x[a])
            if cross > 0:
                break
            hull.pop()
        hull.append(index)
    return hull


def ppndf(probability: ArrayLike) -> np.ndarray | float:
    """Standard normal quantile used for DET axes, with p clipped to [eps, 1 - eps] (bob ``ppndf``, NIST DETware).

    Uses the exact inverse normal CDF; bob's rational approximation differs by at most ~1.5e-5.

    >>> round(ppndf(0.5), 6)
    0.0
    """
    from scipy.special import ndtri  # only DET axes need it; a run of stored units never does

    eps = np.finfo(np.float64).eps
    clipped = np.clip(np.asarray(probability, dtype=np.float64), eps, 1.0 - eps)
    result = ndtri(clipped)
    return float(result) if np.ndim(result) == 0 else result


def d_prime(genuine: ArrayLike, impostor: ArrayLike) -> float:
    """Decidability d' = |mean_g - mean_i| / sqrt((var_g + var_i) / 2) with population variances (pyeer).

    >>> d_prime([2.0, 4.0], [0.0, 2.0])
    2.0
    """
    g = as_scores(genuine, "genuine")
    i = as_scores(impostor, "impostor")
    spread = np.sqrt((g.var() + i.var()) / 2.0)
    if spread == 0:
        raise InputError("d_prime is undefined: genuine and impostor scores both have zero variance")
    return float(abs(g.mean() - i.mean()) / spread)
