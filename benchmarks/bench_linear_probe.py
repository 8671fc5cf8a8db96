"""Time the torch L-BFGS linear probe against what a user would otherwise run: a warm-started scikit-learn sweep.

Builds one synthetic CLIP-like feature set (L2-normalised, 50 overlapping classes, anisotropic noise) and, in
interleaved rounds, runs :func:`overspec.protocols.linear_probe.linear_probe` (CLIP-paper search, warm starts, refit
on train + val) and a scikit-learn sweep over the same Cs in ascending order with ``warm_start=True`` on the same
validation split, then a warm-started refit at its chosen C on train + val. Both run in float64 to the same
gradient tolerance (default 1e-6, the probe's) on the same thread count (default 1: on a shared machine two OpenMP
threads per process oversubscribe the cores and distort the ratio). Prints the median time of each over the rounds,
the goal lines (time ratio <= 0.1, accuracy gap <= 0.1 pt), the chosen Cs and the test-accuracy gap.

Run: ``.venv/bin/python benchmarks/bench_linear_probe.py`` (``--n-train 500 --dim 32 --classes 5 --rounds 1`` for a
quick check that it runs).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from overspec.protocols.linear_probe import linear_probe, stratified_split

GOAL = 0.1


def make_features(
    n_train: int, n_test: int, dim: int, n_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return L2-normalised (train_x, train_y, test_x, test_y): class means in a 64-d subspace, wide noise, and
    20 % of labels drawn at random (so weak regularisation overfits, as on real features)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    means = rng.standard_normal((n_classes, min(64, dim))) @ basis[: min(64, dim)] * 0.2
    noise_scale = np.geomspace(1.0, 0.05, dim)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, n_classes, size=n)
        x = means[labels] + (rng.standard_normal((n, dim)) * noise_scale) @ basis.T
        relabel = rng.random(n) < 0.2
        labels[relabel] = rng.integers(0, n_classes, size=int(relabel.sum()))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return train_x, train_y, test_x, test_y


def sklearn_warm_sweep(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, cs: list[float], seed: int,
    tol: float,
) -> tuple[float, float]:
    """Return (chosen C, test accuracy) of a warm-started scikit-learn sweep over ascending ``cs`` and its refit."""
    fit_idx, val_idx = stratified_split(train_y, 0.2, seed)
    model = LogisticRegression(max_iter=100_000, tol=tol, warm_start=True)
    scores, solutions = [], []
    for c in cs:
        model.set_params(C=c).fit(train_x[fit_idx], train_y[fit_idx])
        scores.append(model.score(train_x[val_idx], train_y[val_idx]))
        solutions.append((model.coef_.copy(), model.intercept_.copy()))
        logging.debug("sklearn C=%g: validation accuracy %.4f (%d iterations)", c, scores[-1], model.n_iter_[0])
    best = max(range(len(cs)), key=lambda i: (scores[i], -cs[i]))
    model.set_params(C=cs[best])
    model.coef_, model.intercept_ = solutions[best]
    model.fit(train_x, train_y)
    return cs[best], float(model.score(test_x, test_y))


def _timed(function, *args, **kwargs) -> tuple[float, object]:
    """Return (seconds, result) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> None:
    """Run interleaved rounds of both sweeps and print the comparison and goal lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-6, help="gradient tolerance, the same for both solvers")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the medians are compared")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch and scikit-learn/BLAS (1: robust to shared load)"
    )
    parser.add_argument("--verbose", action="store_true", help="log every fit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("torch").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    train_x, train_y, test_x, test_y = make_features(args.n_train, args.n_test, args.dim, args.classes, args.seed)
    x64, test64 = train_x.astype(np.float64), test_x.astype(np.float64)
    times_torch, times_sklearn = [], []
    with threadpool_limits(limits=args.threads):
        for _ in range(args.rounds):
            seconds, result = _timed(linear_probe, x64, train_y, test64, test_y, seed=args.seed, tol=args.tol)
            times_torch.append(seconds)
            cs = sorted(result["val_scores"])
            seconds, (c_sklearn, acc_sklearn) = _timed(
                sklearn_warm_sweep, x64, train_y, test64, test_y, cs, args.seed, args.tol)
            times_sklearn.append(seconds)

    time_torch, time_sklearn = statistics.median(times_torch), statistics.median(times_sklearn)
    ratio = time_torch / time_sklearn
    print(f"features={args.n_train}+{args.n_test}x{args.dim} classes={args.classes} tol={args.tol} "
          f"threads={args.threads} rounds={args.rounds}")
    print(f"fits={result['n_fits']} iterations_torch={result['n_iter']} Cs={len(cs)}")
    print(f"C_torch={result['C']:.4g} C_sklearn={c_sklearn:.4g} same_C={result['C'] == c_sklearn}")
    print(f"time_torch={time_torch:.2f}s time_sklearn_warm={time_sklearn:.2f}s (medians)")
    print(f"ratio_time={ratio:.3f} acc_torch={result['acc1']:.4f} acc_sklearn={acc_sklearn:.4f}")
    print(f"acc_diff_pt={100 * abs(result['acc1'] - acc_sklearn):.2f}")
    print(f"goal: linear probe / warm-started scikit-learn sweep, time: {ratio:.3f} <= {GOAL}: "
          f"{'met' if ratio <= GOAL else 'NOT met'}")
    gap = 100 * abs(result["acc1"] - acc_sklearn)
    print(f"goal: linear probe test accuracy gap to the scikit-learn sweep: {gap:.2f} pt <= 0.1 pt: "
          f"{'met' if gap <= 0.1 else 'NOT met'}")


if __name__ == "__main__":
    main()
