"""Training-time preprocessing and augmentation of the recipes, as published (study.md §3.1, §4.1, §5.1, §7).

A :class:`TrainTransform` (a recipe's ``train_transform`` section) describes a pipeline in two parts:

* a deterministic prefix — RGB conversion, resize (``squash``: both sides; ``shortest``: short side then centre
  crop) — run once per image and kept as ``uint8`` tensors (:class:`overspec.finetune.data.AugmentedImages`);
* a random part run at every draw — random crop, the ordered ``augment`` list, then ``/255``, mean / std and the
  channel order.

Augmentations come from a small registry (:data:`AUGMENTATIONS`): ``hflip``, ``randaugment``, ``gamma``,
``rgb_shift`` and ``color_jitter``; each applies with probability ``p`` (albumentations' default 0.5 is what
FoundPAD's ``albumentations.Compose`` used). torchvision supplies the operations (RandAugment's operation space and
``_apply_op``, ``adjust_gamma``, the ``ColorJitter`` adjustments); only their random parameters are drawn here,
from a :class:`torch.Generator` seeded by ``(seed, step, position)`` (:func:`draw_generator`) — never from torch's
global RNG — so a draw is the same whether a run was interrupted and resumed or not, and whatever the number of ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from overspec.config.model import INTERPOLATIONS, OPENAI_MEAN, OPENAI_STD, PreprocessSpec
from overspec.config.typed import ConfigError, from_dict
from overspec.errors import InputError
from overspec.registry import Registry, RegistryError

__all__ = ["TrainTransform", "TrainPipeline", "AUGMENTATIONS", "HFlip", "RandAugment", "Gamma", "RGBShift",
           "ColorJitter", "build_augmentation", "draw_generator", "transform_from_preprocess"]

#: Separates the augmentation streams from the batch plans' streams seeded by the same run seed.
_DRAW_STREAM = 0x6175676D


def draw_generator(seed: int, step: int, position: int) -> torch.Generator:
    """A CPU generator for the draw at ``position`` of global batch ``step`` of a run seeded ``seed``."""
    state = np.random.SeedSequence([_DRAW_STREAM, seed % 2**63, step, position]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def _applies(p: float, generator: torch.Generator) -> bool:
    """Whether an augmentation of probability ``p`` applies (always draws, so later draws do not depend on ``p``)."""
    return float(torch.rand(1, generator=generator)) < p


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise InputError(f"{name}: p must be in [0, 1], got {p}")


@dataclass(frozen=True)
class HFlip:
    """Horizontal flip with probability ``p``."""

    NAME: ClassVar[str] = "hflip"
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_probability(self.NAME, self.p)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``image`` (``(3, H, W)`` uint8) flipped left-right, or unchanged."""
        return image.flip(-1) if _applies(self.p, generator) else image


@dataclass(frozen=True)
class RandAugment:
    """torchvision's RandAugment (Cubuk et al. 2020): ``num_ops`` operations drawn uniformly from its space, each at
    bin ``magnitude`` of ``num_magnitude_bins`` with a random sign where signed; nearest interpolation, black fill."""

    NAME: ClassVar[str] = "randaugment"
    num_ops: int = 2
    magnitude: int = 9
    num_magnitude_bins: int = 31
    p: float = 1.0

    def __post_init__(self) -> None:
        _check_probability(self.NAME, self.p)
        if self.num_ops < 0 or not 0 <= self.magnitude < self.num_magnitude_bins:
            raise InputError(f"randaugment: need num_ops >= 0 and 0 <= magnitude < num_magnitude_bins, got "
                             f"{self.num_ops}, {self.magnitude}, {self.num_magnitude_bins}")

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``image`` after ``num_ops`` random operations (mirrors ``torchvision.transforms.RandAugment.forward``)."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import RandAugment as TorchRandAugment
        from torchvision.transforms.autoaugment import _apply_op

        if not _applies(self.p, generator):
            return image
        space = TorchRandAugment(self.num_ops, self.magnitude, self.num_magnitude_bins)._augmentation_space(
            self.num_magnitude_bins, (image.shape[-2], image.shape[-1]))
        names = list(space)
        for _ in range(self.num_ops):
            name = names[int(torch.randint(len(names), (1,), generator=generator))]
            magnitudes, signed = space[name]
            magnitude = float(magnitudes[self.magnitude]) if magnitudes.ndim > 0 else 0.0
            if signed and int(torch.randint(2, (1,), generator=generator)):
                magnitude = -magnitude
            image = _apply_op(image, name, magnitude, interpolation=InterpolationMode.NEAREST, fill=None)
        return image


