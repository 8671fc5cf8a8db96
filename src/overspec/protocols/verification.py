"""Face verification on pair sets (LFW, CFP-FP, AgeDB-30, ... as insightface ``.bin`` files): 10-fold accuracy.

The feature store embeds every image and its horizontal flip with the model's own preprocessing; here the two raw
embeddings are summed and the sum is L2-normalised (insightface "Accuracy-Flip": the raw embeddings are *not*
normalised before summing), and pairs ``(2k, 2k + 1)`` go to :func:`overspec.metrics.verification_kfold`.
References: insightface ``recognition/arcface_torch/eval/verification.py`` (``test``, ``evaluate``);
biometric-protocols.md §2.2–§2.3.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike

from overspec import metrics
from overspec.errors import InputError

__all__ = ["flip_sum_embeddings", "evaluate_verification"]

logger = logging.getLogger(__name__)


def flip_sum_embeddings(emb: ArrayLike, emb_flip: ArrayLike | None) -> np.ndarray:
    """Return ``L2normalise(emb + emb_flip)`` row-wise (``emb`` alone when ``emb_flip`` is None)."""
    total = np.asarray(emb, dtype=np.float64)
    if emb_flip is not None:
        flip = np.asarray(emb_flip, dtype=np.float64)
        if flip.shape != total.shape:
            raise InputError(f"emb_flip shape {flip.shape} differs from emb shape {total.shape}")
        total = total + flip
    norms = np.linalg.norm(total, axis=1, keepdims=True)
    return total / np.where(norms == 0.0, 1.0, norms)


def evaluate_verification(
    emb: ArrayLike, emb_flip: ArrayLike | None, issame: ArrayLike, *, n_folds: int = 10, far: float = 1e-3
) -> dict:
    """insightface 10-fold verification of ``2 × P`` image embeddings (rows ``2k``, ``2k + 1`` = pair ``k``).

    Returns accuracy (mean of held-out fold accuracies), its population std, each fold's accuracy and chosen
    squared-L2 threshold, XNorm (mean norm of the raw embeddings of both passes), and as an extra the TAR at
    ``far`` on the cosine scores of all pairs (at-most rule, no folds).
    """
    raw = np.asarray(emb)
    if raw.ndim != 2 or raw.shape[0] % 2:
        raise InputError(f"emb must be a 2-D array with an even number of rows (pairs), got shape {raw.shape}")
    labels = np.asarray(issame).astype(bool)
    if labels.shape != (raw.shape[0] // 2,):
        raise InputError(f"issame must have {raw.shape[0] // 2} entries (one per pair), got {labels.shape}")
    joint = flip_sum_embeddings(raw, emb_flip)
    first, second = joint[0::2], joint[1::2]
    kfold = metrics.verification_kfold(first, second, labels, n_folds=n_folds)
    cosine = np.einsum("ij,ij->i", first, second)
    point = metrics.tar_at_far(cosine[labels], cosine[~labels], far)
    logger.info("verification: %d pairs, accuracy %.4f ± %.4f", labels.size, kfold.accuracy, kfold.std)
    return {
        "accuracy": kfold.accuracy,
        "accuracy_std": kfold.std,
        "fold_accuracies": kfold.fold_accuracies.tolist(),
        "fold_thresholds": kfold.fold_thresholds.tolist(),
        "best_threshold_mean": float(np.mean(kfold.fold_thresholds)),
        "xnorm": _xnorm(raw, emb_flip),
        "num_pairs": int(labels.size),
        "tar_at_far": {"far": far, "tar": point.value, "achieved_far": point.achieved,
                       "threshold": point.threshold, "reachable": point.reachable, "rule": point.rule},
    }


def _xnorm(emb: np.ndarray, emb_flip: ArrayLike | None) -> float:
    """Mean L2 norm of the raw embeddings of both passes (insightface logs it as XNorm)."""
    passes = [emb] if emb_flip is None else [emb, np.asarray(emb_flip)]
    return float(np.mean(np.concatenate([np.linalg.norm(np.asarray(p, dtype=np.float64), axis=1) for p in passes])))
