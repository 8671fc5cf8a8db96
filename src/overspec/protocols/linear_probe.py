"""Linear-probe protocols on cached features: the CLIP paper's full-data probe and seeded k-shot probes.

The classifier is multinomial logistic regression with the objective of scikit-learn's ``LogisticRegression(C=C)``
(scikit-learn >= 1.9, ``sklearn/linear_model/_logistic.py``): ``C * sum_i CE_i + 1/2 ||W||^2``, intercept not
penalised, binary problems as one binomial model. We minimise the same function scaled by ``1/(C n)``, i.e.
``mean_i CE_i + ||W||^2 / (2 C n)``, whose gradient is the one scikit-learn's ``tol`` is compared with, by full-batch
L-BFGS on CPU or GPU (:mod:`overspec.protocols._logistic_solver`). By default L-BFGS runs in the eigenbasis of the
feature covariance, rescaled per C (an exact change of variables; 3-5x fewer iterations on anisotropic features);
the search folds and the refit share one basis, computed on all of the training features.

Regularisation follows Radford et al. 2021 (appendix A.3): C on a log grid from 1e-6 to 1e6, coarse decades first,
then a binary refinement around the best down to 8 steps per decade, each fit warm-started linearly in log C from
fitted solutions (interpolated between the neighbours on either side, extrapolated beyond them), scored on a
stratified seeded validation split carved from train; the chosen C is refitted on train + val and scored on test.
Validation accuracy is compared between Cs one sample apart, so search fits stopped early (float32 at a loose
tolerance) once chose a C ten times off a converged scikit-learn sweep on scikit-learn's digits and moved test
accuracy by 1 pt. The search therefore runs in float32 to 1e-5, and every C it scores within one validation sample
of the best is refitted to 1e-6 with float64's stopping rule before the choice is made; the refit on train + val
runs to 1e-6 the same way (float32 iterations, stopped only when the float64 gradient meets the tolerance). It
chooses the same C and reaches the same test accuracy as ``LogisticRegression(tol=1e-10)``
(``tests/protocols/test_linear_probe.py``) in about a tenth of a warm-started scikit-learn sweep's time
(``benchmarks/bench_linear_probe.py``). ``SOLVER`` names this scheme in the runner's unit key.
k-shot probes choose C by stratified cross-validation inside the k-shot set (a fixed C when k = 1),
so no label outside the k-shot set and no test label is ever used for selection.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import clone

from overspec.protocols._classification import classification_metrics, per_sample_predictions
from overspec.protocols._logistic_solver import SOLVER
from overspec.protocols.logistic_probe import LogisticRegressionProbe, _as_tensor, _Rotation
from overspec.protocols._sampling import KSHOTS, Fold, kshot_indices, stratified_folds, stratified_split
from overspec.errors import InputError

__all__ = [
    "KSHOTS",
    "LogisticRegressionProbe",
    "RegularisationSearch",
    "SOLVER",
    "clip_c_grid",
    "kshot_indices",
    "kshot_probe",
    "linear_probe",
    "select_regularisation",
    "stratified_folds",
    "stratified_split",
]

logger = logging.getLogger(__name__)

STEPS_PER_DECADE = 8
def clip_c_grid(steps_per_decade: int = STEPS_PER_DECADE) -> np.ndarray:
    """Return the CLIP-paper grid of C: 1e-6 ... 1e6 with ``steps_per_decade`` log steps (97 values for 8)."""
    return np.logspace(-6, 6, 12 * steps_per_decade + 1)


@dataclass
class RegularisationSearch:
    """Outcome of a C search: the chosen C, its validation accuracy, every tried C's score and the fit count."""

    C: float
    score: float
    scores: dict[float, float] = field(default_factory=dict)
    n_fits: int = 0
    n_iter: int = 0
    settled: tuple[float, ...] = ()
    solutions: dict[float, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict, repr=False)


