"""The contract every model source fulfils: an image (and optionally text) encoder with its preprocessing.

Protocols never see models, only features; the feature store sees only this interface.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

__all__ = ["Encoder", "ModelLoadError"]


class ModelLoadError(RuntimeError):
    """A model cannot be built from its spec; the message names the model and the file or key at fault."""


@dataclass
class Encoder:
    """A loaded model: image tower, optional text tower, preprocessing and content fingerprints.

    ``fingerprint`` covers the image-tower weights and the preprocessing, ``text_fingerprint`` the text tower
    and tokenizer (``None`` for image-only encoders, which get linear probe but never zero-shot).
    """

    name: str
    module: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    image_fn: Callable[[torch.Tensor], torch.Tensor]
    fingerprint: str
    text_fn: Callable[[Sequence[str]], torch.Tensor] | None = None
    text_fingerprint: str | None = None
    logit_scale: float = 100.0
    info: dict | None = None
    image_prefixes: tuple[str, ...] = ("",)
    head: object | None = None

    def image_state(self) -> dict[str, torch.Tensor]:
        """Return the image-tower part of the module's state dict (keys starting with ``image_prefixes``)."""
        return {k: v for k, v in self.module.state_dict().items() if k.startswith(self.image_prefixes)}

    @property
    def has_text(self) -> bool:
        """Whether the model has a text tower (and so can be scored zero-shot)."""
        return self.text_fn is not None

    @property
    def device(self) -> torch.device:
        """The device the weights live on."""
        return next(self.module.parameters()).device

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Return unnormalised image embeddings for a preprocessed batch ``(N, 3, H, W)``."""
        return self.image_fn(images)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Return unnormalised text embeddings for raw strings; an error for image-only encoders."""
        if self.text_fn is None:
            raise TypeError(f"model {self.name!r} has no text tower: zero-shot scoring is not available")
        return self.text_fn(texts)
