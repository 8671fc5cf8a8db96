"""Operating points: TAR at a FAR, BPCER at an APCER, APCER at a BPCER, and bob's threshold finders.

Convention: higher = more genuine / bona fide, accept iff score >= threshold. Two selection rules (reference §6.1):

- ``"at_most"`` (default; bob.measure ``roc_for_far``, bob.pad.base, ISO practice): the threshold whose realised
  error rate does not exceed the target and that gives the best other rate, searched over every distinct score
  (the full ROC). Targets below 1 / N (N = the number of scores of the constrained class) can only be met with
  rate 0 and are flagged ``reachable=False``.
- ``"nearest"`` (legacy, to reproduce published numbers): the point of scikit-learn's default ROC
  (``drop_intermediate=True``, first point at threshold +inf) whose rate is nearest the target; it may exceed the
  target. Tie rules follow the code each function mirrors (insightface IJB: last index; SMDD / MADation
  BPCER@APCER: first index; SMDD / MADation APCER@BPCER: last index). Below 1 / N it can pick the +inf point and
  report BPCER = 1 (the "100 %" artefact of MAD tables).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from overspec.metrics._roc import Sweep, roc_counts, sweep
from overspec.metrics._validation import as_rates, as_scores, check_choice, is_scalar

logger = logging.getLogger(__name__)

RULES = ("at_most", "nearest")


@dataclass(frozen=True)
class OperatingPoint:
    """Result at one or several target rates (floats for a scalar target, arrays for a sequence of targets).

    ``value`` is the reported rate (TAR, BPCER or APCER), ``achieved`` the realised constrained rate (FAR, APCER or
    BPCER) at ``threshold``, ``reachable`` whether the target is at least 1 / N of the constrained class.
    """

    target: float | np.ndarray
    value: float | np.ndarray
    achieved: float | np.ndarray
    threshold: float | np.ndarray
    reachable: bool | np.ndarray
    rule: str


def _finish(targets: np.ndarray, scalar: bool, rule: str, **fields: np.ndarray) -> OperatingPoint:
    if scalar:
        return OperatingPoint(
            float(targets[0]),
            float(fields["value"][0]),
            float(fields["achieved"][0]),
            float(fields["threshold"][0]),
            bool(fields["reachable"][0]),
            rule,
        )
    return OperatingPoint(targets, fields["value"], fields["achieved"], fields["threshold"], fields["reachable"], rule)


def nearest_index(ascending: np.ndarray, targets: np.ndarray, prefer: str) -> np.ndarray:
    """Index into a non-decreasing array of the entry nearest each target, ``abs(value - target)`` in float.

    ``prefer="first"`` breaks ties (equal values or equal distances) towards the lowest index, ``"last"`` towards the
    highest, as ``np.argmin`` on the array or on its reverse would.
    """
    upper = np.clip(np.searchsorted(ascending, targets, side="left"), 0, ascending.size - 1)
    lower = np.clip(upper - 1, 0, ascending.size - 1)
    distance_lower = np.abs(ascending[lower] - targets)
    distance_upper = np.abs(ascending[upper] - targets)
    if prefer == "first":
        chosen = np.where(distance_lower <= distance_upper, ascending[lower], ascending[upper])
        return np.searchsorted(ascending, chosen, side="left")
    chosen = np.where(distance_upper <= distance_lower, ascending[upper], ascending[lower])
    return np.searchsorted(ascending, chosen, side="right") - 1


def _rates(s: Sweep, drop_intermediate: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(false accepts, true accepts, FAR, TAR, thresholds) in scikit-learn ROC order."""
    false_accepts, true_accepts, thresholds = roc_counts(s, drop_intermediate)
    return false_accepts, true_accepts, false_accepts / s.n_impostor, true_accepts / s.n_genuine, thresholds