def _clip_search(n_grid: int, score_at: Callable[[int], float], patience: int | None) -> int:
    """Return the best grid index: decades upwards, then spans 4, 2, 1 around the best (``score_at`` fits).

    The decade scan stops early once ``patience`` consecutive decades all scored strictly below the best.
    """
    decades = list(range(0, n_grid, STEPS_PER_DECADE))
    best, worse_in_a_row = decades[0], 0
    for index in decades:
        if score_at(index) > score_at(best):
            best, worse_in_a_row = index, 0
        elif score_at(index) < score_at(best):
            worse_in_a_row += 1
            if patience is not None and worse_in_a_row >= patience:
                break
        else:
            worse_in_a_row = 0
    span = STEPS_PER_DECADE // 2
    while span >= 1:
        around = [i for i in (best - span, best, best + span) if 0 <= i < n_grid]
        best = max(around, key=lambda i: (score_at(i), -i))
        span //= 2
    return best


def select_regularisation(
    x: torch.Tensor | np.ndarray,
    y: np.ndarray,
    folds: Sequence[Fold],
    *,
    c_grid: Sequence[float] | None = None,
    probe: LogisticRegressionProbe | None = None,
    patience: int | None = 2,
) -> RegularisationSearch:
    """Return the C with the best mean validation accuracy over ``folds`` (index pairs into ``x``/``y``).

    Without ``c_grid`` the CLIP-paper search runs on :func:`clip_c_grid` (at most 19 values tried), its decade scan
    cut short after ``patience`` decades scoring below the best (``None`` scans all 13, as the paper does); with a
    grid every value is tried. Each fit is warm-started from the Cs already fitted on the same fold (see
    :func:`_warm_start`). Ties go to the smaller C (stronger regularisation).
    """
    template = probe if probe is not None else LogisticRegressionProbe()
    x = _as_tensor(x, template.dtype, template.device)
    return _search_regularisation(x, np.asarray(y), folds, c_grid, template, patience, _shared_rotation(x, template))


def _shared_rotation(x: torch.Tensor, probe: LogisticRegressionProbe) -> _Rotation | None:
    """Return the rotation of all of ``x`` for the folds and the refit to share (None without preconditioning)."""
    return _Rotation.of(x) if probe.precondition else None


def _search_regularisation(
    x: torch.Tensor,
    y: np.ndarray,
    folds: Sequence[Fold],
    c_grid: Sequence[float] | None,
    template: LogisticRegressionProbe,
    patience: int | None,
    rotation: _Rotation | None,
) -> RegularisationSearch:
    """Run :func:`select_regularisation` on a tensor, every fold preconditioned with rows of ``rotation``."""
    grid = np.sort(np.asarray(clip_c_grid() if c_grid is None else c_grid, dtype=np.float64))
    fold_data, probes = [], []
    for tr, va in folds:
        rows = torch.as_tensor(tr, device=x.device)
        fold_data.append((x[rows], y[tr], x[torch.as_tensor(va, device=x.device)], y[va]))
        probes.append(clone(template))
        if rotation is not None:
            probes[-1]._share_rotation(fold_data[-1][0], rotation.rows(rows))
    search = RegularisationSearch(C=float("nan"), score=float("-inf"))
    fitted: dict[int, float] = {}

    def score_at(index: int) -> float:
        if index not in fitted:
            fitted[index] = _score_c(index, grid, fitted, fold_data, probes, search)
        return fitted[index]

    if c_grid is None:
        best = _clip_search(len(grid), score_at, patience)
    else:
        best = max(range(len(grid)), key=lambda i: (score_at(i), -i))
    search.C, search.score = float(grid[best]), fitted[best]
    logger.info("chose C=%g (validation accuracy %.4f) after %d fits", search.C, search.score, search.n_fits)
    return search


