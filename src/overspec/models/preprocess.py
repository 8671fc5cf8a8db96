"""Build the image transform described by a :class:`PreprocessSpec` and fingerprint it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision import transforms as T

from overspec.data.base import content_fingerprint
from overspec.config.model import PreprocessSpec

__all__ = ["ToBGR", "build_transform", "preprocess_fingerprint"]

_MODES = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


class ToBGR(torch.nn.Module):
    """Swap the channel axis of a ``(3, H, W)`` tensor from RGB to BGR."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(0)


def build_transform(spec: PreprocessSpec) -> Callable[[Image.Image], torch.Tensor]:
    """Return PIL → normalised tensor following ``spec`` (resize, crop, to-tensor, normalise, channel order)."""
    mode = _MODES[spec.interpolation]
    if spec.resize_mode == "shortest":
        steps: list = [T.Resize(spec.size, interpolation=mode), T.CenterCrop(spec.size)]
    else:
        steps = [T.Resize((spec.size, spec.size), interpolation=mode)]
    steps += [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    if spec.channel_order == "BGR":
        steps.append(ToBGR())
    return T.Compose(steps)


def preprocess_fingerprint(spec: PreprocessSpec) -> str:
    """Content key of the preprocessing (every field that changes the tensors a model sees)."""
    return content_fingerprint(
        "preprocess-v1", spec.size, spec.mean, spec.std, spec.interpolation, spec.resize_mode, spec.channel_order
    )
