# bench: peers
"""EER, TAR@FAR and BPCER@APCER on 10^7 scores: overspec.metrics against bob.measure 6.1.1 and pyeer 0.5.6.

Runs in the peer environment (``make bench-peers``, then ``.venv-peers/bin/python benchmarks/bench_scores.py``),
where both peers and overspec.metrics import in one process; a missing peer stops the script with status 2.
Each quantity is computed from the raw score arrays by the function a user of each package calls, under the
overspec rule that reproduces it, and the values are asserted equal:

- bob.measure ``eer`` (sorts both classes, one merged sweep)            = ``eer(method="bob")``
- bob.measure ``roc_for_far`` (``far_threshold`` + ``farfrr`` per target)  = ``tar_at_far(rule="bob")``,
  and on PAD scores ``bpcer_at_apcer(rule="bob")`` (bob.pad.base builds its BPCER@APCER threshold the same way)
- pyeer ``calculate_roc`` + ``get_eer_values`` (FVC2000 rule)            = ``eer(method="fvc")``
- pyeer ``calculate_roc`` + ``get_fmr_op`` (ROC point with FMR nearest the target) = ``tar_at_far`` /
  ``bpcer_at_apcer`` with the default ``at_most`` rule: equal because every target times the number of impostor
  (attack) scores is an integer k and the scores have no ties, so both pick the lowest threshold with exactly k
  false accepts (checked below, not assumed).

pyeer computes its ROC once and reads every metric from it; its time for a metric is that ROC plus the metric's
own step (the ROC is timed once per round). Verification scores: 10^5 genuine and 9.9 x 10^6 impostor
comparisons (1 %: all-pairs protocols have far fewer genuine than impostor pairs, IJB-C 1:1 about 0.1 %).
PAD scores: 10^6 bona fide and 9 x 10^6 attack presentations (attacks pooled over species outnumber bona fide).
Every library runs single-threaded (numpy's sort and bob's numba loops are; the thread variables pin BLAS).
Interleaved rounds in rotating order, median of rounds; ratio = overspec time / peer time (< 1: faster).
Goal (issue 14): EER and TAR@FAR in at most half of bob.measure's time, with equal values.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import statistics
import sys
import time

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"

import numpy as np  # noqa: E402

FAR_TARGETS = [1e-4, 1e-3, 1e-2]
APCER_TARGETS = [0.01, 0.05, 0.1]
GOAL = 0.5


def import_peers():
    """(bob.measure, pyeer.eer_stats), or exit with status 2 naming the missing peer and how to get it."""
    peers = []
    for name in ("bob.measure", "pyeer.eer_stats"):
        try:
            peers.append(importlib.import_module(name))
        except ImportError as error:
            print(f"cannot import {name} ({error}): run `make bench-peers` and use .venv-peers/bin/python")
            sys.exit(2)
    return peers


def score_sets(n_scores: int, positive_share: float, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(positives, negatives): unit normals ``shift`` apart, float64, no ties (asserted)."""
    rng = np.random.default_rng(seed)
    n_positive = int(round(n_scores * positive_share))
    positives, negatives = rng.normal(shift, 1.0, n_positive), rng.normal(0.0, 1.0, n_scores - n_positive)
    assert np.unique(np.concatenate([positives, negatives])).size == n_scores, "tied scores: draw again"
    return positives, negatives


def check_integer_targets(targets: list[float], n_negative: int) -> None:
    """Assert that each target equals k / n_negative in float64 (the precondition of the pyeer equality)."""
    for target in targets:
        k = round(target * n_negative)
        assert k / n_negative == target, f"target {target} is not k / {n_negative}: pick other sizes"


def timed(function):
    """(seconds, result) of one call."""
    gc.collect()
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def run_rounds(calls: dict, rounds: int) -> tuple[dict[str, float], dict]:
    """Median seconds of each named call over interleaved rounds (order rotated each round), and its last result."""
    times = {name: [] for name in calls}
    results = {}
    names = list(calls)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds, results[name] = timed(calls[name])
            times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}, results


