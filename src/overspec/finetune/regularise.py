"""Regularised fine-tuning: loss terms that trade some specialisation for retention of the base model.

Two terms, each weighted by its ``regularise`` setting and added to the head's loss in the trainer's objective:

- **Feature distillation** (``distill``), after LwF-style feature matching (Li & Hoiem, "Learning without
  Forgetting", 2016; Hinton et al. 2015): the squared L2 distance between the *L2-normalised* adapted image embedding
  and the frozen base's normalised embedding of the same augmented batch, averaged over the batch,
  ``mean_i ‖f_i/‖f_i‖ − g_i/‖g_i‖‖² = mean_i 2 (1 − cos(f_i, g_i))``. Normalised, because every downstream use of the
  embedding (zero-shot, probes on normalised features, verification, the heads) reads its direction only, so a norm
  change is no forgetting; and the squared distance of unit vectors is bounded (``[0, 4]``) and smooth, unlike the
  unsquared one at 0. The base embedding is the same module with every LoRA adapter at strength 0, in eval mode and
  under ``no_grad`` (no dropout draws, so the training RNG stream is the one an unregularised run sees).
- **L2-SP** (``l2sp``; Li, Grandvalet & Davoine, "Explicit inductive bias for transfer learning with convolutional
  networks", ICML 2018): ``Σ ‖W − W₀‖²_F`` over the adapted weights. For LoRA the change of a weight is
  ``s·λ·B A``, so the sum runs over adapters as ``(sλ)² ‖B A‖²_F = (sλ)² Σ (BᵀB) ⊙ (A Aᵀ)`` (rank × rank, never
  forming the full matrix); any other trainable parameter (a full fine-tune) counts ``‖θ − θ₀‖²`` against its
  value when training started.

With both weights at 0 the trainer builds no :class:`Regulariser` and trains exactly as without this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from overspec import distributed
from overspec.errors import InputError
from overspec.models.lora import LoraDelta

__all__ = ["RegulariseSettings", "Regulariser", "regulariser_for", "distill_loss", "lora_weight_drift",
           "anchored_drift", "adapters_off", "logged_terms"]

TERMS = ("distill", "l2sp")


@dataclass(frozen=True)
class RegulariseSettings:
    """Weights of the retention terms added to the head's loss (0 = off; see the module docstring)."""

    distill: float = 0.0
    l2sp: float = 0.0

    def __post_init__(self) -> None:
        for key in TERMS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise InputError(f"regularise.{key} must be a finite number >= 0, got {value!r}")

    @property
    def active(self) -> bool:
        """Whether any term has a positive weight."""
        return any(getattr(self, key) > 0 for key in TERMS)


def distill_loss(features: torch.Tensor, base_features: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared L2 distance between the normalised embeddings (``2 − 2 cos``)."""
    moved = F.normalize(features.float(), dim=1) - F.normalize(base_features.float(), dim=1)
    return moved.pow(2).sum(dim=1).mean()


def lora_weight_drift(deltas: Sequence[LoraDelta]) -> torch.Tensor:
    """``Σ ‖s·λ·B A‖²_F`` over ``deltas``, through the rank × rank Gram matrices of ``A`` and ``B``."""
    return sum((_squared_norm(delta) for delta in deltas), torch.zeros(()))


def _squared_norm(delta: LoraDelta) -> torch.Tensor:
    """``‖s·λ·B A‖²_F = (sλ)² Σ (BᵀB) ⊙ (A Aᵀ)`` (both Gram matrices symmetric)."""
    a, b = delta.A.float(), delta.B.float()
    return (delta.scaling * delta.strength) ** 2 * ((b.T @ b) * (a @ a.T)).sum()


def anchored_drift(anchored: Sequence[tuple[nn.Parameter, torch.Tensor]]) -> torch.Tensor:
    """``Σ ‖θ − θ₀‖²`` over (parameter, starting value) pairs."""
    return sum(((param.float() - start.float()).pow(2).sum() for param, start in anchored), torch.zeros(()))


@contextmanager
def adapters_off(module: nn.Module) -> Iterator[None]:
    """Run ``module`` as its base: every LoRA adapter at strength 0 and eval mode; both restored afterwards."""
    deltas = [m for m in module.modules() if isinstance(m, LoraDelta)]
    strengths = [delta.strength for delta in deltas]
    was_training = module.training
    module.eval()
    for delta in deltas:
        delta.strength = 0.0
    try:
        yield
    finally:
        for delta, strength in zip(deltas, strengths):
            delta.strength = strength
        module.train(was_training)


class Regulariser:
    """The weighted retention terms of one training run, computed on each batch inside the trainer's objective.

    ``trainable`` are the parameters the optimiser updates: LoRA ``A`` / ``B`` count through their adapter's weight
    change, any other through its distance from its value now (taken at construction, before any step).
    """

    def __init__(self, settings: RegulariseSettings, module: nn.Module,
                 image_fn: Callable[[torch.Tensor], torch.Tensor], trainable: Sequence[nn.Parameter]) -> None:
        self.settings, self.module, self.image_fn = settings, module, image_fn
        ids = {id(p) for p in trainable}
        all_deltas = [m for m in module.modules() if isinstance(m, LoraDelta)]
        self.deltas = [d for d in all_deltas if id(d.A) in ids or id(d.B) in ids]
        covered = {id(p) for d in self.deltas for p in (d.A, d.B)}
        self.anchored = [(p, p.detach().clone()) for p in trainable if id(p) not in covered] \
            if settings.l2sp > 0 else []
        if settings.distill > 0 and not all_deltas:
            raise InputError("regularise.distill needs LoRA adapters: the base embedding is the model with its "
                             "adapters at strength 0")
        self.last: dict[str, torch.Tensor] = {}

    def weight_drift(self) -> torch.Tensor:
        """``Σ ‖ΔW‖²`` over the adapted weights (unweighted)."""
        return lora_weight_drift(self.deltas) + anchored_drift(self.anchored)

    def __call__(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The weighted sum of the active terms for a batch and its adapted embeddings (each kept in ``last``)."""
        terms = {}
        if self.settings.distill > 0:
            with torch.no_grad(), adapters_off(self.module):
                base = self.image_fn(images)
            terms["distill"] = self.settings.distill * distill_loss(features, base)
        if self.settings.l2sp > 0:
            terms["l2sp"] = self.settings.l2sp * self.weight_drift()
        self.last = {key: value.detach() for key, value in terms.items()}
        return sum(terms.values())


def regulariser_for(settings: RegulariseSettings, encoder, trainable: Sequence[nn.Parameter]) -> Regulariser | None:
    """A :class:`Regulariser` for ``encoder`` when any weight is positive, else None (training unchanged)."""
    if not settings.active:
        return None
    return Regulariser(settings, encoder.module, encoder.image_fn, trainable)


def logged_terms(regulariser: Regulariser | None) -> dict[str, float]:
    """The last batch's weighted terms as ``loss_<term>``, averaged over ranks (a collective under DDP)."""
    if regulariser is None or not regulariser.last:
        return {}
    keys = sorted(regulariser.last)
    values = torch.stack([regulariser.last[key].float() for key in keys])
    if distributed.is_distributed():
        dist.all_reduce(values)
        values /= distributed.world_size()
    return {f"loss_{key}": float(value) for key, value in zip(keys, values.cpu())}
