"""Training data for fine-tuning: subject-held-out dev splits and seeded, resumable batch plans.

Training sets are read by the format readers of :mod:`overspec.data.formats`, the ones the catalog uses (one reader
per on-disk format): identity folders with :func:`~overspec.data.formats.imagefolder.class_folders`, webdataset
shards with :func:`~overspec.data.formats.wds.read_shards`, insightface ``.rec`` files with
:func:`~overspec.data.formats.recordio.read_record_file`; MAD / PAD protocol lists with
:func:`overspec.data.biometric.attack_list.read_protocol` (label 1 = bona fide). :func:`carve_dev` holds out whole
subjects as a development split when a list has none.

Batch plans decide every step's sample indices and flips from ``(seed, step)`` alone, so a run resumed at step
``k`` draws exactly the batches an uninterrupted run would, and ranks of a distributed run take contiguous
slices of the same global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from overspec.data.base import LabelledImages
from overspec.errors import InputError
from overspec.features.loading import split_preprocess

__all__ = ["carve_dev", "TrainingImages", "ShuffledBatches", "BalancedBatches"]


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
    """Items keyed by ``(index, flip)``: the image (flipped when asked) through ``preprocess``, and its label.

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


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


@dataclass(frozen=True)
class ShuffledBatches:
    """Epoch-wise reshuffled batches (an epoch's permutation is seeded by ``(seed, epoch)``); ragged tails wrap."""

    labels: np.ndarray
    batch_size: int
    seed: int = 0
    flip: bool = True

    def batch(self, step: int) -> list[tuple[int, bool]]:
        """The ``(index, flip)`` keys of global batch ``step``."""
        n = len(self.labels)
        positions = range(step * self.batch_size, (step + 1) * self.batch_size)
        keys, cache = [], {}
        for position in positions:
            epoch = position // n
            if epoch not in cache:
                cache[epoch] = torch.randperm(n, generator=_step_generator(self.seed, -1 - epoch)).tolist()
            keys.append(cache[epoch][position % n])
        return list(zip(keys, _flips(self.seed, step, len(keys), self.flip), strict=True))


@dataclass(frozen=True)
class BalancedBatches:
    """Class-balanced batches: each step draws ``batch_size / classes`` samples of every class with replacement.

    FoundPAD samples with weights 1 / class count and replacement (study.md §5.1); drawing equal counts per
    class makes every batch exactly balanced, which is the same expectation with less variance.
    """

    labels: np.ndarray
    batch_size: int
    seed: int = 0
    flip: bool = True

    def __post_init__(self) -> None:
        classes = np.unique(self.labels)
        if len(classes) < 2 or self.batch_size % len(classes):
            raise InputError(f"balanced batches need >= 2 classes and a batch size divisible by their number; got "
                             f"classes {classes.tolist()} and batch size {self.batch_size}")

    def batch(self, step: int) -> list[tuple[int, bool]]:
        """The ``(index, flip)`` keys of global batch ``step`` (classes interleaved)."""
        generator = _step_generator(self.seed, step)
        members = [np.flatnonzero(self.labels == c) for c in np.unique(self.labels)]
        per = self.batch_size // len(members)
        draws = [m[torch.randint(len(m), (per,), generator=generator).numpy()] for m in members]
        keys = np.stack(draws, axis=1).reshape(-1).tolist()
        return list(zip(keys, _flips(self.seed, step, len(keys), self.flip), strict=True))


def _flips(seed: int, step: int, n: int, enabled: bool) -> list[bool]:
    if not enabled:
        return [False] * n
    return (torch.rand(n, generator=_step_generator(seed + 7919, step)) < 0.5).tolist()