def counts(rate, total: int) -> np.ndarray:
    """Integer counts k from rates k / total (exact: k / total * total rounds back to k for total < 2^52)."""
    return np.rint(np.asarray(rate, dtype=np.float64) * total).astype(np.int64)


def verification(args, M, bob, pyeer) -> dict[str, float]:
    """Time and check EER and TAR@FAR on verification scores; return the ratios to bob.measure."""
    genuine, impostor = score_sets(args.scores, args.genuine_share, 3.0, seed=1)
    check_integer_targets(FAR_TARGETS, impostor.size)
    times, results = run_rounds(
        {
            "overspec eer bob": lambda: M.eer(genuine, impostor, method="bob"),
            "bob eer": lambda: bob.eer(impostor, genuine, also_farfrr=True),
            "overspec tar bob": lambda: M.tar_at_far(genuine, impostor, FAR_TARGETS, rule="bob"),
            "bob roc_for_far": lambda: bob.roc_for_far(impostor, genuine, FAR_TARGETS),
            "overspec eer fvc": lambda: M.eer(genuine, impostor, method="fvc"),
            "overspec tar at_most": lambda: M.tar_at_far(genuine, impostor, FAR_TARGETS),
            "pyeer calculate_roc": lambda: pyeer.calculate_roc(genuine, impostor),
        },
        args.rounds,
    )
    thresholds, fmr, fnmr = results["pyeer calculate_roc"]
    eer_step, pyeer_eer = timed(lambda: pyeer.get_eer_values(fmr, fnmr))
    ops_step, pyeer_ops = timed(lambda: [pyeer.get_fmr_op(fmr, fnmr, target) for target in FAR_TARGETS])

    ours, (bob_value, bob_far, bob_frr) = results["overspec eer bob"], results["bob eer"]
    assert (ours.value, ours.far, ours.frr) == (bob_value, bob_far, bob_frr)
    assert ours.threshold == bob.eer_threshold(impostor, genuine)
    ours, bob_curve = results["overspec tar bob"], results["bob roc_for_far"]
    assert np.array_equal(counts(ours.achieved, impostor.size), counts(bob_curve[0], impostor.size))
    assert np.array_equal(counts(ours.value, genuine.size), genuine.size - counts(bob_curve[1], genuine.size))
    bob_thresholds = [bob.far_threshold(impostor, genuine, target) for target in FAR_TARGETS]
    assert np.array_equal(ours.threshold, bob_thresholds)
    ours = results["overspec eer fvc"]
    assert (ours.value, ours.threshold) == (pyeer_eer[3], thresholds[pyeer_eer[0]])
    ours, chosen = results["overspec tar at_most"], [index for index, _ in pyeer_ops]
    assert np.array_equal(ours.achieved, fmr[chosen]) and np.array_equal(ours.threshold, thresholds[chosen])
    assert np.array_equal(counts(ours.value, genuine.size), genuine.size - counts(fnmr[chosen], genuine.size))

    roc = times["pyeer calculate_roc"]
    rows = [
        ("EER", "bob rule", "overspec eer bob", "bob.measure eer", times["bob eer"]),
        ("EER", "FVC rule", "overspec eer fvc", "pyeer calculate_roc + get_eer_values", roc + eer_step),
        ("TAR@FAR x3", "bob rule", "overspec tar bob", "bob.measure roc_for_far", times["bob roc_for_far"]),
        ("TAR@FAR x3", "at_most", "overspec tar at_most", "pyeer calculate_roc + get_fmr_op x3", roc + ops_step),
    ]
    print(f"verification: {genuine.size:,} genuine + {impostor.size:,} impostor scores, FAR {FAR_TARGETS}")
    print_rows(rows, times)
    tar = results["overspec tar bob"]
    print(f"    EER {results['overspec eer bob'].value:.5f} (bob), TAR {np.round(tar.value, 4).tolist()} (bob rule)")
    return {"EER": times["overspec eer bob"] / times["bob eer"],
            "TAR@FAR": times["overspec tar bob"] / times["bob roc_for_far"]}


