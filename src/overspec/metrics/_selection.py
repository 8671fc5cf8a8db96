"""bob's EER and FAR thresholds on large score sets without sorting the larger class (same values, less work).

Sorting 10^7 float64 scores dominates a full sweep, yet bob's EER and ``far_threshold`` only look at a few
distinct scores: the EER where the monotone FAR - FRR balance changes sign, ``far_threshold`` among the highest
impostor scores. Here the smaller class is sorted, the crossing is bracketed by bisection on its distinct values
while the larger class is cut down to the bracket, and only what is left is sorted; ``far_threshold`` selects the
top scores with ``np.partition``. Results equal :func:`overspec.metrics._eer.bob_eer_index` on the full sweep
and bob's loops (tests/metrics/test_metrics_selection.py).
"""

from __future__ import annotations

import numpy as np


def distinct_ascending(ascending: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, index of each one's first occurrence) of a sorted array, without sorting it again."""
    is_new = np.empty(ascending.size, dtype=bool)
    is_new[:1] = True
    np.not_equal(ascending[1:], ascending[:-1], out=is_new[1:])
    first = np.flatnonzero(is_new)
    return ascending[first], first


def _bracket(small_distinct: np.ndarray, large: np.ndarray, balance_at) -> tuple[int, int, np.ndarray, int]:
    """Bisect the smaller class's distinct values for the sign change of the balance, cutting ``large`` down.

    Returns (lo, hi, part, below): balance > 0 at small_distinct[lo] (lo = -1 stands for -inf), <= 0 at
    small_distinct[hi] (hi = size stands for +inf), ``part`` the larger class's scores in [lo value, hi value) and
    ``below`` how many of them lie under the lo value. ``balance_at(value, large_below)`` gives the balance.
    """
    lo, hi, part, below = _first_bracket(small_distinct, large, balance_at)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        less = part < small_distinct[mid]
        n_less = int(np.count_nonzero(less))
        if balance_at(small_distinct[mid], below + n_less) > 0:
            lo, part, below = mid, np.extract(np.logical_not(less, out=less), part), below + n_less
        else:
            hi, part = mid, np.extract(less, part)
    return lo, hi, part, below


def _first_bracket(small_distinct: np.ndarray, large: np.ndarray, balance_at) -> tuple[int, int, np.ndarray, int]:
    """A narrow starting bracket guessed from a strided sample of ``large`` and checked exactly (else the widest).

    The guess only saves passes over ``large``: it is kept only when the exact balances at its ends have the signs
    the bracket needs, so a poor sample (scores stored in some adversarial order) costs time, never correctness.
    """
    widest = (-1, small_distinct.size, large, 0)
    sample = np.sort(large[:: max(1, large.size // 65536)])
    estimated_below = np.searchsorted(sample, small_distinct, side="left") * (large.size / sample.size)
    estimated = np.flatnonzero(balance_at(small_distinct, estimated_below) <= 0)
    if estimated.size == 0:
        return widest
    margin = max(2, small_distinct.size // 64)
    lo, hi = int(estimated[0]) - margin, int(estimated[0]) + margin
    if lo < 0 or hi >= small_distinct.size:
        return widest
    below_lo = large < small_distinct[lo]
    inside = large < small_distinct[hi]
    n_below_lo, n_below_hi = int(np.count_nonzero(below_lo)), int(np.count_nonzero(inside))
    if balance_at(small_distinct[lo], n_below_lo) <= 0 or balance_at(small_distinct[hi], n_below_hi) > 0:
        return widest
    np.logical_and(inside, np.logical_not(below_lo, out=below_lo), out=inside)
    return lo, hi, np.extract(inside, large), n_below_lo


def bob_eer_scores(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, int, int]:
    """bob ``eer_threshold`` on validated scores: (threshold, false accepts, false rejects), compared in integers.

    The balance FA * N_g - FR * N_i falls strictly from one candidate to the next, so bob's choice is the first
    candidate c with balance <= 0 or the one before it (nearer zero wins; on equal distance c, except when c is
    bob's "one list exhausted" candidate, which only wins strictly; that candidate never has a positive balance).
    """
    n_g, n_i = genuine.size, impostor.size
    small_is_genuine = n_g <= n_i
    small, large = (genuine, impostor) if small_is_genuine else (impostor, genuine)
    small_sorted = np.sort(small)
    small_distinct, _ = distinct_ascending(small_sorted)

    def errors(values, large_below):
        """(false accepts, false rejects) at thresholds ``values`` given the larger class's counts below them."""
        small_below = np.searchsorted(small_sorted, values, side="left")
        genuine_below, impostor_below = (small_below, large_below) if small_is_genuine else (large_below, small_below)
        return n_i - impostor_below, genuine_below

    def balance_at(values, large_below):
        false_accepts, false_rejects = errors(values, large_below)
        return false_accepts * n_g - false_rejects * n_i

    lo, hi, part, below = _bracket(small_distinct, large, balance_at)
    part = np.sort(part)
    ends = [small_distinct[k] for k in (lo, hi) if 0 <= k < small_distinct.size]
    window = np.unique(np.concatenate([part, ends]))
    false_accepts, false_rejects = errors(window, below + np.searchsorted(part, window, side="left"))
    balance = false_accepts * n_g - false_rejects * n_i
    crossing = np.flatnonzero(balance <= 0)
    before = int(crossing[0]) - 1 if crossing.size else window.size - 1
    previous = _value_before(window, before, small_distinct, lo, large, below)
    lower = (
        float(window[before] if previous is None else (previous + window[before]) / 2.0),
        int(false_accepts[before]),
        int(false_rejects[before]),
    )
    if crossing.size:
        at = window[before + 1]
        upper = (float((window[before] + at) / 2.0), int(false_accepts[before + 1]), int(false_rejects[before + 1]))
    else:
        at = np.inf
        upper = (float(np.nextafter(window[-1], np.inf)), 0, n_g)
    exhausted = at > min(small_sorted[-1], np.max(large))
    distance = [abs(fa * n_g - fr * n_i) for _, fa, fr in (lower, upper)]
    if distance[1] < distance[0] or (distance[1] == distance[0] and not exhausted):
        return upper
    return lower


def _value_before(window: np.ndarray, index: int, small_distinct: np.ndarray, lo: int, large: np.ndarray,
                  below: int) -> float | None:
    """The distinct pooled score just below window[index], or None when window[index] is the lowest score."""
    if index >= 1:
        return float(window[index - 1])
    candidates = []
    if lo >= 1:
        candidates.append(float(small_distinct[lo - 1]))
    if below > 0:
        candidates.append(float(np.max(np.extract(large < window[0], large))))
    return max(candidates) if candidates else None


def top_ascending(scores: np.ndarray, count: int) -> np.ndarray:
    """At least the ``count`` largest scores, ascending, with every copy of each value except perhaps the lowest.

    A cut guessed from a strided sample keeps every score at or above it when that leaves enough of them (one
    comparison pass); otherwise ``np.partition`` selects exactly ``count``. Sorts everything when ``count`` is
    most of the scores.
    """
    if 2 * count >= scores.size:
        return np.sort(scores)
    sample = np.sort(scores[:: max(1, scores.size // 65536)])
    share = min(1.0, 1.25 * count / scores.size + 4.0 / np.sqrt(sample.size))
    cut = sample[max(0, int(np.floor(sample.size * (1.0 - share))) - 1)]
    kept = np.extract(scores >= cut, scores)
    if kept.size >= count:
        return np.sort(kept)
    return np.sort(np.partition(scores, scores.size - count)[scores.size - count:])


def smallest_count_above(rate: float, total: int) -> int:
    """The smallest k with k / total > rate in float64, as bob's ``far_threshold`` loop compares it."""
    k = max(int(np.floor(rate * total)), 0)
    while k / total <= rate:
        k += 1
    while k > 1 and (k - 1) / total > rate:
        k -= 1
    return k
