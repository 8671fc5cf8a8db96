"""Uncertainty for the trade-off report: paired image bootstrap of accuracies, deltas and GELO; McNemar's test.

Bootstrap: each replicate redraws the test images of a dataset with replacement (multinomial counts, so a replicate
is one matrix product) and uses the *same* draw for every model on that dataset, so base-vs-variant deltas, GELO and
differences of GELOs are paired. Datasets are resampled independently (stratified), each from its own seed derived
from ``(seed, dataset name)``, so a dataset's replicates do not depend on which other datasets are in the run.
Intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13).

McNemar: the default is the mid-p exact test, recommended over the asymptotic and the conservative exact test by
Fagerland, Lydersen & Laake (2013), "The McNemar test for binary matched-pairs data: mid-p and asymptotic are
better than exact conditional", BMC Med. Res. Methodol. 13:91. ``exact`` and ``chi2`` (with Edwards' continuity
correction by default) are available.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["CORRECT_KEYS", "GeneralBootstrap", "McNemarResult", "bootstrap_means", "dataset_rng",
           "general_bootstrap", "mcnemar", "percentile_interval"]

# metric -> key of the per-sample 0/1 array in a predictions file whose mean is that metric
CORRECT_KEYS = {"acc1": "correct", "acc5": "correct5"}
# metric -> the per-sample array its bootstrap resamples (mean per-class recall: "correct", class-weighted)
BOOTSTRAPPED = {**CORRECT_KEYS, "mean_per_class_recall": "correct"}
_MAX_CHUNK_ELEMENTS = 4_000_000


def dataset_rng(seed: int, dataset: str) -> np.random.Generator:
    """Generator for one dataset's resampling: fixed by the seed and the dataset name only."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(dataset.encode())]))


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Return the (low, high) percentile interval of bootstrap ``replicates`` at confidence ``level``."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must lie in (0, 1), got {level}")
    alpha = (1 - level) / 2
    low, high = np.quantile(np.asarray(replicates, dtype=float), [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_means(correct: np.ndarray, n_boot: int, rng: np.random.Generator, *,
                    paired: bool = True) -> np.ndarray:
    """Return (M, n_boot) bootstrap means of the rows of ``correct`` (M models × n images, 0/1 or real).

    ``paired=True`` draws one resample of the images per replicate, shared by all rows; ``paired=False`` draws
    an independent resample per row (what an analysis ignoring the pairing would do).
    """
    values = np.atleast_2d(np.asarray(correct, dtype=float))
    n_models, n = values.shape
    if n == 0:
        raise ValueError("cannot bootstrap an empty set of images")
    chunk = max(1, _MAX_CHUNK_ELEMENTS // n)
    uniform = np.full(n, 1.0 / n)
    out = np.empty((n_models, n_boot))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        if paired:
            counts = rng.multinomial(n, uniform, size=size)
            out[:, start:start + size] = values @ counts.T / n
        else:
            for m in range(n_models):
                counts = rng.multinomial(n, uniform, size=size)
                out[m, start:start + size] = counts @ values[m] / n
    return out


@dataclass
class GeneralBootstrap:
    """Joint bootstrap replicates of one general protocol: ``replicates[dataset]`` is (len(models), n_boot)."""

    protocol: str
    metric: str
    models: list[str]
    replicates: dict[str, np.ndarray]
    n_boot: int
    seed: int
    level: float = 0.95
    skipped: dict[str, str] = field(default_factory=dict)

    def _row(self, model: str) -> int:
        return self.models.index(model)

    def accuracy(self, model: str, dataset: str) -> np.ndarray | None:
        """Replicates of ``model``'s accuracy on ``dataset`` (None when not bootstrapped)."""
        if dataset not in self.replicates or model not in self.models:
            return None
        return self.replicates[dataset][self._row(model)]

    def delta(self, variant: str, base: str, dataset: str) -> np.ndarray | None:
        """Paired replicates of variant − base accuracy on ``dataset``."""
        a, b = self.accuracy(variant, dataset), self.accuracy(base, dataset)
        return None if a is None or b is None else a - b

    def average(self, model: str, datasets: Sequence[str]) -> np.ndarray | None:
        """Replicates of the plain mean over ``datasets`` (None unless every dataset was bootstrapped)."""
        rows = [self.accuracy(model, d) for d in datasets]
        if not rows or any(r is None for r in rows):
            return None
        return np.mean(np.stack(rows), axis=0)

    def gelo(self, variant: str, base: str, datasets: Sequence[str]) -> np.ndarray | None:
        """Replicates of GELO = mean variant accuracy ÷ mean base accuracy over ``datasets``."""
        top, bottom = self.average(variant, datasets), self.average(base, datasets)
        if top is None or bottom is None:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return top / bottom

    def interval(self, replicates: np.ndarray | None) -> tuple[float, float] | None:
        """Percentile interval of ``replicates`` at this bootstrap's level (None passes through)."""
        if replicates is None:
            return None
        finite = replicates[np.isfinite(replicates)]
        return percentile_interval(finite, self.level) if finite.size else None


def general_bootstrap(run, protocol: str, metric: str = "acc1", *, models: Sequence[str] | None = None,
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> GeneralBootstrap:
    """Bootstrap every dataset of ``protocol`` from the stored per-sample predictions of ``run`` (a RunData).

    A dataset is skipped (reason kept in ``skipped``) when a model lacks predictions or the models' label arrays
    differ (then the images are not the same and pairing is impossible).
    """
    if metric != "main" and metric not in BOOTSTRAPPED:
        raise ValueError(f"no per-sample array for metric {metric!r}; bootstrap supports {sorted(BOOTSTRAPPED)}")
    chosen = run.main_metric if metric == "main" else (lambda dataset: metric)
    names = list(models) if models is not None else \
        list(dict.fromkeys(r.model for r in run.records if r.protocol == protocol and r.metric == chosen(r.dataset)))
    datasets = list(dict.fromkeys(r.dataset for r in run.records
                                  if r.protocol == protocol and r.metric == chosen(r.dataset)))
    result = GeneralBootstrap(protocol, metric, names, {}, n_boot, seed, level)
    for dataset in datasets:
        stacked, reason = _stack_per_sample(run, names, dataset, protocol, chosen(dataset))
        if stacked is None:
            result.skipped[dataset] = reason
            logger.info("no bootstrap for %s/%s: %s", protocol, dataset, reason)
            continue
        _check_against_records(run, names, dataset, protocol, chosen(dataset), stacked)
        result.replicates[dataset] = bootstrap_means(stacked, n_boot, dataset_rng(seed, dataset))
    return result


def _stack_per_sample(run, models: Sequence[str], dataset: str, protocol: str,
                      metric: str) -> tuple[np.ndarray | None, str]:
    """Per-sample values whose mean is ``metric`` for each model (rows), or None and why.

    Mean per-class recall uses each sample's correctness weighted by N / (C · n_class), whose mean over the test
    set is exactly the recall averaged over its C classes (resampling keeps the weights: a Horvitz-Thompson
    estimate of that average).
    """
    if metric not in BOOTSTRAPPED:
        return None, f"no per-sample array for metric {metric!r}"
    stacked, reason = _stack_correct(run, models, dataset, protocol, BOOTSTRAPPED[metric])
    if stacked is None or metric != "mean_per_class_recall":
        return stacked, reason
    labels = run.predictions(models[0], dataset, protocol).get("label")
    if labels is None:
        return None, "no stored labels to weight the classes by"
    classes, inverse, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    return stacked * (len(labels) / (len(classes) * counts[inverse]))[None, :], ""


def _stack_correct(run, models: Sequence[str], dataset: str, protocol: str,
                   key: str) -> tuple[np.ndarray | None, str]:
    rows, labels = [], None
    for model in models:
        arrays = run.predictions(model, dataset, protocol)
        if arrays is None or key not in arrays:
            return None, f"no stored '{key}' predictions for {model}"
        if labels is None:
            labels = arrays.get("label")
        elif "label" in arrays and not np.array_equal(labels, arrays["label"]):
            return None, f"{model}'s test labels differ from {models[0]}'s (not the same images)"
        rows.append(np.asarray(arrays[key], dtype=float).reshape(-1))
    if len({r.size for r in rows}) > 1:
        return None, "models were evaluated on different numbers of images"
    return np.stack(rows), ""


def _check_against_records(run, models, dataset, protocol, metric, stacked) -> None:
    recorded = {r.model: r.value for r in run.records
                if r.dataset == dataset and r.protocol == protocol and r.metric == metric}
    for model, row in zip(models, stacked):
        if model in recorded and abs(recorded[model] - row.mean()) > 1e-6:
            logger.warning("%s %s/%s: recorded %s %.6f but predictions give %.6f", model, protocol, dataset,
                           metric, recorded[model], row.mean())


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of two classifiers on the same images: b = only A right, c = only B right."""

    b: int
    c: int
    statistic: float
    p_value: float
    method: str


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray, *, method: str = "midp",
            continuity: bool = True) -> McNemarResult:
    """Two-sided McNemar test that A and B have the same accuracy on paired images.

    ``method``: ``"midp"`` (default; 2·P(X ≤ k) − P(X = k), X ~ Bin(b + c, ½), k = min(b, c)), ``"exact"``
    (min(1, 2·P(X ≤ k))) or ``"chi2"`` ((|b − c| − 1)² / (b + c) on 1 degree of freedom; the −1 is Edwards'
    continuity correction, dropped with ``continuity=False``). ``statistic`` is k for the exact tests.

    >>> mcnemar(np.array([1, 1, 1, 0, 0, 0, 0, 0, 0]), np.array([1, 0, 0, 1, 1, 1, 1, 1, 1])).b
    2
    """
    from scipy import stats as scipy_stats  # here, not at import: a report that is kept never needs scipy

    a = np.asarray(correct_a).astype(bool).reshape(-1)
    b_arr = np.asarray(correct_b).astype(bool).reshape(-1)
    if a.shape != b_arr.shape:
        raise ValueError(f"McNemar needs paired outcomes; got {a.size} and {b_arr.size} images")
    b, c = int(np.sum(a & ~b_arr)), int(np.sum(~a & b_arr))
    n, k = b + c, min(b, c)
    if method in ("exact", "midp"):
        if n == 0:
            return McNemarResult(b, c, float(k), 1.0, method)
        p = 2 * scipy_stats.binom.cdf(k, n, 0.5)
        if method == "midp":
            p -= scipy_stats.binom.pmf(k, n, 0.5)
        return McNemarResult(b, c, float(k), float(min(1.0, p)), method)
    if method == "chi2":
        if n == 0:
            return McNemarResult(b, c, 0.0, 1.0, "chi2")
        diff = max(abs(b - c) - (1 if continuity else 0), 0)
        statistic = diff ** 2 / n
        label = "chi2 (continuity corrected)" if continuity else "chi2"
        return McNemarResult(b, c, float(statistic), float(scipy_stats.chi2.sf(statistic, 1)), label)
    raise ValueError(f"unknown McNemar method {method!r}; use 'midp', 'exact' or 'chi2'")