def _settled_search(
    x: torch.Tensor,
    y: np.ndarray,
    folds: Sequence[Fold],
    c_grid: Sequence[float] | None,
    probe: LogisticRegressionProbe,
    search_dtype: str,
    search_tol: float,
    patience: int | None,
    rotation: _Rotation | None,
) -> RegularisationSearch:
    """Return the C search run with fast fits (``search_dtype``, ``search_tol``), its close calls settled by ``probe``.

    Validation accuracies one sample apart decide the choice, so every tried C scoring within one validation sample
    of the best is refitted with ``probe``'s precision and tolerance (warm-started from the fast fit) and rescored;
    the best of those wins (ties to the smaller C). A C that led by two samples or more keeps its fast-fit score.
    """
    searcher = clone(probe).set_params(dtype=search_dtype, tol=search_tol)
    fast_x = _as_tensor(x, search_dtype, x.device)
    fast_rotation = None if rotation is None else rotation.astype(fast_x.dtype)
    search = _search_regularisation(fast_x, y, folds, c_grid, searcher, patience, fast_rotation)
    if searcher.get_params() == probe.get_params():
        return search
    margin = 1.0 / (len(folds) * min(len(va) for _, va in folds)) + 1e-12  # one sample in the mean over folds
    contenders = sorted(c for c, score in search.scores.items() if score >= search.score - margin)
    if len(contenders) > 1:
        _rescore(contenders, x, y, folds, probe, rotation, search)
        search.settled = tuple(contenders)
        search.C = max(contenders, key=lambda c: (search.scores[c], -c))
        search.score = search.scores[search.C]
        logger.info("settled C=%g (validation accuracy %.4f) among %d close Cs", search.C, search.score,
                    len(contenders))
    return search


def _rescore(
    cs: Sequence[float], x: torch.Tensor, y: np.ndarray, folds: Sequence[Fold], probe: LogisticRegressionProbe,
    rotation: _Rotation | None, search: RegularisationSearch,
) -> None:
    """Refit every fold at each of ``cs`` with ``probe``, warm-started from the search's fits; update its scores."""
    for c in cs:
        accuracies, solutions = [], []
        for (tr, va), (coef, intercept) in zip(folds, search.solutions[c]):
            rows = torch.as_tensor(tr, device=x.device)
            fold_x, fold_probe = x[rows], clone(probe).set_params(C=c)
            if rotation is not None:
                fold_probe._share_rotation(fold_x, rotation.rows(rows))
            fold_probe.fit(fold_x, y[tr], coef_init=coef, intercept_init=intercept)
            accuracies.append(float(np.mean(fold_probe.predict(x[torch.as_tensor(va, device=x.device)]) == y[va])))
            solutions.append((fold_probe.coef_, fold_probe.intercept_))
            search.n_fits += 1
            search.n_iter += fold_probe.n_iter_
        search.scores[c], search.solutions[c] = float(np.mean(accuracies)), solutions


def _score_c(index: int, grid: np.ndarray, fitted: dict[int, float], fold_data, probes, search) -> float:
    """Fit every fold at ``grid[index]`` warm-started from the fitted Cs; return the mean validation accuracy."""
    c = float(grid[index])
    accuracies, solutions = [], []
    for f, ((x_fit, y_fit, x_val, y_val), probe) in enumerate(zip(fold_data, probes)):
        warm = _warm_start(c, {fc: sols[f] for fc, sols in search.solutions.items()})
        probe.set_params(C=c).fit(x_fit, y_fit, coef_init=warm[0], intercept_init=warm[1])
        accuracies.append(float(np.mean(probe.predict(x_val) == y_val)))
        solutions.append((probe.coef_, probe.intercept_))
        search.n_fits += 1
        search.n_iter += probe.n_iter_
    search.solutions[c] = solutions
    search.scores[c] = float(np.mean(accuracies))
    logger.debug("C=%g: validation accuracy %.4f (%d L-BFGS iterations)", c, search.scores[c], probe.n_iter_)
    return search.scores[c]


