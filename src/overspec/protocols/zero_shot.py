"""Zero-shot classification from text prompts, following CLIP (Radford et al. 2021) and CLIP_benchmark.

The classifier (per class, the re-normalised mean of normalised prompt embeddings) is built and cached by
:mod:`overspec.features.text`; logits are ``scale * normalise(image_features) @ classifier`` with ``scale = 100`` as in CLIP_benchmark (top-k and
mean per-class recall do not depend on it). All class x template prompts are encoded in large batches.
"""

from __future__ import annotations


import numpy as np
import torch

from overspec.protocols._classification import classification_metrics, per_sample_predictions
from overspec.errors import InputError

__all__ = ["evaluate_zero_shot", "zero_shot_logits"]


def zero_shot_logits(
    image_features: torch.Tensor | np.ndarray, classifier: torch.Tensor, scale: float = 100.0
) -> torch.Tensor:
    """Return (N, C) logits ``scale * normalise(image_features) @ classifier`` in float32."""
    features = torch.as_tensor(image_features, device=classifier.device).float()
    if features.ndim != 2 or features.shape[1] != classifier.shape[0]:
        raise InputError(
            f"image features of shape {tuple(features.shape)} do not match a classifier of shape "
            f"{tuple(classifier.shape)} (expected (N, {classifier.shape[0]}))"
        )
    return scale * torch.nn.functional.normalize(features, dim=-1) @ classifier.float()


def evaluate_zero_shot(
    image_features: torch.Tensor | np.ndarray, labels: np.ndarray, classifier: torch.Tensor
) -> dict[str, object]:
    """Return ``acc1``, ``acc5``, ``mean_per_class_recall`` and per-sample ``predictions`` of a zero-shot classifier."""
    scores = zero_shot_logits(image_features, classifier).cpu().numpy()
    labels = np.asarray(labels)
    return {
        **classification_metrics(scores, labels),
        "n_samples": int(scores.shape[0]),
        "n_classes": int(scores.shape[1]),
        "predictions": per_sample_predictions(scores, labels),
    }
