"""Time the torch L-BFGS linear-probe sweep against scikit-learn L-BFGS on the same sequence of C.

Builds one synthetic CLIP-like feature set (L2-normalised, 50 overlapping classes, anisotropic noise), runs
:func:`overspec.protocols.linear_probe.linear_probe` (CLIP-paper search, warm starts, refit on train + val), then
fits ``sklearn.linear_model.LogisticRegression`` cold at every C the torch search tried, picks C on the same
validation split, refits on train and scores test. Prints ``ratio_time=... acc_torch=... acc_sklearn=...``.

Both solvers get the same tolerance (default 1e-6) and the same thread count (default 1, since on a shared machine
two OpenMP threads per process oversubscribe the cores and distort the ratio).

Run: ``.venv/bin/python benchmarks/bench_linear_probe.py`` (about 30 s; ``--threads 2`` to use both cores).
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from overspec.protocols.linear_probe import SEARCH_TOL, linear_probe, stratified_split


def make_features(
    n_train: int, n_test: int, dim: int, n_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return L2-normalised (train_x, train_y, test_x, test_y): class means in a 64-d subspace, wide noise, and
    20 % of labels drawn at random (so weak regularisation overfits, as on real features)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    means = rng.standard_normal((n_classes, 64)) @ basis[:64] * 0.2
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


def sklearn_sweep(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    cs: list[float],
    seed: int,
    tol: float,
) -> tuple[float, float, int]:
    """Return (chosen C, test accuracy, total iterations) of scikit-learn fits over ``cs`` on the probe's split."""
    fit_idx, val_idx = stratified_split(train_y, 0.2, seed)
    scores, n_iter = [], 0
    for c in cs:
        model = LogisticRegression(C=c, max_iter=1000, tol=tol).fit(train_x[fit_idx], train_y[fit_idx])
        scores.append(model.score(train_x[val_idx], train_y[val_idx]))
        n_iter += int(model.n_iter_[0])
        logging.debug("sklearn C=%g: validation accuracy %.4f (%d iterations)", c, scores[-1], model.n_iter_[0])
    best = max(range(len(cs)), key=lambda i: (scores[i], -cs[i]))
    final = LogisticRegression(C=cs[best], max_iter=1000, tol=tol).fit(train_x, train_y)
    return cs[best], float(final.score(test_x, test_y)), n_iter + int(final.n_iter_[0])


def main() -> None:
    """Run both sweeps and print the comparison lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-6, help="gradient tolerance, the same for both solvers")
    parser.add_argument(
        "--search-tol", type=float, default=SEARCH_TOL,
        help="tolerance of the torch C-search fits (scikit-learn fits everything at --tol); 0: --tol",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch and scikit-learn/BLAS (1: robust to shared load)"
    )
    parser.add_argument("--verbose", action="store_true", help="log every fit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("torch").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    train_x, train_y, test_x, test_y = make_features(args.n_train, args.n_test, args.dim, args.classes, args.seed)
    limits = threadpool_limits(limits=args.threads)
    start = time.perf_counter()
    result = linear_probe(
        train_x, train_y, test_x, test_y, seed=args.seed, dtype=args.dtype, tol=args.tol,
        search_tol=args.search_tol or None,
    )
    time_torch = time.perf_counter() - start
    cs = sorted(result["val_scores"])
    start = time.perf_counter()
    c_sklearn, acc_sklearn, iter_sklearn = sklearn_sweep(train_x, train_y, test_x, test_y, cs, args.seed, args.tol)
    time_sklearn = time.perf_counter() - start
    limits.restore_original_limits()

    print(f"features={args.n_train}+{args.n_test}x{args.dim} classes={args.classes} dtype={args.dtype} "
          f"tol={args.tol} search_tol={args.search_tol or args.tol} threads={args.threads}")
    print(f"fits={result['n_fits']} iterations_torch={result['n_iter']} iterations_sklearn={iter_sklearn}")
    print(f"C_torch={result['C']:.4g} C_sklearn={c_sklearn:.4g}")
    print(f"time_torch={time_torch:.2f}s time_sklearn={time_sklearn:.2f}s")
    print(f"ratio_time={time_torch / time_sklearn:.3f} acc_torch={result['acc1']:.4f} acc_sklearn={acc_sklearn:.4f}")
    print(f"acc_diff_pt={100 * abs(result['acc1'] - acc_sklearn):.2f}")


if __name__ == "__main__":
    main()
