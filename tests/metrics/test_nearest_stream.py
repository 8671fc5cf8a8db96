"""The streamed nearest rule (overspec.metrics._nearest) against the full default ROC, across block boundaries.

References: the full sweep's default ROC (``roc_counts(drop_intermediate=True)`` + ``nearest_index``, what the rule
used before it was streamed) and, independently, scikit-learn ``roc_curve`` searched as insightface's
``eval_ijbc`` and SMDD's ``get_apcer_op`` search it. Blocks are shrunk to a few scores so that tie groups, dropped
runs and target FARs fall across block boundaries; float32 scores must give the float64 results exactly.
"""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from overspec import metrics as M
from overspec.metrics import _nearest
from overspec.metrics._nearest import nearest_far_points
from overspec.metrics._operating import nearest_index
from overspec.metrics._roc import roc_counts, sweep

TARGETS = np.array([0.0, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.7, 0.99, 1.0])


def scores(seed: int, n_genuine: int, n_impostor: int, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes; on a coarse grid (ties within and across classes) or continuous."""
    rng = np.random.default_rng(seed)
    genuine, impostor = rng.normal(0.6, 0.5, n_genuine), rng.normal(0.0, 0.5, n_impostor)
    if tied:
        return np.round(genuine, 1), np.round(impostor, 1)
    return genuine, impostor


def full_roc_points(genuine, impostor, targets, prefer):
    """The points the rule picked from the whole default ROC, built from one full sweep in float64."""
    false_accepts, true_accepts, thresholds = roc_counts(sweep(genuine.astype(np.float64),
                                                               impostor.astype(np.float64)), True)
    index = nearest_index(false_accepts / impostor.size, targets, prefer)
    return false_accepts[index], true_accepts[index], thresholds[index]


CASES = [(seed, n_g, n_i, tied) for seed in range(3) for n_g, n_i in [(1, 1), (2, 3), (7, 4), (30, 200), (300, 90)]
         for tied in (True, False)]


@pytest.mark.parametrize("block", [1, 2, 5, 1 << 20])
@pytest.mark.parametrize("seed, n_genuine, n_impostor, tied", CASES)
@pytest.mark.parametrize("prefer", ["first", "last"])
def test_streamed_points_equal_the_full_roc(monkeypatch, block, seed, n_genuine, n_impostor, tied, prefer):
    monkeypatch.setattr(_nearest, "_BLOCK", block)
    genuine, impostor = scores(seed, n_genuine, n_impostor, tied)
    expected = full_roc_points(genuine, impostor, TARGETS, prefer)
    for dtype in (np.float64, np.float32):
        got = nearest_far_points(genuine.astype(dtype), impostor.astype(dtype), TARGETS, prefer)
        expected = full_roc_points(genuine.astype(dtype), impostor.astype(dtype), TARGETS, prefer)
        for mine, theirs in zip(got, expected, strict=True):
            np.testing.assert_array_equal(mine, theirs)
        assert got[2].dtype == np.float64


def test_targets_on_exact_count_ratios_and_long_dropped_runs(monkeypatch):
    # 1000 impostor-only steps of one score each: every point inside the run is dropped, targets land inside it
    monkeypatch.setattr(_nearest, "_BLOCK", 7)
    impostor = np.arange(1000, dtype=np.float64)
    genuine = np.array([1000.5, 500.5, -1.0])
    targets = np.array([k / 1000 for k in (0, 1, 250, 499, 500, 501, 750, 999, 1000)])
    for prefer in ("first", "last"):
        got = nearest_far_points(genuine, impostor, targets, prefer)
        for mine, theirs in zip(got, full_roc_points(genuine, impostor, targets, prefer), strict=True):
            np.testing.assert_array_equal(mine, theirs)


def insightface_tar(genuine, impostor, target):
    """insightface ``eval_ijbc``: default ROC reversed, min over (distance, index) pairs."""
    labels = np.r_[np.ones(genuine.size), np.zeros(impostor.size)]
    fpr, tpr, thresholds = roc_curve(labels, np.r_[genuine, impostor])
    fpr, tpr, thresholds = np.flipud(fpr), np.flipud(tpr), np.flipud(thresholds)
    _, index = min(zip(abs(fpr - target), range(len(fpr))))
    return tpr[index], fpr[index], thresholds[index]


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tar_at_far_nearest_is_insightfaces_across_blocks(monkeypatch, tied, dtype):
    monkeypatch.setattr(_nearest, "_BLOCK", 3)
    genuine, impostor = (s.astype(dtype) for s in scores(11, 120, 3000, tied))
    point = M.tar_at_far(genuine, impostor, TARGETS, rule="nearest")
    for k, target in enumerate(TARGETS):
        tar, far, threshold = insightface_tar(genuine, impostor, target)
        assert (point.value[k], point.achieved[k]) == (tar, far)
        assert point.threshold[k] == threshold


def smdd_apcer_op(bona_fide, attack, target):
    """SMDD / MADation ``get_apcer_op``: first default-ROC index with APCER nearest the target."""
    labels = np.r_[np.ones(bona_fide.size), np.zeros(attack.size)]
    apcer, tpr, thresholds = roc_curve(labels, np.r_[bona_fide, attack], pos_label=1)
    distance = abs(apcer - target)
    first = np.flatnonzero(distance == np.min(distance))[0]
    return 1 - tpr[first], thresholds[first]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bpcer_at_apcer_nearest_is_smdds_across_blocks(monkeypatch, dtype):
    monkeypatch.setattr(_nearest, "_BLOCK", 4)
    bona_fide, attack = (s.astype(dtype) for s in scores(5, 400, 150, True))
    point = M.bpcer_at_apcer(bona_fide, attack, TARGETS, rule="nearest")
    for k, target in enumerate(TARGETS):
        bpcer, threshold = smdd_apcer_op(bona_fide, attack, target)
        assert point.value[k] == pytest.approx(bpcer, abs=1e-15)
        assert point.threshold[k] == threshold


@pytest.mark.parametrize("rule", ["nearest", "at_most"])
def test_float32_scores_give_the_float64_results(rule):
    genuine, impostor = scores(3, 500, 20000, False)
    g32, i32 = genuine.astype(np.float32), impostor.astype(np.float32)
    wide = M.tar_at_far(g32.astype(np.float64), i32.astype(np.float64), TARGETS, rule=rule)
    narrow = M.tar_at_far(g32, i32, TARGETS, rule=rule)
    for field in ("value", "achieved", "threshold", "reachable"):
        np.testing.assert_array_equal(getattr(narrow, field), getattr(wide, field))
        assert getattr(narrow, field).dtype == getattr(wide, field).dtype
