"""Operating points: TAR at a FAR, BPCER at an APCER, APCER at a BPCER, and bob's threshold finders.

Convention: higher = more genuine / bona fide, accept iff score >= threshold. Rates are exact count ratios
(k / N), so a target met with equality counts as met. Three selection rules, each named after the code base it
reproduces (reference §6.1-§6.3):

- ``"at_most"`` (default): the best other rate among the thresholds whose realised rate does not exceed the
  target, searched over every distinct score of either class: the full ROC of scikit-learn's
  ``roc_curve(drop_intermediate=False)`` (FLIP's TPR@FPR). The threshold may sit on a genuine score between two
  impostor scores.
- ``"nearest"`` (insightface IJB, SMDD / MADation, pyeer): the point of scikit-learn's default ROC
  (``drop_intermediate=True``, first point at threshold +inf) whose rate is nearest the target; it may exceed the
  target. Tie rules follow the code each function mirrors (insightface IJB: last index; SMDD / MADation
  BPCER@APCER: first index; SMDD / MADation APCER@BPCER: last index). Below 1 / N it can pick the +inf point and
  report BPCER = 1 (the "100 %" artefact of MAD tables).
- ``"bob"`` (bob.measure 6.1.1 ``far_threshold`` / ``frr_threshold`` as ``roc_for_far`` and bob.pad.base use
  them): the threshold is taken among the scores of the constrained class only (impostor / attack scores for a
  FAR or APCER target, genuine / bona fide scores for a BPCER target), so on small sets it is more conservative
  than ``"at_most"``; see :func:`far_threshold` and :func:`frr_threshold` for its tie and edge rules.

Targets below 1 / N (N = the number of scores of the constrained class) can only be met with rate 0 and are
flagged ``reachable=False`` under every rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from overspec.metrics._nearest import nearest_far_points
from overspec.metrics._roc import Sweep, roc_counts, sweep
from overspec.metrics._selection import distinct_ascending, smallest_count_above, top_ascending
from overspec.metrics._validation import as_rates, as_scores, check_choice, is_scalar
from overspec.errors import InputError

logger = logging.getLogger(__name__)

RULES = ("at_most", "nearest", "bob")
_EPS = np.finfo(np.float64).eps


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


def _at_most_far(g: np.ndarray, i: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false accepts, true accepts, thresholds) of the at-most rule, from the top impostor scores only.

    With M the smallest count whose rate exceeds the target, a threshold meets the target iff it lies above the
    M-th highest impostor score z; the best is the lowest distinct score above z (+inf when there is none).
    """
    counts = [smallest_count_above(float(t), i.size) for t in targets]
    top = top_ascending(i, max((c for c in counts if c <= i.size), default=1))
    points = [_at_most_point(g, top, c) if c <= i.size else (i.size, g.size, float(min(np.min(g), np.min(i))))
              for c in counts]
    dtypes = (np.int64, np.int64, np.float64)
    return tuple(np.array([p[k] for p in points], dtype=dtype) for k, dtype in enumerate(dtypes))


def _at_most_point(g: np.ndarray, top: np.ndarray, count: int) -> tuple[int, int, float]:
    """(false accepts, true accepts, threshold) just above the ``count``-th highest impostor score."""
    z = top[top.size - count]
    impostors_above = top[np.searchsorted(top, z, side="right"):]
    genuine_above = np.extract(g > z, g)
    lowest = [float(impostors_above[0])] if impostors_above.size else []
    if genuine_above.size:
        lowest.append(float(np.min(genuine_above)))
    return impostors_above.size, genuine_above.size, min(lowest, default=np.inf)


