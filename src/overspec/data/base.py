"""The contract every dataset loader fulfils: a split of labelled images with its class names and prompts.

Loaders (``overspec.data.formats``) turn a folder on disk into :class:`LabelledImages`; everything downstream
(feature store, protocols) sees only this type, never a format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.utils.data
from PIL import Image

__all__ = ["LabelledImages", "DatasetLayoutError", "content_fingerprint"]


class DatasetLayoutError(FileNotFoundError):
    """A dataset root is missing or malformed; the message names the dataset, the path and the expected layout."""

    def __init__(self, dataset: str, path: Path | str, expected: str, problem: str = "not found") -> None:
        self.dataset, self.path, self.expected, self.problem = dataset, Path(path), expected, problem
        super().__init__(f"dataset {dataset!r}: {problem}: {path}\n  expected layout there: {expected}")

    def __str__(self) -> str:
        return self.args[0]


def content_fingerprint(*parts: object) -> str:
    """Return a short sha256 hex digest of the ``repr`` of ``parts`` (stable across runs and machines)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\x1f")
    return h.hexdigest()[:16]


@dataclass
class LabelledImages(torch.utils.data.Dataset):
    """One split of a labelled image dataset; item ``i`` is ``(RGB PIL image, int label)``.

    ``read`` loads image ``i``; ``identity`` is any stable description of the sample list (relative paths and
    labels, or file checksums) from which :attr:`fingerprint` is derived, so caches notice a changed split.
    ``transform``, when set, is applied to each image (e.g. a model's preprocessing).
    """

    dataset: str
    split: str
    labels: np.ndarray
    read: Callable[[int], Image.Image]
    identity: object
    classnames: Sequence[str] = ()
    templates: Sequence[str] = ()
    transform: Callable[[Image.Image], object] | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[object, int]:
        image = self.read(index)
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    @property
    def fingerprint(self) -> str:
        """Content key of this split: dataset, split, sample identity and labels."""
        return content_fingerprint(self.dataset, self.split, self.identity, self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes (from the class names when known, else from the labels)."""
        return len(self.classnames) if self.classnames else int(self.labels.max()) + 1

    def with_transform(self, transform: Callable[[Image.Image], object] | None) -> LabelledImages:
        """Return a copy of this split whose items pass through ``transform``."""
        return LabelledImages(
            self.dataset, self.split, self.labels, self.read, self.identity,
            self.classnames, self.templates, transform, dict(self.info),
        )

    def subset(self, indices: Sequence[int] | np.ndarray, split: str | None = None) -> LabelledImages:
        """Return the samples at ``indices`` as a new split (used for carved, sharded and k-shot splits).

        Per-sample arrays in ``info`` (NumPy arrays with one row per sample) are sliced alongside the labels.
        """
        idx = np.asarray(indices, dtype=np.int64)
        parent = self.read
        n = len(self)
        info = {k: v[idx] if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n else v
                for k, v in self.info.items()}
        return LabelledImages(
            self.dataset, split or self.split, self.labels[idx], lambda i: parent(int(idx[i])),
            (self.identity, idx.tobytes()), self.classnames, self.templates, self.transform, info,
        )