def pad(args, M, bob, pyeer) -> None:
    """Time and check BPCER@APCER on PAD scores against both peers."""
    bona_fide, attack = score_sets(args.scores, args.bona_fide_share, 3.0, seed=2)
    check_integer_targets(APCER_TARGETS, attack.size)
    times, results = run_rounds(
        {
            "overspec bpcer bob": lambda: M.bpcer_at_apcer(bona_fide, attack, APCER_TARGETS, rule="bob"),
            "bob roc_for_far": lambda: bob.roc_for_far(attack, bona_fide, APCER_TARGETS),
            "overspec bpcer at_most": lambda: M.bpcer_at_apcer(bona_fide, attack, APCER_TARGETS),
            "pyeer calculate_roc": lambda: pyeer.calculate_roc(bona_fide, attack),
        },
        args.rounds,
    )
    _, fmr, fnmr = results["pyeer calculate_roc"]
    ops_step, pyeer_ops = timed(lambda: [pyeer.get_fmr_op(fmr, fnmr, target) for target in APCER_TARGETS])
    ours, bob_curve = results["overspec bpcer bob"], results["bob roc_for_far"]
    assert np.array_equal(ours.achieved, bob_curve[0]) and np.array_equal(ours.value, bob_curve[1])
    ours = results["overspec bpcer at_most"]
    assert np.array_equal(ours.value, [value for _, value in pyeer_ops])
    assert np.array_equal(ours.achieved, fmr[[index for index, _ in pyeer_ops]])
    rows = [
        ("BPCER@APCER x3", "bob rule", "overspec bpcer bob", "bob.measure roc_for_far", times["bob roc_for_far"]),
        ("BPCER@APCER x3", "at_most", "overspec bpcer at_most", "pyeer calculate_roc + get_fmr_op x3",
         times["pyeer calculate_roc"] + ops_step),
    ]
    print(f"PAD: {bona_fide.size:,} bona fide + {attack.size:,} attack scores, APCER {APCER_TARGETS}")
    print_rows(rows, times)
    print(f"    BPCER {np.round(results['overspec bpcer bob'].value, 4).tolist()} (bob rule)")


def print_rows(rows, times: dict[str, float]) -> None:
    """One line per comparison: both times, the ratio, and that the values were asserted equal."""
    for metric, rule, ours, peer, peer_time in rows:
        print(
            f"  {metric:<15} {rule:<9} overspec {times[ours]:7.3f} s | {peer:<38} {peer_time:7.3f} s | "
            f"ratio {times[ours] / peer_time:.3f}  (values equal)"
        )


def warm_up(M, bob, pyeer) -> None:
    """Compile bob's numba functions and touch every code path once on small inputs (not timed)."""
    positives, negatives = score_sets(2_000, 0.1, 2.0, seed=0)
    bob.eer(negatives, positives)
    bob.eer_threshold(negatives, positives)
    bob.roc_for_far(negatives, positives, FAR_TARGETS)
    bob.far_threshold(negatives, positives, 0.01)
    pyeer.get_eer_values(*pyeer.calculate_roc(positives, negatives)[1:])
    M.eer(positives, negatives)
    M.tar_at_far(positives, negatives, FAR_TARGETS, rule="bob")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scores", type=float, default=1e7, help="scores per data set (default 10^7)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, median reported (default 3)")
    parser.add_argument("--genuine-share", type=float, default=0.01)
    parser.add_argument("--bona-fide-share", type=float, default=0.1)
    args = parser.parse_args()
    args.scores = int(args.scores)
    bob, pyeer = import_peers()
    from overspec import metrics as M

    print(f"overspec.metrics vs bob.measure {_version('bob.measure')} and pyeer {_version('pyeer')}, "
          f"numpy {np.__version__}, {args.scores:.0e} scores, median of {args.rounds} interleaved rounds, 1 thread")
    warm_up(M, bob, pyeer)
    ratios = verification(args, M, bob, pyeer)
    pad(args, M, bob, pyeer)
    for metric, ratio in ratios.items():
        verdict = "met" if ratio <= GOAL else "NOT met"
        print(f"goal: {metric} on {args.scores:.0e} scores / bob.measure, time: {ratio:.3f} <= {GOAL}: {verdict}")


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


if __name__ == "__main__":
    main()
