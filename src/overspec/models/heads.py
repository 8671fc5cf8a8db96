"""Binary attack-detection heads (MADation / FoundPAD ``BinaryCrossEntropyHeader`` convention).

A head is one ``Linear(D, 2)`` on the L2-normalised projected image embedding; column 1 is bona fide and the
score is ``softmax(logits)[:, 1]`` = P(bona fide) (study.md §2.4, §6.3). On disk: a safetensors file with
``weight`` (2, D) and ``bias`` (2,) and metadata naming the convention, so trained and converted heads load alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from overspec.files import atomic_write_bytes
from overspec.models.base import ModelLoadError
from overspec.errors import InputError

__all__ = ["BinaryHead", "save_binary_head", "load_binary_head"]


@dataclass(frozen=True)
class BinaryHead:
    """A two-way linear head; :meth:`scores` returns P(bona fide) for unnormalised image embeddings."""

    weight: torch.Tensor
    bias: torch.Tensor
    normalise_input: bool = True

    def __post_init__(self) -> None:
        if self.weight.ndim != 2 or self.weight.shape[0] != 2 or self.bias.shape != (2,):
            raise ModelLoadError(f"a binary head needs weight (2, D) and bias (2,), got {tuple(self.weight.shape)} "
                                 f"and {tuple(self.bias.shape)}")

    @property
    def dim(self) -> int:
        """Embedding width the head expects."""
        return int(self.weight.shape[1])

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Two logits per embedding (column 1 = bona fide)."""
        x = embeddings.float()
        if self.normalise_input:
            x = torch.nn.functional.normalize(x, dim=-1)
        return x @ self.weight.float().T + self.bias.float()

    def scores(self, embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
        """P(bona fide) per embedding, as float64."""
        x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputError(f"head expects embeddings of width {self.dim}, got shape {tuple(x.shape)}")
        return torch.softmax(self.logits(x), dim=-1)[:, 1].double().numpy()


def save_binary_head(path: Path, head: BinaryHead, *, base_fingerprint: str = "") -> Path:
    """Write ``head`` atomically as safetensors (``weight``, ``bias``) with its convention in the metadata."""
    path = Path(path)
    metadata = {"kind": "binary_head", "input": "projected image embedding",
                "normalise_input": str(head.normalise_input).lower(), "bona_fide_column": "1",
                "base_fingerprint": base_fingerprint}
    tensors = {"weight": head.weight.detach().float().contiguous().cpu(),
               "bias": head.bias.detach().float().contiguous().cpu()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def load_binary_head(path: Path) -> BinaryHead:
    """Read a head written by :func:`save_binary_head`; anything else is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"head file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise ModelLoadError(f"{path}: not a readable safetensors head ({exc})") from None
    if set(tensors) != {"weight", "bias"} or metadata.get("kind") != "binary_head":
        raise ModelLoadError(f"{path}: expected a binary head (tensors 'weight', 'bias'; kind binary_head), "
                             f"got tensors {sorted(tensors)} and kind {metadata.get('kind')!r}")
    try:
        return BinaryHead(tensors["weight"], tensors["bias"], metadata.get("normalise_input", "true") == "true")
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None