def _bob_far_thresholds(impostor: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bob ``far_threshold`` of already validated impostor scores for each target, with the false accepts there.

    Only the highest scores matter for targets below 1: bob stops at the first group from the top whose rate
    exceeds the target, so the top scores up to the largest count any target can reach are selected, not sorted.
    """
    finite = targets[targets < 1.0 - _EPS]
    needed = max((smallest_count_above(float(t), impostor.size) for t in finite), default=1)
    top = top_ascending(impostor, needed)
    points = [
        _bob_far_threshold(top, impostor.size, float(t)) if t < 1.0 - _EPS
        else (float(np.nextafter(np.min(impostor), -np.inf)), impostor.size)
        for t in targets
    ]
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def _bob_frr_thresholds(genuine: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """bob ``frr_threshold`` of already validated genuine scores for each target."""
    ascending = np.sort(genuine)
    return np.array([_bob_frr_threshold(ascending, float(t)) for t in targets])


def _accepted(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many ``scores`` are >= each threshold (a counting pass each for a few thresholds, else one sort)."""
    if thresholds.size <= 8:
        return np.array([np.count_nonzero(scores >= t) for t in thresholds])
    ascending = np.sort(scores)
    return ascending.size - np.searchsorted(ascending, thresholds, side="left")


def tar_at_far(genuine: ArrayLike, impostor: ArrayLike, far: ArrayLike, rule: str = "at_most") -> OperatingPoint:
    """True accept rate at a false accept rate target (one or several); higher score = more genuine.

    ``"at_most"``: best TAR with realised FAR <= target on the full ROC (scikit-learn ``roc_curve`` with
    ``drop_intermediate=False``). ``"nearest"``: insightface IJB rule, the default-ROC point with FAR nearest the
    target, ties to the larger FAR (it searches the reversed ROC). ``"bob"``: bob.measure ``roc_for_far``, the
    threshold :func:`far_threshold` takes on the impostor scores.

    >>> point = tar_at_far([0.9, 0.8, 0.7, 0.3], [0.1, 0.2, 0.75, 0.4], 0.25)
    >>> point.value, point.achieved, point.threshold
    (0.75, 0.25, 0.7)
    """
    check_choice(rule, "rule", RULES)
    targets = as_rates(far, "far")
    g, i = _validated(genuine, "genuine", rule), _validated(impostor, "impostor", rule)
    false_accepts, true_accepts, thresholds = _at_false_accept_rate(g, i, targets, rule, "impostor", prefer="last")
    return _finish(
        targets,
        is_scalar(far),
        rule,
        value=true_accepts / g.size,
        achieved=false_accepts / i.size,
        threshold=thresholds,
        reachable=targets >= 1.0 / i.size,
    )


def bpcer_at_apcer(
    bona_fide: ArrayLike, attack: ArrayLike, apcer: ArrayLike, rule: str = "at_most"
) -> OperatingPoint:
    """BPCER at an APCER target (one or several); higher score = more bona fide, attacks pooled.

    ``"at_most"``: lowest BPCER with realised APCER <= target on the full ROC. ``"nearest"``: SMDD / MADation
    ``get_apcer_op``, first index of the default-ROC point with APCER nearest the target. ``"bob"``: bob.pad.base,
    the threshold :func:`far_threshold` takes on the attack scores.

    >>> point = bpcer_at_apcer([0.9, 0.8, 0.7, 0.3], [0.1, 0.2, 0.75, 0.4], 0.25)
    >>> point.value, point.achieved
    (0.25, 0.25)
    """
    check_choice(rule, "rule", RULES)
    targets = as_rates(apcer, "apcer")
    g, i = _validated(bona_fide, "bona_fide", rule), _validated(attack, "attack", rule)
    false_accepts, true_accepts, thresholds = _at_false_accept_rate(g, i, targets, rule, "attack", prefer="first")
    return _finish(
        targets,
        is_scalar(apcer),
        rule,
        value=(g.size - true_accepts) / g.size,
        achieved=false_accepts / i.size,
        threshold=thresholds,
        reachable=targets >= 1.0 / i.size,
    )


def _validated(scores: ArrayLike, name: str, rule: str) -> np.ndarray:
    """Validated scores; float32 ones stay float32 for the at-most and nearest rules, which only compare and count
    them (widening is exact, so the results are the same; IJB-C's 15.6 M scores take half the memory)."""
    return as_scores(scores, name, keep_float32=rule != "bob")


def _at_false_accept_rate(g: np.ndarray, i: np.ndarray, targets: np.ndarray, rule: str, negatives: str, *,
                          prefer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false accepts, true accepts, thresholds) at false-accept-rate targets (FAR or APCER) under ``rule``; ``prefer``
    breaks the nearest rule's ties as its peer does (insightface: last, SMDD: first)."""
    if rule == "bob":
        thresholds, false_accepts = _bob_far_thresholds(_at_least_two(i, negatives), targets)
        return false_accepts, _accepted(g, thresholds), thresholds
    if rule == "at_most":
        return _at_most_far(g, i, targets)
    return nearest_far_points(g, i, targets, prefer)


def _at_bpcer(s: Sweep, targets: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false accepts, true accepts, thresholds) chosen for BPCER targets by the at-most or nearest rule."""
    false_accepts, true_accepts, _, tpr, thresholds = _rates(s, drop_intermediate=rule == "nearest")
    if rule == "at_most":
        frr_descending = (s.n_genuine - true_accepts) / s.n_genuine
        # frr is non-increasing along the ROC: the first index with frr <= target has the lowest APCER.
        index = frr_descending.size - np.searchsorted(frr_descending[::-1], targets, side="right")
    else:
        bpcer_reversed = (1.0 - tpr)[::-1]
        index = bpcer_reversed.size - 1 - nearest_index(bpcer_reversed, targets, prefer="first")
    return false_accepts[index], true_accepts[index], thresholds[index]


def apcer_at_bpcer(
    bona_fide: ArrayLike, attack: ArrayLike, bpcer: ArrayLike, rule: str = "at_most"
) -> OperatingPoint:
    """APCER at a BPCER target (one or several); higher score = more bona fide, attacks pooled.

    ``"at_most"``: lowest APCER with realised BPCER <= target on the full ROC. ``"nearest"``: SMDD / MADation
    ``get_bpcer_op``, last index of the default-ROC point with BPCER (computed as 1 - TPR) nearest the target.
    ``"bob"``: bob.pad.base ``apcerN``, the threshold :func:`frr_threshold` takes on the bona fide scores.

    >>> point = apcer_at_bpcer([0.9, 0.8, 0.7, 0.3], [0.1, 0.2, 0.75, 0.4], 0.25)
    >>> point.value, point.achieved, point.threshold
    (0.25, 0.25, 0.7)
    """
    check_choice(rule, "rule", RULES)
    targets = as_rates(bpcer, "bpcer")
    g, i = as_scores(bona_fide, "bona_fide"), as_scores(attack, "attack")
    if rule == "bob":
        thresholds = _bob_frr_thresholds(_at_least_two(g, "bona_fide"), targets)
        false_accepts, true_accepts = _accepted(i, thresholds), _accepted(g, thresholds)
    else:
        false_accepts, true_accepts, thresholds = _at_bpcer(sweep(g, i), targets, rule)
    return _finish(
        targets,
        is_scalar(bpcer),
        rule,
        value=false_accepts / i.size,
        achieved=(g.size - true_accepts) / g.size,
        threshold=thresholds,
        reachable=targets >= 1.0 / g.size,
    )


def _at_least_two(scores: np.ndarray, name: str) -> np.ndarray:
    """``scores`` unchanged when there are at least two (bob's threshold finders refuse fewer)."""
    if scores.size < 2:
        raise InputError(f"{name} has {scores.size} score: bob's threshold rule needs at least 2")
    return scores


def _bob_far_threshold(top: np.ndarray, total: int, target: float) -> tuple[float, int]:
    """bob ``far_threshold`` (target < 1) and its false accepts, from the top of ``total`` impostor scores.

    ``top`` (ascending, see :func:`top_ascending`) must hold more scores than the target allows, so the group at
    its lowest value, possibly incomplete, fails the target whatever its true size; every other count is exact.
    """
    distinct, first = distinct_ascending(top)
    # bob stops at the first group (from the top) whose count of scores >= it, over N, exceeds the target
    counts = top.size - first
    meeting = np.flatnonzero(counts / total <= target)
    if meeting.size == 0:
        return float(np.nextafter(top[-1], np.inf)), 0
    return float(distinct[meeting[0]]), int(counts[meeting[0]])


def _bob_frr_threshold(ascending: np.ndarray, target: float) -> float:
    """bob ``frr_threshold`` on sorted genuine scores (the loop from the bottom, replayed on tie groups)."""
    if target >= 1.0 - _EPS:
        return float(np.nextafter(ascending[-1], np.inf))
    distinct, first = distinct_ascending(ascending)
    counts = np.diff(np.append(first, ascending.size))
    # bob's estimate of a group's FRR is the position of its LAST member over N (exact only without ties)
    rates = (first + counts - 1) / ascending.size
    meeting = np.flatnonzero(rates <= target)
    if meeting.size == 0:
        return float(np.nextafter(ascending[0], np.inf))
    return float(distinct[meeting[-1]])


def far_threshold(impostor: ArrayLike, far: float) -> float:
    """bob.measure 6.1.1 ``far_threshold``: the lowest impostor score whose realised FAR is <= ``far``.

    Only impostor scores are candidates (a tie group is accepted or rejected together); ``far >= 1 - eps``
    returns just below the lowest impostor score (everything accepted); if even the highest impostor group alone
    exceeds the target, just above the highest impostor score (FAR = 0). Needs at least two impostor scores, as
    bob does. The scores are always sorted here (bob's ``is_sorted=True`` trusts the caller and, given unsorted
    scores, silently returns a wrong threshold). ISO/IEC 30107-3 "BPCERN" thresholds are built from this rule.

    >>> far_threshold([0.0, 1.0, 2.0, 3.0], 0.5)
    2.0
    """
    values = _at_least_two(as_scores(impostor, "impostor"), "impostor")
    return float(_bob_far_thresholds(values, as_rates(far, "far")[:1])[0][0])


def frr_threshold(genuine: ArrayLike, frr: float) -> float:
    """bob.measure 6.1.1 ``frr_threshold``: the highest genuine score whose FRR, as bob counts it, is <= ``frr``.

    bob counts a tie group of genuine scores as if rejected up to its last member (FRR estimate = position of the
    group's last member / N), so with ties it can stop one group lower than the exact at-most rule, and when the
    lowest group alone is too large it returns just above that group (its realised FRR then exceeds the target).
    ``frr >= 1 - eps`` returns just above the highest genuine score (everything rejected). Needs at least two
    genuine scores; the scores are always sorted here (see :func:`far_threshold` on ``is_sorted``).

    >>> frr_threshold([0.0, 1.0, 2.0, 3.0], 0.5)
    2.0
    """
    values = _at_least_two(as_scores(genuine, "genuine"), "genuine")
    return _bob_frr_threshold(np.sort(values), float(as_rates(frr, "frr")[0]))
