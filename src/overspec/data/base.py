"""The contract every dataset loader fulfils: a split of labelled images with its class names and prompts.

Loaders (``overspec.data.formats``) turn a folder on disk into :class:`LabelledImages`; everything downstream
(feature store, protocols) sees only this type, never a format.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.utils.data
from PIL import Image

from overspec.data.images import check_shape, to_rgb
from overspec.errors import InputError

__all__ = ["LabelledImages", "CheckedImages", "DatasetLayoutError", "BadImageError", "content_fingerprint",
           "DECODE_ERRORS", "leaves_folder"]

#: What a decoder raises for a corrupt, truncated, empty or missing image file (PIL raises OSError subclasses
#: for most; some plugins raise SyntaxError, ValueError, EOFError or struct.error on damaged headers).
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError,
)

#: Side of the black stand-in image passed through the transform in place of an undecodable one.
_PLACEHOLDER_SIZE = 64


class DatasetLayoutError(FileNotFoundError):
    """A dataset root is missing or malformed; the message names the dataset, the path and the expected layout."""

    def __init__(self, dataset: str, path: Path | str, expected: str, problem: str = "not found") -> None:
        self.dataset, self.path, self.expected, self.problem = dataset, Path(path), expected, problem
        super().__init__(f"dataset {dataset!r}: {problem}: {path} (expected layout there: {expected})")

    def __str__(self) -> str:
        return self.args[0]


class BadImageError(InputError):
    """An image of a split could not be decoded; the one-line message names the dataset, split, file and why."""

    def __init__(self, dataset: str, split: str, location: str, problem: str) -> None:
        self.dataset, self.split, self.location, self.problem = dataset, split, location, problem
        super().__init__(f"dataset {dataset!r} split {split!r}: unreadable image {location}: {problem} "
                         "(fix the file, or leave bad images out with on_bad_image: skip / --on-bad-image skip)")


def _one_line(exc: BaseException) -> str:
    """The decoder's complaint as one line: exception type and message with whitespace collapsed."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def leaves_folder(relative: str) -> bool:
    """Whether a path read from a list file is absolute or climbs out of the folder it is relative to."""
    return Path(relative).is_absolute() or os.path.normpath(relative).split(os.sep)[0] == ".."


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
    ``content``, when set, returns a digest of the bytes behind the split (its image files), so that images
    rewritten under the same names change the fingerprint too.
    ``transform``, when set, is applied to each image (e.g. a model's preprocessing). ``locate``, when set,
    says where item ``i`` lives (a file path, or a file and member) so that errors can name it.
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
    locate: Callable[[int], str] | None = None
    content: Callable[[], str] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[object, int]:
        image = self.decoded(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def decoded(self, index: int) -> Image.Image:
        """Return image ``index`` fully decoded as RGB (so a damaged file fails here, not in the transform)."""
        image = self.read(index)
        check_shape(image.size)
        image.load()
        return to_rgb(image)

    def decode_problem(self, index: int) -> str:
        """Return why image ``index`` cannot be decoded, or ``""`` when it decodes."""
        try:
            self.decoded(index)
        except DECODE_ERRORS as exc:
            return _one_line(exc)
        return ""

    def location(self, index: int) -> str:
        """Where item ``index`` lives: ``locate(index)`` or, for in-memory sources, ``<dataset>/<split> item <i>``."""
        if self.locate is not None:
            return self.locate(index)
        return f"{self.dataset}/{self.split} item {index}"

    def bad_image_error(self, index: int, problem: str) -> BadImageError:
        """Return the error naming this split, the location of item ``index`` and the decoder's complaint."""
        return BadImageError(self.dataset, self.split, self.location(index), problem)

    def checked(self) -> CheckedImages:
        """Return a view of this split whose items also report decoding problems instead of raising them."""
        return CheckedImages(self)

    @property
    def fingerprint(self) -> str:
        """Content key of this split: dataset, split, sample identity, labels and the bytes of its files."""
        parts = (self.dataset, self.split, self.identity, self.labels)
        return content_fingerprint(*parts, self.content()) if self.content else content_fingerprint(*parts)

    @property
    def num_classes(self) -> int:
        """Number of classes (from the class names when known, else from the labels)."""
        return len(self.classnames) if self.classnames else int(self.labels.max()) + 1

    def with_transform(self, transform: Callable[[Image.Image], object] | None) -> LabelledImages:
        """Return a copy of this split whose items pass through ``transform``."""
        return LabelledImages(
            self.dataset, self.split, self.labels, self.read, self.identity,
            self.classnames, self.templates, transform, dict(self.info), self.locate, self.content,
        )

    def subset(self, indices: Sequence[int] | np.ndarray, split: str | None = None) -> LabelledImages:
        """Return the samples at ``indices`` as a new split (used for carved, sharded and k-shot splits).

        Per-sample arrays in ``info`` (NumPy arrays with one row per sample) are sliced alongside the labels, and
        locations keep naming the parent's items (``subset([5]).location(0) == parent.location(5)``).
        """
        idx = np.asarray(indices, dtype=np.int64)
        parent, parent_location = self.read, self.location
        n = len(self)
        info = {k: v[idx] if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n else v
                for k, v in self.info.items()}
        return LabelledImages(
            self.dataset, split or self.split, self.labels[idx], lambda i: parent(int(idx[i])),
            (self.identity, idx.tobytes()), self.classnames, self.templates, self.transform, info,
            lambda i: parent_location(int(idx[i])), self.content,
        )


class CheckedImages(torch.utils.data.Dataset):
    """Items ``(image, label, problem)`` of a split: a damaged image becomes a black stand-in and ``problem`` says
    why (``""`` when it decoded).

    Decoding errors are caught here, inside the item (and so inside a DataLoader worker), so that the caller
    decides in the main process whether to stop or to skip, instead of receiving a worker's wrapped traceback.
    """

    def __init__(self, split: LabelledImages) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[object, int, str]:
        split = self.split
        try:
            image, problem = split.decoded(index), ""
        except DECODE_ERRORS as exc:
            image = Image.new("RGB", (_PLACEHOLDER_SIZE, _PLACEHOLDER_SIZE))
            problem = _one_line(exc)
        if split.transform is not None:
            image = split.transform(image)
        return image, int(split.labels[index]), problem
