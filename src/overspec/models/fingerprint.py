"""Content fingerprints of weights, so every cache is keyed by what a model computes, not by its name."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch

from overspec.files import combine

__all__ = ["tensors_fingerprint", "combine"]


def tensors_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Return a blake2b digest over names, shapes, dtypes and bytes of the tensors, in the order given."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in named_tensors:
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