@dataclass(frozen=True)
class Gamma:
    """``255 (x / 255) ** g`` with ``g`` uniform in ``gamma`` (albumentations RandomGamma(80, 180) = [0.8, 1.8])."""

    NAME: ClassVar[str] = "gamma"
    gamma: tuple[float, float] = (0.8, 1.8)
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_probability(self.NAME, self.p)
        if len(self.gamma) != 2 or not 0 < self.gamma[0] <= self.gamma[1]:
            raise InputError(f"gamma: gamma must be [low, high] with 0 < low <= high, got {list(self.gamma)}")

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``image`` with a random gamma curve, or unchanged."""
        from torchvision.transforms import functional as F

        if not _applies(self.p, generator):
            return image
        return F.adjust_gamma(image, _uniform(generator, *self.gamma))


@dataclass(frozen=True)
class RGBShift:
    """Adds one value uniform in ``[-limit, limit]`` per channel (albumentations RGBShift), rounded and clipped."""

    NAME: ClassVar[str] = "rgb_shift"
    limit: float = 20.0
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_probability(self.NAME, self.p)
        if self.limit < 0:
            raise InputError(f"rgb_shift: limit must be >= 0, got {self.limit}")

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``image`` with each channel shifted by its own random amount, or unchanged."""
        if not _applies(self.p, generator):
            return image
        shifts = (torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1) * self.limit
        shifted = image.to(torch.float64) + shifts.view(3, 1, 1)
        return shifted.round().clamp(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class ColorJitter:
    """torchvision ColorJitter: brightness, contrast, saturation factors in ``[1 - v, 1 + v]`` and a hue shift in
    ``[-hue, hue]``, applied in a random order."""

    NAME: ClassVar[str] = "color_jitter"
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_probability(self.NAME, self.p)
        if min(self.brightness, self.contrast, self.saturation) < 0 or not 0 <= self.hue <= 0.5:
            raise InputError(f"color_jitter: need brightness, contrast, saturation >= 0 and 0 <= hue <= 0.5, got "
                             f"{self.brightness}, {self.contrast}, {self.saturation}, {self.hue}")

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``image`` with the four adjustments at random strengths in a random order, or unchanged."""
        from torchvision.transforms import functional as F

        if not _applies(self.p, generator):
            return image
        adjust = [(F.adjust_brightness, 1 - self.brightness, 1 + self.brightness, self.brightness),
                  (F.adjust_contrast, 1 - self.contrast, 1 + self.contrast, self.contrast),
                  (F.adjust_saturation, 1 - self.saturation, 1 + self.saturation, self.saturation),
                  (F.adjust_hue, -self.hue, self.hue, self.hue)]
        order = torch.randperm(4, generator=generator).tolist()
        factors = [_uniform(generator, max(low, 0.0) if fn is not F.adjust_hue else low, high)
                   for fn, low, high, _ in adjust]
        for index in order:
            fn, _, _, strength = adjust[index]
            if strength > 0:
                image = fn(image, factors[index])
        return image


AUGMENTATIONS: Registry[type] = Registry("augmentation")
for _cls in (HFlip, RandAugment, Gamma, RGBShift, ColorJitter):
    AUGMENTATIONS.register(_cls.NAME, _cls)


def build_augmentation(entry: Mapping, where: str) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """The augmentation an ``augment`` entry (``{name: ..., **parameters}``) describes; errors name ``where``."""
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise ConfigError(f"{where}: expected a mapping with a 'name' ({', '.join(AUGMENTATIONS.names())})")
    try:
        cls = AUGMENTATIONS.get(str(entry["name"]))
    except RegistryError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return from_dict(cls, {k: v for k, v in entry.items() if k != "name"}, where)


@dataclass(frozen=True)
class TrainTransform:
    """A recipe's training preprocessing: deterministic resize, then random crop, ``augment`` and normalisation.

    ``resize`` is the side after resizing (both sides with ``resize_mode: squash``; the short side, then a centre
    crop to a square, with ``shortest``). ``crop`` (0: none) is a random square crop of the resized image. ``augment``
    lists ``{name, **parameters}`` entries of :data:`AUGMENTATIONS`, applied in order on ``uint8`` images.
    ``mean`` / ``std`` are in RGB order; ``channel_order: BGR`` swaps channels after normalising (as
    :class:`~overspec.config.model.PreprocessSpec`). The recipe's evaluation preprocessing is :meth:`eval_spec`.
    """

    resize: int = 224
    resize_mode: str = "squash"
    interpolation: str = "bicubic"
    crop: int = 0
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    augment: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        if self.resize < 1 or not 0 <= self.crop <= self.resize:
            raise InputError(f"need resize >= 1 and 0 <= crop <= resize, got resize {self.resize}, crop {self.crop}")
        if self.resize_mode not in ("squash", "shortest"):
            raise InputError(f"resize_mode must be 'squash' or 'shortest', got {self.resize_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        self.eval_spec()  # mean, std and channel order checked as a model preprocessing checks them
        for index, entry in enumerate(self.augment):
            build_augmentation(entry, f"augment[{index}]")

    def eval_spec(self) -> PreprocessSpec:
        """The recipe's evaluation preprocessing: the deterministic steps straight to the trained input size.

        FoundPAD tests by resizing straight to 224 (no 256 → centre crop step, study.md §5.1); with no crop the
        evaluation resize is the training one.
        """
        return PreprocessSpec(size=self.crop or self.resize, mean=self.mean, std=self.std,
                              interpolation=self.interpolation, resize_mode=self.resize_mode,
                              channel_order=self.channel_order)

    def augmentations(self) -> list[Callable[[torch.Tensor, torch.Generator], torch.Tensor]]:
        """The ``augment`` entries built, in order."""
        return [build_augmentation(entry, f"augment[{index}]") for index, entry in enumerate(self.augment)]


def transform_from_preprocess(spec: PreprocessSpec) -> TrainTransform:
    """The un-augmented training transform equal to a model's evaluation preprocessing ``spec``."""
    return TrainTransform(resize=spec.size, resize_mode=spec.resize_mode, interpolation=spec.interpolation,
                          channel_order=spec.channel_order, mean=spec.mean, std=spec.std)


class TrainPipeline:
    """A :class:`TrainTransform` made runnable: :meth:`prefix` once per image, :meth:`draw` at every draw."""

    def __init__(self, transform: TrainTransform) -> None:
        from torchvision import transforms as T

        self.transform = transform
        mode = T.InterpolationMode(transform.interpolation)
        size = transform.resize
        self._resize = ([T.Resize(size, interpolation=mode), T.CenterCrop(size)]
                        if transform.resize_mode == "shortest" else [T.Resize((size, size), interpolation=mode)])
        self._augment = transform.augmentations()
        self._mean = torch.tensor(transform.mean).view(3, 1, 1)
        self._std = torch.tensor(transform.std).view(3, 1, 1)

    def prefix(self, image) -> torch.Tensor:
        """The deterministic part: PIL image → RGB → resized ``(3, H, W)`` uint8 tensor."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        for step in self._resize:
            image = step(image)
        return torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1).contiguous()

    def draw(self, prefix: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The random part on a :meth:`prefix` tensor: crop, augmentations, then the normalised float tensor."""
        image = self._random_crop(prefix, generator)
        for augmentation in self._augment:
            image = augmentation(image, generator)
        x = image.to(torch.get_default_dtype()).div(255)
        x = (x - self._mean) / self._std
        return x.flip(0) if self.transform.channel_order == "BGR" else x

    def _random_crop(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        crop = self.transform.crop
        if not crop:
            return image
        top = int(torch.randint(image.shape[-2] - crop + 1, (1,), generator=generator))
        left = int(torch.randint(image.shape[-1] - crop + 1, (1,), generator=generator))
        return image[:, top:top + crop, left:left + crop]