def _warm_start(c: float, solutions: dict[float, tuple[np.ndarray, np.ndarray]]) -> tuple:
    """Return a starting ``(coef, intercept)`` for ``c``, linear in log C through two fitted solutions.

    Between fitted Cs: interpolated from the nearest one on each side. Beyond them (the decade scan): extrapolated
    from the two nearest, which on benchmark features saves 10-17 % of the search's iterations over restarting
    from the nearest alone; with a single fitted C, its solution; with none, ``(None, None)`` (a cold start).
    """
    below = sorted(fc for fc in solutions if fc < c)
    above = sorted(fc for fc in solutions if fc > c)
    if below and above:
        first, second = below[-1], above[0]
    elif len(below) >= 2 or len(above) >= 2:
        first, second = below[-2:] if below else above[1::-1]
    elif below or above:
        return solutions[below[-1] if below else above[0]]
    else:
        return None, None
    t = np.log(c / first) / np.log(second / first)
    return tuple((1 - t) * a + t * b for a, b in zip(solutions[first], solutions[second]))


def _check_labels(train_y: np.ndarray, test_y: np.ndarray) -> None:
    """Raise ValueError when test labels include a class that never occurs in train."""
    unseen = np.setdiff1d(test_y, train_y)
    if len(unseen):
        raise InputError(f"test labels {unseen[:10].tolist()} never occur in the training labels")


def _test_report(probe: LogisticRegressionProbe, test_x, test_y: np.ndarray) -> dict[str, object]:
    """Return test metrics and per-sample predictions (labels mapped to the probe's class columns)."""
    scores = probe._class_scores(test_x)
    columns = np.searchsorted(probe.classes_, test_y)
    predictions = per_sample_predictions(scores, columns)
    predictions["pred"] = probe.classes_[predictions["pred"]]
    metrics = classification_metrics(scores, columns)
    return {**metrics, "n_classes": int(len(probe.classes_)), "predictions": predictions}