def _at_far(s: Sweep, targets: np.ndarray, rule: str, prefer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC indices chosen for FAR targets, with the rate arrays they index (false accepts, true accepts, thresholds)."""
    false_accepts, true_accepts, far, _, thresholds = _rates(s, drop_intermediate=rule == "nearest")
    if rule == "at_most":
        index = np.searchsorted(far, targets, side="right") - 1
    else:
        index = nearest_index(far, targets, prefer)
    return false_accepts[index], true_accepts[index], thresholds[index]


def tar_at_far(genuine: ArrayLike, impostor: ArrayLike, far: ArrayLike, rule: str = "at_most") -> OperatingPoint:
    """True accept rate at a false accept rate target (one or several); higher score = more genuine.

    ``"at_most"``: best TAR with realised FAR <= target (bob). ``"nearest"``: insightface IJB rule, the ROC point
    with FAR nearest the target, ties to the larger FAR (it searches the reversed ROC).

    >>> point = tar_at_far([0.9, 0.8, 0.7, 0.3], [0.1, 0.2, 0.75, 0.4], 0.25)
    >>> point.value, point.achieved, point.threshold
    (0.75, 0.25, 0.7)
    """
    check_choice(rule, "rule", RULES)
    targets = as_rates(far, "far")
    s = sweep(as_scores(genuine, "genuine"), as_scores(impostor, "impostor"))
    false_accepts, true_accepts, thresholds = _at_far(s, targets, rule, prefer="last")
    return _finish(
        targets,
        is_scalar(far),
        rule,
        value=true_accepts / s.n_genuine,
        achieved=false_accepts / s.n_impostor,
        threshold=thresholds,
        reachable=targets >= 1.0 / s.n_impostor,
    )


def bpcer_at_apcer(
    bona_fide: ArrayLike, attack: ArrayLike, apcer: ArrayLike, rule: str = "at_most"
) -> OperatingPoint:
    """BPCER at an APCER target (one or several); higher score = more bona fide, attacks pooled.

    ``"at_most"``: lowest BPCER with realised APCER <= target (bob.pad.base). ``"nearest"``: SMDD / MADation
    ``get_apcer_op``, first index of the ROC point with APCER nearest the target.

    >>> point = bpcer_at_apcer([0.9, 0.8, 0.7, 0.3], [0.1, 0.2, 0.75, 0.4], 0.25)
    >>> point.value, point.achieved
    (0.25, 0.25)
    """
    check_choice(rule, "rule", RULES)
    targets = as_rates(apcer, "apcer")
    s = sweep(as_scores(bona_fide, "bona_fide"), as_scores(attack, "attack"))
    false_accepts, true_accepts, thresholds = _at_far(s, targets, rule, prefer="first")
    return _finish(
        targets,
        is_scalar(apcer),
        rule,
        value=(s.n_genuine - true_accepts) / s.n_genuine,
        achieved=false_accepts / s.n_impostor,
        threshold=thresholds,
        reachable=targets >= 1.0 / s.n_impostor,
    )


def apcer_at_bpcer(
    bona_fide: ArrayLike, attack: ArrayLike, bpcer: ArrayLike, rule: str = "at_most"
) -> OperatingPoint:
    """APCER at a BPCER target (one or several); higher score = more bona fide, attacks pooled.

    ``"at_most"``: lowest APCER with realised BPCER <= target (bob ``frr_threshold``). ``"nearest"``: SMDD /
    MADation ``get_bpcer_op``, last index of the ROC point with BPCER (computed as 1 - TPR) nearest the target.

    >>> point = apcer_at_bpcer([0.9, 0.8, 0.7, 0.3], [0.1, 0.2, 0.75, 0.4], 0.25)
    >>> point.value, point.achieved, point.threshold
    (0.25, 0.25, 0.7)
    """
    check_choice(rule, "rule", RULES)
    targets = as_rates(bpcer, "bpcer")
    s = sweep(as_scores(bona_fide, "bona_fide"), as_scores(attack, "attack"))
    false_accepts, true_accepts, _, tpr, thresholds = _rates(s, drop_intermediate=rule == "nearest")
    if rule == "at_most":
        frr_descending = (s.n_genuine - true_accepts) / s.n_genuine
        # frr is non-increasing along the ROC: the first index with frr <= target has the lowest APCER.
        index = frr_descending.size - np.searchsorted(frr_descending[::-1], targets, side="right")
    else:
        bpcer_reversed = (1.0 - tpr)[::-1]
        index = bpcer_reversed.size - 1 - nearest_index(bpcer_reversed, targets, prefer="first")
    return _finish(
        targets,
        is_scalar(bpcer),
        rule,
        value=false_accepts[index] / s.n_impostor,
        achieved=(s.n_genuine - true_accepts[index]) / s.n_genuine,
        threshold=thresholds[index],
        reachable=targets >= 1.0 / s.n_genuine,
    )


def far_threshold(impostor: ArrayLike, far: float) -> float:
    """bob.measure ``far_threshold``: the lowest impostor score whose realised FAR is <= ``far``.

    Only impostor scores are candidates (tie groups move together); ``far >= 1`` returns just below the lowest
    impostor score; if even the highest impostor group exceeds the target, just above the highest impostor score
    (FAR = 0). ISO/IEC 30107-3 "BPCERN" thresholds are built from this rule.

    >>> far_threshold([0.0, 1.0, 2.0, 3.0], 0.5)
    2.0
    """
    values = np.sort(as_scores(impostor, "impostor"))
    target = float(as_rates(far, "far")[0])
    if target >= 1.0:
        return float(np.nextafter(values[0], -np.inf))
    distinct = np.unique(values)
    rates = (values.size - np.searchsorted(values, distinct, side="left")) / values.size
    meeting = np.flatnonzero(rates <= target)
    if meeting.size == 0:
        return float(np.nextafter(values[-1], np.inf))
    return float(distinct[meeting[0]])


def frr_threshold(genuine: ArrayLike, frr: float) -> float:
    """bob.measure ``frr_threshold``: the highest genuine score whose realised FRR is <= ``frr``.

    ``frr >= 1`` returns just above the highest genuine score (everything rejected).

    >>> frr_threshold([0.0, 1.0, 2.0, 3.0], 0.5)
    2.0
    """
    values = np.sort(as_scores(genuine, "genuine"))
    target = float(as_rates(frr, "frr")[0])
    if target >= 1.0:
        return float(np.nextafter(values[-1], np.inf))
    distinct = np.unique(values)
    rates = np.searchsorted(values, distinct, side="left") / values.size
    return float(distinct[np.flatnonzero(rates <= target)[-1]])
