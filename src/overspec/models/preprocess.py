"""Build the image transform described by a :class:`PreprocessSpec`, fingerprint it, and feed a model another one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from PIL import Image

from overspec.config.model import PreprocessSpec
from overspec.data.base import content_fingerprint
from overspec.files import combine
from overspec.models.base import Encoder

__all__ = ["ToBGR", "build_transform", "own_preprocess", "preprocess_fingerprint", "with_preprocess"]

class ToBGR(torch.nn.Module):
    """Swap the channel axis of a ``(3, H, W)`` tensor from RGB to BGR."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(0)


def build_transform(spec: PreprocessSpec) -> Callable[[Image.Image], torch.Tensor]:
    """Return PIL → normalised tensor following ``spec`` (resize, crop, to-tensor, normalise, channel order).

    torchvision is imported here, when a model is fed, not with this module: a run whose units are all stored never
    pays for it (it loads torch's compiler).
    """
    from torchvision import transforms as T

    mode = T.InterpolationMode(spec.interpolation)  # the config's names are torchvision's mode values
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


def own_preprocess(encoder: Encoder) -> PreprocessSpec | None:
    """The preprocessing a loaded model feeds itself (None when its source does not describe it)."""
    described = (encoder.info or {}).get("preprocess")
    return None if described is None else PreprocessSpec(**described)


def with_preprocess(encoder: Encoder, spec: PreprocessSpec) -> Encoder:
    """The same weights fed ``spec`` instead of their own preprocessing, under a fingerprint of their own (features
    of the two never share a cache entry)."""
    return dataclasses.replace(
        encoder, preprocess=build_transform(spec),
        fingerprint=combine("preprocess-override-v1", encoder.fingerprint, preprocess_fingerprint(spec)),
        info={**(encoder.info or {}), "preprocess": dataclasses.asdict(spec),
              "preprocess_fingerprint": preprocess_fingerprint(spec)})