def _index_fingerprint(*indices: np.ndarray) -> str:
    """Return a short sha256 of index arrays, to record which samples a split used."""
    h = hashlib.sha256()
    for idx in indices:
        h.update(np.ascontiguousarray(idx, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def linear_probe(
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray,
    test_x: np.ndarray | torch.Tensor,
    test_y: np.ndarray,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    c_grid: Sequence[float] | None = None,
    device: str = "cpu",
    max_iter: int = 1000,
    tol: float = 1e-6,
    dtype: str = "mixed",
    patience: int | None = 2,
    search_dtype: str = "float32",
    search_tol: float = 1e-5,
) -> dict[str, object]:
    """Return the CLIP-protocol probe result: test ``acc1``/``acc5``/``mean_per_class_recall``, chosen ``C``, ...

    C is chosen on a stratified ``val_fraction`` split of train (``seed``), then the probe is refitted on all of
    train and scored on test. ``tol`` defaults to 1e-6, not scikit-learn's 1e-4: at weak regularisation 1e-4 stops
    far from the optimum (and a warm start may already satisfy it), which changes which C wins. The search fits run
    in ``search_dtype`` to ``search_tol``; every C they score within one validation sample of the best is then
    refitted in ``dtype`` to ``tol`` and the choice made among those (:func:`_settled_search`). The refit runs in
    ``dtype`` to ``tol`` (``"mixed"``: float32 iterations, stopped by the float64 gradient).
    Also returned: ``val_acc1``, ``val_scores`` (C -> accuracy), ``settled_Cs`` (the close calls refitted),
    ``n_fits``,
    ``split_fingerprint`` and per-sample test ``predictions`` (``pred`` labels, ``correct``, ``correct5``).
    """
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    _check_labels(train_y, test_y)
    probe = LogisticRegressionProbe(tol=tol, max_iter=max_iter, dtype=dtype, device=device)
    x = _as_tensor(train_x, dtype, device)
    fit_idx, val_idx = stratified_split(train_y, val_fraction, seed)
    rotation = _shared_rotation(x, probe)
    search = _settled_search(x, train_y, [(fit_idx, val_idx)], c_grid, probe, search_dtype, search_tol, patience,
                             rotation)
    coef, intercept = search.solutions[search.C][0]
    if rotation is not None:
        probe._share_rotation(x, rotation)
    probe.set_params(C=search.C).fit(x, train_y, coef_init=coef, intercept_init=intercept)
    return {
        **_test_report(probe, test_x, test_y),
        "C": search.C,
        "val_acc1": search.score,
        "val_scores": dict(search.scores),
        "settled_Cs": list(search.settled),
        "n_fits": search.n_fits + 1,
        "n_iter": search.n_iter + probe.n_iter_,
        "n_train": int(len(fit_idx)),
        "n_val": int(len(val_idx)),
        "n_test": int(len(test_y)),
        "seed": seed,
        "split_fingerprint": _index_fingerprint(fit_idx, val_idx),
    }


def _kshot_one_seed(train_x, train_y, test_x, test_y, k, seed, probe, max_folds, one_shot_c, search_settings):
    """Return one seed's k-shot result: C chosen inside the k-shot set, fitted on it, scored on test.

    ``search_settings`` holds :func:`_settled_search`'s ``c_grid``, ``search_dtype``, ``search_tol`` and ``patience``.
    """
    chosen = kshot_indices(train_y, k, seed)
    x, y = train_x[torch.as_tensor(chosen, device=train_x.device)], train_y[chosen]
    final = clone(probe)
    rotation = _shared_rotation(x, final)
    if k == 1:
        search = RegularisationSearch(C=one_shot_c, score=float("nan"))
        warm = (None, None)
    else:
        folds = stratified_folds(y, min(k, max_folds), seed)
        search = _settled_search(x, y, folds, probe=final, rotation=rotation, **search_settings)
        warm = search.solutions[search.C][0]
    if rotation is not None:
        final._share_rotation(x, rotation)
    final.set_params(C=search.C).fit(x, y, coef_init=warm[0], intercept_init=warm[1])
    report = _test_report(final, test_x, test_y)
    return {
        **report,
        "seed": seed,
        "C": search.C,
        "cv_acc1": search.score,
        "settled_Cs": list(search.settled),
        "n_fits": search.n_fits + 1,
        "train_fingerprint": _index_fingerprint(chosen),
    }


def kshot_probe(
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray,
    test_x: np.ndarray | torch.Tensor,
    test_y: np.ndarray,
    *,
    k: int,
    seeds: Sequence[int] = (0, 1, 2),
    max_folds: int = 5,
    one_shot_c: float = 1.0,
    c_grid: Sequence[float] | None = None,
    device: str = "cpu",
    max_iter: int = 1000,
    tol: float = 1e-6,
    dtype: str = "mixed",
    patience: int | None = 2,
    search_dtype: str = "float32",
    search_tol: float = 1e-5,
) -> dict[str, object]:
    """Return k-shot probe results per seed plus their ``mean`` and ``std`` (sample std, ddof=1) of each metric.

    Per seed: ``k`` training samples per class (every class of ``train_y``; a class with fewer than ``k`` raises),
    C chosen by ``min(k, max_folds)``-fold stratified cross-validation inside those samples (``one_shot_c`` when
    k = 1, since a class with a single sample cannot be both fitted and validated), fitted on all of them, scored
    on test. The probe's classes are the full training class set. ``search_dtype``/``search_tol`` as in
    :func:`linear_probe`.
    """
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    _check_labels(train_y, test_y)
    if len(seeds) == 0:
        raise InputError("seeds must name at least one seed")
    probe = LogisticRegressionProbe(tol=tol, max_iter=max_iter, dtype=dtype, device=device)
    search = {"c_grid": c_grid, "search_dtype": search_dtype, "search_tol": search_tol, "patience": patience}
    x = _as_tensor(train_x, dtype, device)
    per_seed = [
        _kshot_one_seed(x, train_y, test_x, test_y, k, seed, probe, max_folds, one_shot_c, search) for seed in seeds
    ]
    keys = ("acc1", "acc5", "mean_per_class_recall", "C")
    table = {key: np.array([run[key] for run in per_seed], dtype=np.float64) for key in keys}
    ddof = 1 if len(seeds) > 1 else 0
    return {
        "k": k,
        "seeds": list(seeds),
        "per_seed": per_seed,
        "mean": {key: float(np.mean(v)) for key, v in table.items()},
        "std": {key: float(np.std(v, ddof=ddof)) for key, v in table.items()},
    }
