"""Training heads and their losses: margin-softmax heads for FR, a two-way linear head for MAD / PAD.

FR (FRoundation, study.md §2.4, §3.1): CosFace or ArcFace on the L2-normalised projected embedding, one class per
training identity, cross-entropy on the margin logits. The margin code follows the ElasticFace / FRoundation
``losses.py`` form: CosFace ``s · (cos θ − m·[j = y])``; ArcFace ``s · cos(θ + m·[j = y])`` with no fallback
for θ + m > π (the FRoundation code has none). The class kernel starts as N(0, 0.01²) like theirs.

MAD / PAD (MADation / FoundPAD ``BinaryCrossEntropyHeader``, study.md §2.4): ``Linear(D, 2)`` on the
L2-normalised embedding, label 1 = bona fide, score = softmax(logits)[:, 1]. The published loss is
``BCEWithLogitsLoss`` on one-hot targets over the two logits (``loss="bce"``); plain cross-entropy is offered as
``loss="ce"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from overspec.models.heads import BinaryHead
from overspec.errors import InputError

__all__ = ["MarginHead", "BinaryLinearHead", "MARGIN_KINDS", "BINARY_LOSSES"]

MARGIN_KINDS = ("cosface", "arcface")
BINARY_LOSSES = ("bce", "ce")
_ACOS_EPS = 1e-7  # keeps d acos / d x finite at |cos| = 1


class MarginHead(nn.Module):
    """CosFace / ArcFace classifier over ``num_classes`` identities; :meth:`loss` is the training objective."""

    def __init__(self, dim: int, num_classes: int, *, kind: str = "cosface", scale: float = 64.0,
                 margin: float = 0.3) -> None:
        super().__init__()
        if kind not in MARGIN_KINDS:
            raise InputError(f"head kind must be one of {MARGIN_KINDS}, got {kind!r}")
        if num_classes < 2:
            raise InputError(f"a margin head needs at least 2 identities, got {num_classes}")
        self.kind, self.scale, self.margin = kind, float(scale), float(margin)
        self.kernel = nn.Parameter(torch.empty(dim, num_classes))
        nn.init.normal_(self.kernel, std=0.01)

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each (normalised) embedding with each (normalised) class centre, (N, C)."""
        x = F.normalize(embeddings.float(), dim=1)
        w = F.normalize(self.kernel.float(), dim=0)
        return (x @ w).clamp(-1.0, 1.0)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Margin-adjusted, scaled logits; the margin applies to each row's true class only."""
        cos = self.cosines(embeddings)
        target = F.one_hot(labels.long(), cos.shape[1]).to(cos.dtype)
        if self.kind == "cosface":
            adjusted = cos - self.margin * target
        else:
            theta = torch.acos(cos.clamp(-1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS))
            adjusted = torch.cos(theta + self.margin * target)
        return self.scale * adjusted

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the margin logits."""
        return F.cross_entropy(self.logits(embeddings, labels), labels.long())


class BinaryLinearHead(nn.Module):
    """Two-way linear head on the L2-normalised embedding (column 1 = bona fide)."""

    def __init__(self, dim: int, *, loss: str = "bce") -> None:
        super().__init__()
        if loss not in BINARY_LOSSES:
            raise InputError(f"binary head loss must be one of {BINARY_LOSSES}, got {loss!r}")
        self.loss_kind = loss
        self.linear = nn.Linear(dim, 2)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Two logits per embedding."""
        return self.linear(F.normalize(embeddings.float(), dim=1))

    def scores(self, embeddings: torch.Tensor) -> torch.Tensor:
        """P(bona fide) = softmax(logits)[:, 1]."""
        return torch.softmax(self.logits(embeddings), dim=1)[:, 1]

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """BCE-with-logits on one-hot targets (published) or cross-entropy, averaged over the batch."""
        logits = self.logits(embeddings)
        if self.loss_kind == "ce":
            return F.cross_entropy(logits, labels.long())
        return F.binary_cross_entropy_with_logits(logits, F.one_hot(labels.long(), 2).to(logits.dtype))

    def to_binary_head(self) -> BinaryHead:
        """The head as the evaluation-side :class:`~overspec.models.heads.BinaryHead`."""
        return BinaryHead(self.linear.weight.detach().float().cpu().clone(),
                          self.linear.bias.detach().float().cpu().clone(), normalise_input=True)

