"""Equal error rate variants; the field's code bases disagree, so every result names its method.

Convention: higher = more genuine / bona fide, accept iff score >= threshold. Variants (reference file §5.2):

- ``bob``: bob.measure ``eer_threshold`` sweep over the midpoints between consecutive distinct scores, minimising
  abs(FAR - FRR) (last of equal minima), value = (FAR + FRR) / 2 at that threshold. Computed without sorting the
  larger class (``_selection.py``); :func:`bob_eer_index` is the same rule on a full sweep (HTER's dev threshold).
- ``rocch``: ROC convex hull intersected with FAR = FRR (Bosaris ``rocch2eer``, bob ``eer_rocch``).
- ``interp``: root of 1 - x - TPR(x) on the ROC polyline (``scipy.optimize.brentq`` + ``interp1d`` in DG-FAS code).
- ``fvc``: FVC2000 rule as in pyeer ``get_eer_values``: first distinct score t2 with FAR <= FRR, its predecessor t1,
  keep the one with the smaller FAR + FRR (t1 on ties), value = (FAR + FRR) / 2.
- ``argmin``: SMDD / MADation / FoundPAD: FAR at argmin abs(TPR + FAR - 1) of scikit-learn's default ROC (the MAD
  "D-EER"). It can pick the +inf threshold point: constant scores give 0 with FRR 1, as the legacy code does.
- ``ssdg``: SSDG / FLIP ``get_EER_states``: thresholds 0, 1e-4, ..., 1 and 1.1 (probability scores), last of equal
  minima of abs(FRR - FAR), value = (FAR + FRR) / 2.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from overspec.metrics._roc import Sweep, hull_from_sweep, roc_counts, roc_from_sweep, sweep
from overspec.metrics._selection import bob_eer_scores
from overspec.metrics._validation import as_scores, check_choice

logger = logging.getLogger(__name__)

EER_METHODS = ("bob", "rocch", "interp", "fvc", "argmin", "ssdg")


@dataclass(frozen=True)
class EERResult:
    """An EER value, the threshold it was found at, the two rates it is made from, and the method's name."""

    value: float
    threshold: float
    far: float
    frr: float
    method: str


def eer(genuine: ArrayLike, impostor: ArrayLike, method: str = "bob") -> EERResult:
    """Equal error rate by the named ``method`` (see the module docstring); higher score = more genuine.

    ``far`` / ``frr`` are the rates the value is made from: realised at ``threshold`` for ``bob``, ``fvc`` and
    ``ssdg``; the ROC point for ``argmin``; the crossing point of the curve for ``interp`` and ``rocch`` (whose
    threshold is interpolated along the crossing segment).

    >>> result = eer([0.9, 0.8, 0.4], [0.1, 0.5, 0.2])
    >>> round(result.value, 4), result.threshold
    (0.3333, 0.45)
    """
    check_choice(method, "method", EER_METHODS)
    g, i = as_scores(genuine, "genuine"), as_scores(impostor, "impostor")
    if method == "bob":
        return _bob_result(*bob_eer_scores(g, i), g.size, i.size)
    return eer_from_sweep(sweep(g, i), method)


def eer_from_sweep(s: Sweep, method: str) -> EERResult:
    """EER by ``method`` (any but ``bob``, which works on the scores: :func:`bob_eer_scores`) on swept scores."""
    return _EER_FUNCTIONS[method](s)


