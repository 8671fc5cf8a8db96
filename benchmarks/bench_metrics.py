"""Speed of overspec.metrics against the straightforward per-threshold loops the field uses.

(10-fold verification against insightface's loop is ``bench_verification.py``.)
(b) EER (bob sweep) and TAR@FAR (at most) on 10^7 scores vs a per-threshold loop (one pass over the scores per
    candidate threshold). The loop over all ~10^7 candidate thresholds would take days, so it is timed on a random
    subsample of candidates and extrapolated linearly (its cost per threshold does not depend on the threshold).

Run: ``.venv/bin/python benchmarks/bench_metrics.py`` (about a minute on 2 cores). Ratios < 1 mean faster.
"""

from __future__ import annotations

import time

import numpy as np

from overspec import metrics as M
from overspec.metrics._eer import _bob_candidates
from overspec.metrics._roc import sweep


def timed(function, *args, repeat: int = 3, **kwargs):
    """(best wall time over ``repeat`` runs, last result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, result


def loop_rates(genuine, impostor, thresholds):
    """Per-threshold loop: one pass over both score sets per threshold (FAR, FRR)."""
    far = np.empty(thresholds.size)
    frr = np.empty(thresholds.size)
    for k, threshold in enumerate(thresholds):
        far[k] = np.count_nonzero(impostor >= threshold) / impostor.size
        frr[k] = np.count_nonzero(genuine < threshold) / genuine.size
    return far, frr


def bench_scores(n_scores: int, n_sampled: int = 24) -> None:
    rng = np.random.default_rng(1)
    n_genuine = n_scores // 10
    genuine = rng.normal(2.0, 1.0, n_genuine)
    impostor = rng.normal(0.0, 1.0, n_scores - n_genuine)
    eer_time, eer_result = timed(M.eer, genuine, impostor, repeat=2)
    tar_time, tar_result = timed(M.tar_at_far, genuine, impostor, [1e-4, 1e-3, 1e-2], repeat=2)

    candidates, fa, fr = _bob_candidates(sweep(genuine, impostor))
    sample = np.sort(rng.choice(candidates.size, n_sampled, replace=False))
    sample[0] = int(np.searchsorted(candidates, eer_result.threshold))  # include the chosen threshold
    start = time.perf_counter()
    far, frr = loop_rates(genuine, impostor, candidates[sample])
    per_threshold = (time.perf_counter() - start) / n_sampled
    assert np.allclose(far, fa[sample] / impostor.size, rtol=0, atol=0)
    assert np.allclose(frr, fr[sample] / genuine.size, rtol=0, atol=0)
    loop_total = per_threshold * candidates.size
    print(
        f"(b) {n_scores:.0e} scores, {candidates.size:,} candidate thresholds; loop measured on {n_sampled} sampled "
        f"thresholds: {per_threshold * 1e3:.1f} ms each -> extrapolated full loop {loop_total:,.0f} s "
        f"({loop_total / 3600:.1f} h)"
    )
    print(
        f"    eer(method='bob')  {eer_time:6.2f} s  ratio {eer_time / loop_total:.2e}  (EER {eer_result.value:.5f} "
        f"at {eer_result.threshold:.5f}; loop rates at the sampled thresholds identical)"
    )
    print(
        f"    tar_at_far x3 targets {tar_time:6.2f} s  ratio {tar_time / loop_total:.2e}  "
        f"(TAR {np.round(tar_result.value, 4).tolist()} at FAR <= 1e-4, 1e-3, 1e-2)"
    )


def main() -> None:
    print("overspec.metrics benchmark (one process; wall-clock, best of repeats; ratio = overspec / loop)")
    bench_scores(10_000_000)


if __name__ == "__main__":
    main()
