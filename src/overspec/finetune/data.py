"""Training data for fine-tuning: subject-held-out dev splits and seeded, resumable batch plans.

Training sets are read by the format readers of :mod:`overspec.data.formats`, the ones the catalog uses (one reader
per on-disk format): identity folders with :func:`~overspec.data.formats.imagefolder.class_folders`, webdataset
shards with :func:`~overspec.data.formats.wds.read_shards`, insightface ``.rec`` files with
:func:`~overspec.data.formats.recordio.read_record_file`; MAD / PAD protocol lists with
:func:`overspec.data.biometric.attack_list.read_protocol` (label 1 = bona fide). :func:`carve_dev` holds out whole
subjects as a development split when a list has none.

Batch plans decide every step's sample indices from ``(seed, step)`` alone and hand out :class:`Draw` keys
``(index, step, position)``; :class:`AugmentedImages` seeds each draw's augmentation by ``(seed, step, position)``
(:func:`overspec.finetune.augment.draw_generator`). So a run resumed at step ``k`` draws exactly the images an
uninterrupted run would, and ranks of a distributed run take contiguous slices of the same global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from overspec.data.base import LabelledImages
from overspec.errors import InputError
from overspec.features.loading import split_preprocess
from overspec.finetune.augment import TrainPipeline, TrainTransform, draw_generator, transform_from_preprocess
from overspec.models.base import Encoder
from overspec.models.preprocess import own_preprocess

__all__ = ["carve_dev", "TrainingImages", "AugmentedImages", "Draw", "ShuffledBatches", "BalancedBatches",
           "training_images"]


def carve_dev(split: LabelledImages, fraction: float, seed: int) -> tuple[LabelledImages, LabelledImages]:
    """Split off about ``fraction`` of the subjects (``info['subject_id']``, else samples) as a ``dev`` split."""
    groups = np.asarray(split.info.get("subject_id", np.arange(len(split))), dtype=object).astype(str)
    names = np.unique(groups)
    chosen = set(np.random.default_rng(seed).permutation(names)[: max(1, round(fraction * len(names)))])
    dev = np.array([g in chosen for g in groups])
    if dev.all() or not dev.any():
        raise InputError(f"cannot carve a dev split from {split.dataset}/{split.split}: too few subjects")
    return split.subset(np.flatnonzero(~dev), "train"), split.subset(np.flatnonzero(dev), "dev")


#: Preprocessed training images kept in memory per dataset (small sets are drawn many times over; big ones
#: are decoded as they come once this is full).
KEPT_BYTES = 512 * 2**20


class TrainingImages(torch.utils.data.Dataset):
    """Items keyed by ``(index, flip)``: the image (flipped when asked) through ``preprocess``, and its label (the
    evaluation images of :func:`overspec.finetune.trainer.embed`; training draws come from :class:`AugmentedImages`).

    A deterministic ``preprocess`` (resize / crop / to-tensor / normalise, as every model's own is) runs once per
    key: its tensors are kept, up to ``kept_bytes``, since a fine-tune on a small set draws each image many
    times and decoding would otherwise cost more than the steps. Any other preprocess runs at every draw.
    """

    def __init__(self, images: LabelledImages, preprocess: Callable[[Image.Image], torch.Tensor], *,
                 kept_bytes: int = KEPT_BYTES) -> None:
        self.images = images.with_transform(None)
        self.preprocess = preprocess
        self.kept: dict[tuple[int, bool], tuple[torch.Tensor, int]] = {}
        self.room = kept_bytes if split_preprocess(preprocess).splits else 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, bool]) -> tuple[torch.Tensor, int]:
        index, flip = int(key[0]), bool(key[1])
        if (index, flip) in self.kept:
            tensor, label = self.kept[index, flip]
            return tensor.clone(), label
        image, label = self.images[index]
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        tensor = self.preprocess(image)
        size = tensor.numel() * tensor.element_size() if isinstance(tensor, torch.Tensor) else self.room + 1
        if size <= self.room:
            self.room -= size
            self.kept[index, flip] = (tensor.clone(), label)
        return tensor, label


class Draw(NamedTuple):
    """One sample of a training step: dataset ``index``, global batch ``step`` and ``position`` in that batch."""

    index: int
    step: int
    position: int


class AugmentedImages(torch.utils.data.Dataset):
    """Items keyed by :class:`Draw`: the image through a recipe's :class:`~overspec.finetune.augment.TrainPipeline`.

    The deterministic prefix (decode, resize) runs once per image and its ``uint8`` tensor is kept, up to
    ``kept_bytes``; the random part (crop, augmentations, normalisation) runs at every draw with a generator seeded
    by ``(seed, step, position)``.
    """

    def __init__(self, images: LabelledImages, pipeline: TrainPipeline, *, seed: int,
                 kept_bytes: int = KEPT_BYTES) -> None:
        self.images = images.with_transform(None)
        self.pipeline, self.seed = pipeline, seed
        self.kept: dict[int, tuple[torch.Tensor, int]] = {}
        self.room = kept_bytes

    def __len__(self) -> int:
        return len(self.images)

    def prefix(self, index: int) -> tuple[torch.Tensor, int]:
        """The kept (or freshly computed) deterministic prefix of image ``index`` and its label."""
        if index in self.kept:
            return self.kept[index]
        image, label = self.images[index]
        tensor = self.pipeline.prefix(image)
        size = tensor.numel() * tensor.element_size()
        if size <= self.room:
            self.room -= size
            self.kept[index] = (tensor, label)
        return tensor, label

    def __getitem__(self, key: Draw) -> tuple[torch.Tensor, int]:
        index, step, position = (int(v) for v in key)
        tensor, label = self.prefix(index)
        return self.pipeline.draw(tensor, draw_generator(self.seed, step, position)), label


def training_images(images: LabelledImages, transform: TrainTransform | None, encoder: Encoder, *,
                    seed: int) -> AugmentedImages:
    """``images`` drawn through ``transform``, or without one through ``encoder``'s own preprocessing un-augmented."""
    if transform is None:
        spec = own_preprocess(encoder)
        if spec is None:
            raise InputError(f"the recipe has no train_transform and model {encoder.name!r} does not describe its "
                             "preprocessing; give the recipe a train_transform")
        transform = transform_from_preprocess(spec)
    return AugmentedImages(images, TrainPipeline(transform), seed=seed)


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def _draws(indices: list[int], step: int) -> list[Draw]:
    return [Draw(int(index), step, position) for position, index in enumerate(indices)]


@dataclass(frozen=True)
class ShuffledBatches:
    """Epoch-wise reshuffled batches (an epoch's permutation is seeded by ``(seed, epoch)``); ragged tails wrap."""

    labels: np.ndarray
    batch_size: int
    seed: int = 0

    def batch(self, step: int) -> list[Draw]:
        """The draws of global batch ``step``."""
        n = len(self.labels)
        positions = range(step * self.batch_size, (step + 1) * self.batch_size)
        keys, cache = [], {}
        for position in positions:
            epoch = position // n
            if epoch not in cache:
                cache[epoch] = torch.randperm(n, generator=_step_generator(self.seed, -1 - epoch)).tolist()
            keys.append(cache[epoch][position % n])
        return _draws(keys, step)


@dataclass(frozen=True)
class BalancedBatches:
    """Class-balanced batches: each step draws ``batch_size / classes`` samples of every class with replacement.

    FoundPAD samples with weights 1 / class count and replacement (study.md §5.1); drawing equal counts per
    class makes every batch exactly balanced, which is the same expectation with less variance.
    """

    labels: np.ndarray
    batch_size: int
    seed: int = 0

    def __post_init__(self) -> None:
        classes = np.unique(self.labels)
        if len(classes) < 2 or self.batch_size % len(classes):
            raise InputError(f"balanced batches need >= 2 classes and a batch size divisible by their number; got "
                             f"classes {classes.tolist()} and batch size {self.batch_size}")

    def batch(self, step: int) -> list[Draw]:
        """The draws of global batch ``step`` (classes interleaved)."""
        generator = _step_generator(self.seed, step)
        members = [np.flatnonzero(self.labels == c) for c in np.unique(self.labels)]
        per = self.batch_size // len(members)
        draws = [m[torch.randint(len(m), (per,), generator=generator).numpy()] for m in members]
        return _draws(np.stack(draws, axis=1).reshape(-1).tolist(), step)