def _bob_candidates(s: Sweep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate thresholds of bob's sweep with their false-accept and false-reject counts.

    Candidate 0 is the lowest score (everything accepted); candidate k is the midpoint between distinct scores
    k - 1 and k; the last is just above the highest score (everything rejected).
    """
    v = s.values
    thresholds = np.concatenate([v[:1], (v[:-1] + v[1:]) / 2.0, [np.nextafter(v[-1], np.inf)]])
    false_accepts = np.concatenate([s.n_impostor - s.impostor_below, [0]])
    false_rejects = np.concatenate([s.genuine_below, [s.n_genuine]])
    return thresholds, false_accepts, false_rejects


def _bob_minimiser(s: Sweep, objective: np.ndarray) -> int:
    """Index of bob's chosen candidate for an exact integer objective, replaying its loop's tie rules.

    bob's loop keeps the last of equal minima while both score lists still have unvisited entries, then compares the
    candidate reached when one list runs out and the "reject everything" candidate with a strict ``<``.
    """
    _, false_accepts, false_rejects = _bob_candidates(s)
    exhausted = np.flatnonzero((false_accepts == 0) | (false_rejects == s.n_genuine))
    stop = int(exhausted[exhausted >= 1][0])
    head = objective[:stop]
    best = stop - 1 - int(np.argmin(head[::-1]))
    if objective[stop] < objective[best]:
        best = stop
    last = objective.size - 1
    if stop != last and objective[last] < objective[best]:
        best = last
    return best


def bob_eer_index(s: Sweep) -> tuple[float, int, int]:
    """bob ``eer_threshold``: (threshold, false accepts, false rejects); compared exactly in integers."""
    thresholds, fa, fr = _bob_candidates(s)
    best = _bob_minimiser(s, np.abs(fa * s.n_genuine - fr * s.n_impostor))
    return float(thresholds[best]), int(fa[best]), int(fr[best])


def bob_min_hter_index(s: Sweep) -> tuple[float, int, int]:
    """bob ``min_hter_threshold``: (threshold, false accepts, false rejects) minimising FAR + FRR exactly."""
    thresholds, fa, fr = _bob_candidates(s)
    best = _bob_minimiser(s, fa * s.n_genuine + fr * s.n_impostor)
    return float(thresholds[best]), int(fa[best]), int(fr[best])


def _bob_result(threshold: float, false_accepts: int, false_rejects: int, n_genuine: int, n_impostor: int) -> EERResult:
    """bob's EER value (FAR + FRR) / 2 from the counts at its threshold, as bob.measure ``eer`` computes it."""
    far, frr = false_accepts / n_impostor, false_rejects / n_genuine
    return EERResult((far + frr) / 2.0, threshold, far, frr, "bob")


def _eer_rocch(s: Sweep) -> EERResult:
    hull = hull_from_sweep(s)
    x, y, t = hull.far, hull.frr, hull.thresholds
    x0, x1, y0, y1 = x[:-1], x[1:], y[:-1], y[1:]
    # Bosaris rocch2eer: the line a*x + b*y = 1 through each hull segment meets x = y at 1 / (a + b).
    determinant = x0 * y1 - x1 * y0
    denominator = (y1 - y0) + (x0 - x1)
    degenerate = (x0 == x1) | (y0 == y1) | (denominator == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_segment = np.where(degenerate, 0.0, determinant / np.where(degenerate, 1.0, denominator))
    segment = int(np.argmax(per_segment))
    value = float(per_segment[segment])
    if value == 0.0:
        perfect = int(np.flatnonzero((x == 0) & (y == 0))[0])
        return EERResult(0.0, float(t[perfect]), 0.0, 0.0, "rocch")
    fraction = (value - x0[segment]) / (x1[segment] - x0[segment])
    return EERResult(value, _interpolate(t[segment], t[segment + 1], fraction), value, value, "rocch")


def _interpolate(start: float, end: float, fraction: float) -> float:
    """Linear interpolation between two thresholds; an infinite end point yields the finite one."""
    if not np.isfinite(start):
        return float(end)
    if not np.isfinite(end):
        return float(start)
    return float(start + fraction * (end - start))


def _eer_interp(s: Sweep) -> EERResult:
    curve = roc_from_sweep(s, drop_intermediate=True)
    gap = curve.far + curve.tar - 1.0
    i = int(np.argmax(gap >= 0))
    if gap[i] == 0:
        value = float(curve.far[i])
        return EERResult(value, float(curve.thresholds[i]), value, value, "interp")
    fraction = -gap[i - 1] / (gap[i] - gap[i - 1])
    value = float(curve.far[i - 1] + fraction * (curve.far[i] - curve.far[i - 1]))
    threshold = _interpolate(curve.thresholds[i - 1], curve.thresholds[i], fraction)
    return EERResult(value, threshold, value, value, "interp")


def _eer_fvc(s: Sweep) -> EERResult:
    # Thresholds are the distinct scores plus one above them all, so FAR <= FRR always happens somewhere.
    far = np.concatenate([s.n_impostor - s.impostor_below, [0]]) / s.n_impostor
    frr = np.concatenate([s.genuine_below, [s.n_genuine]]) / s.n_genuine
    thresholds = np.concatenate([s.values, [np.nextafter(s.values[-1], np.inf)]])
    difference = far - frr
    t2 = int(np.argmax(difference <= 0))
    t1 = t2 - 1 if difference[t2] != 0 and t2 != 0 else t2
    chosen = t1 if far[t1] + frr[t1] <= far[t2] + frr[t2] else t2
    return EERResult(
        float((far[chosen] + frr[chosen]) / 2), float(thresholds[chosen]), float(far[chosen]), float(frr[chosen]), "fvc"
    )


def argmin_index(s: Sweep) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """scikit-learn default ROC (fpr, tpr, thresholds) and the index of argmin abs(TPR + FPR - 1) (first one)."""
    false_accepts, true_accepts, thresholds = roc_counts(s, drop_intermediate=True)
    fpr = false_accepts / s.n_impostor
    tpr = true_accepts / s.n_genuine
    return fpr, tpr, thresholds, int(np.argmin(np.abs(tpr + fpr - 1.0)))


def _eer_argmin(s: Sweep) -> EERResult:
    fpr, tpr, thresholds, i = argmin_index(s)
    return EERResult(float(fpr[i]), float(thresholds[i]), float(fpr[i]), float(1.0 - tpr[i]), "argmin")


SSDG_GRID = np.concatenate([np.arange(10001) * 1.0 / 10000.0, [1.1]])


def _eer_ssdg(s: Sweep) -> EERResult:
    # Counts strictly below a grid point are the sweep's counts at the first distinct score >= that point.
    position = np.searchsorted(s.values, SSDG_GRID, side="left")
    genuine_counts = np.concatenate([s.genuine_below, [s.n_genuine]])[position]
    impostor_counts = np.concatenate([s.impostor_below, [s.n_impostor]])[position]
    far = (s.n_impostor - impostor_counts) / s.n_impostor
    frr = genuine_counts / s.n_genuine
    distance = np.abs(frr - far)
    best = distance.size - 1 - int(np.argmin(distance[::-1]))
    return EERResult(float((far[best] + frr[best]) / 2), float(SSDG_GRID[best]), float(far[best]), float(frr[best]), "ssdg")


_EER_FUNCTIONS = {
    "rocch": _eer_rocch,
    "interp": _eer_interp,
    "fvc": _eer_fvc,
    "argmin": _eer_argmin,
    "ssdg": _eer_ssdg,
}
