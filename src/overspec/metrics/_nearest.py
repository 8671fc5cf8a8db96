"""The "nearest" operating-point rule in one pass over the sorted scores, without materialising the ROC.

The rule (insightface IJB, SMDD / MADation; reference §6.2) picks, among the points of scikit-learn's default ROC
(``roc_curve(drop_intermediate=True)``, first point at +inf), the one whose false accept rate is nearest the
target. Building that ROC from a full sweep held about ten arrays the size of the score list (0.9 GiB for IJB-C's
15.6 M pairs). Here the pooled scores are sorted once in their own dtype (float32 stays float32: widening to
float64 is exact and keeps order and ties, so every count, rate and threshold is the same) and the ROC is walked
from the top in blocks of whole tie groups, keeping per target only the points that can still be chosen.

scikit-learn drops a point when the step into it and the step out of it are equal in both classes (a zero second
difference of both counts), never the first or the last point; :func:`nearest_index` then searches the kept FARs.
Results equal :func:`overspec.metrics._operating.nearest_index` on :func:`overspec.metrics._roc.roc_counts`
(tests/metrics/test_nearest_stream.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["nearest_far_points"]

#: Pooled scores walked per step (a block is widened to keep each tie group whole).
_BLOCK = 1 << 20

Point = tuple[int, int, float]


@dataclass(frozen=True)
class _Points:
    """A block of kept ROC points; ``points[k]`` is the ``(false accepts, true accepts, threshold)`` of one."""

    fa: np.ndarray
    ta: np.ndarray
    thresholds: np.ndarray

    def __getitem__(self, k: int) -> Point:
        return int(self.fa[k]), int(self.ta[k]), float(self.thresholds[k])


@dataclass
class _Run:
    """The kept ROC points sharing one FAR value: the value, the first and the last of them."""

    far: float
    first: Point
    last: Point


@dataclass
class _Choice:
    """For one target: the kept points with the largest FAR below it and with the smallest FAR at or above it."""

    target: float
    lower: _Run | None = None
    upper: _Run | None = None

    def feed(self, far: np.ndarray, points: _Points) -> None:
        """Take the next kept points (FAR ascending, continuing the previous ones)."""
        if self.upper is not None:
            end = int(np.searchsorted(far, self.upper.far, side="right"))
            if end:
                self.upper.last = points[end - 1]
            return
        position = int(np.searchsorted(far, self.target, side="left"))
        if position > 0:
            value = float(far[position - 1])
            start = int(np.searchsorted(far, value, side="left"))
            continued = start == 0 and self.lower is not None and self.lower.far == value
            self.lower = _Run(value, self.lower.first if continued else points[start], points[position - 1])
        if position < far.size:
            value = float(far[position])
            self.upper = _Run(value, points[position], points[int(np.searchsorted(far, value, side="right")) - 1])

    def point(self, prefer: str) -> Point:
        """The chosen point, with :func:`nearest_index`'s distances and tie rule."""
        upper = self.upper
        lower = self.lower or upper
        below, above = abs(lower.far - self.target), abs(upper.far - self.target)
        if prefer == "first":
            return lower.first if below <= above else upper.first
        return upper.last if above <= below else lower.last


def nearest_far_points(genuine: np.ndarray, impostor: np.ndarray, targets: np.ndarray,
                       prefer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false accepts, true accepts, thresholds) of the default-ROC points with FAR nearest each target.

    ``genuine`` and ``impostor`` are validated 1-d float arrays (float32 or float64), ``targets`` rates in [0, 1];
    ``prefer`` (``"first"`` or ``"last"``) breaks ties as :func:`nearest_index` does.
    """
    choices = [_Choice(float(t)) for t in targets]
    n_impostor = impostor.size
    _feed(choices, np.zeros(1, np.int64), np.zeros(1, np.int64), np.full(1, np.inf), n_impostor)
    for fa, ta, thresholds in _kept_points(genuine, impostor):
        _feed(choices, fa, ta, thresholds, n_impostor)
    chosen = [choice.point(prefer) for choice in choices]
    return (np.array([p[0] for p in chosen], dtype=np.int64), np.array([p[1] for p in chosen], dtype=np.int64),
            np.array([p[2] for p in chosen], dtype=np.float64))


def _feed(choices: list[_Choice], fa: np.ndarray, ta: np.ndarray, thresholds: np.ndarray, n_impostor: int) -> None:
    """Give the next kept points to every target's choice (FAR as ``roc`` computes it: count / N in float64)."""
    if fa.size == 0:
        return
    far = fa / n_impostor
    points = _Points(fa, ta, thresholds)
    for choice in choices:
        choice.feed(far, points)


def _kept_points(genuine: np.ndarray, impostor: np.ndarray):
    """Yield (false accepts, true accepts, thresholds) of the kept default-ROC points after the +inf one, in ROC
    order (thresholds descending), a block at a time."""
    pooled = np.concatenate([genuine, impostor])
    pooled.sort()
    small_is_genuine = genuine.size <= impostor.size
    small = np.sort(genuine if small_is_genuine else impostor)
    pending = (np.zeros(0, np.int64),) * 4 + (np.zeros(0, pooled.dtype),)
    resolved = 0
    fa_total = ta_total = 0
    for values, counts in _tie_groups_descending(pooled):
        in_small = np.searchsorted(small, values, side="right") - np.searchsorted(small, values, side="left")
        step_g, step_i = (in_small, counts - in_small) if small_is_genuine else (counts - in_small, in_small)
        fa = fa_total + np.cumsum(step_i)
        ta = ta_total + np.cumsum(step_g)
        fa_total, ta_total = int(fa[-1]), int(ta[-1])
        step_i, step_g, fa, ta, thresholds = (np.concatenate([old, new]) for old, new in
                                              zip(pending, (step_i, step_g, fa, ta, values), strict=True))
        keep = (step_i[:-1] != step_i[1:]) | (step_g[:-1] != step_g[1:])
        if resolved == 0 and keep.size:
            keep[0] = True
        resolved += keep.size
        yield fa[:-1][keep], ta[:-1][keep], thresholds[:-1][keep]
        pending = tuple(a[-1:] for a in (step_i, step_g, fa, ta, thresholds))
    yield pending[2], pending[3], pending[4]


def _tie_groups_descending(ascending: np.ndarray):
    """Yield (distinct values descending, count of each) of a sorted array, a block of whole tie groups at a time."""
    high = ascending.size
    while high > 0:
        low = max(0, high - _BLOCK)
        if low > 0:
            low = int(np.searchsorted(ascending, ascending[low], side="left"))
        block = ascending[low:high]
        is_new = np.empty(block.size, dtype=bool)
        is_new[0] = True
        np.not_equal(block[1:], block[:-1], out=is_new[1:])
        first = np.flatnonzero(is_new)
        counts = np.diff(np.append(first, block.size))
        yield block[first][::-1], counts[::-1]
        high = low
