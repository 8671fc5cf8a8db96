"""Face-verification pair sets: insightface ``.bin`` files and a ``pairs.csv`` + image folder layout.

An insightface ``.bin`` is a pickle of ``(bins, issame_list)``: ``bins`` holds 2 × P encoded JPEG/PNG buffers
(images ``2k`` and ``2k + 1`` form pair ``k``), stored as uint8 numpy arrays (``cv2.imencode`` output) or, in files
written by Python 2, as ``str``; ``issame_list`` holds P booleans. Reference: insightface
``recognition/arcface_torch/eval/verification.py`` and ``arcface_mxnet/common/build_eval_pack.py``;
biometric-protocols.md §2.1. Files are read through the allow-listed unpickler of :mod:`overspec.safeload`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from overspec.files import atomic_write_bytes
from overspec.data.base import DatasetLayoutError, LabelledImages, leaves_folder
from overspec.data.images import open_rgb
from overspec.safeload import NUMPY_ARRAY_GLOBALS, UnreadableFileError, restricted_loads
from overspec.errors import InputError

__all__ = ["BinPairs", "BIN_GLOBALS", "read_bin", "write_bin", "read_pairs_csv"]

logger = logging.getLogger(__name__)

#: Everything a ``.bin`` pickle may reference: numpy array reconstruction and nothing else (tuples, lists,
#: bools and bytes need no globals).
BIN_GLOBALS: frozenset[tuple[str, str]] = NUMPY_ARRAY_GLOBALS

_PAIRS_CSV_COLUMNS = ("path1", "path2", "issame")
_TRUE_WORDS = {"1", "true", "yes", "same"}
_FALSE_WORDS = {"0", "false", "no", "different"}


@dataclass(frozen=True)
class BinPairs:
    """A verification pair set: ``2 × num_pairs`` images, image ``2k`` and ``2k + 1`` forming pair ``k``.

    ``read(i)`` returns image ``i`` as an RGB PIL image, decoded as stored (no resizing); ``identity`` is a stable
    description of the content from which dataset fingerprints are derived; ``locate(i)`` says where image ``i``
    is stored (for error messages).
    """

    name: str
    source: Path
    issame: np.ndarray
    read: Callable[[int], Image.Image] = field(repr=False)
    identity: object = field(repr=False)
    locate: Callable[[int], str] | None = field(default=None, repr=False)

    @property
    def num_pairs(self) -> int:
        """Number of pairs (half the number of images)."""
        return int(self.issame.shape[0])

    @property
    def num_images(self) -> int:
        """Number of images (twice the number of pairs)."""
        return 2 * self.num_pairs

    def images_as_dataset(self, name: str | None = None) -> LabelledImages:
        """Return all images as a ``LabelledImages`` split "pairs" whose label is the pair index (0, 0, 1, 1, ...)."""
        labels = np.repeat(np.arange(self.num_pairs, dtype=np.int64), 2)
        return LabelledImages(
            dataset=name or self.name, split="pairs", labels=labels, read=self.read, identity=self.identity,
            info={"source": str(self.source), "issame": self.issame.copy()}, locate=self.locate,
        )


def read_bin(path: str | Path, name: str | None = None) -> BinPairs:
    """Read an insightface ``.bin`` pair file safely and validate it; errors name the file.

    Python-2 files are handled by unpickling with ``latin1`` and turning ``str`` buffers back into bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(name or path.stem, path, "an insightface .bin pair file")
    raw = path.read_bytes()
    payload = restricted_loads(raw, BIN_GLOBALS, source=str(path), encoding="latin1")
    buffers, issame = _validated_payload(payload, path)
    logger.info("read %d pairs from %s", issame.shape[0], path)
    return BinPairs(
        name=name or path.stem, source=path, issame=issame,
        read=lambda i: _decode_image(buffers[i], path, i), identity=("bin", hashlib.sha256(raw).hexdigest()),
        locate=lambda i: f"{path} image {i}",
    )


def _validated_payload(payload: object, path: Path) -> tuple[list[bytes], np.ndarray]:
    """Check the ``(bins, issame_list)`` structure and return the image buffers as bytes and issame as bools."""
    if not (isinstance(payload, (tuple, list)) and len(payload) == 2):
        raise UnreadableFileError(f"{path}: expected a pickled (bins, issame_list) pair, got {type(payload).__name__}")
    bins, issame_list = payload
    if not isinstance(bins, (list, tuple)) or not isinstance(issame_list, (list, tuple, np.ndarray)):
        raise UnreadableFileError(f"{path}: bins and issame_list must be sequences")
    if not bins:
        raise UnreadableFileError(f"{path}: the file holds no pairs")
    if len(bins) % 2:
        raise UnreadableFileError(f"{path}: odd number of images ({len(bins)}); pairs need an even number")
    if len(issame_list) != len(bins) // 2:
        raise UnreadableFileError(
            f"{path}: {len(bins)} images make {len(bins) // 2} pairs but issame_list has {len(issame_list)} entries"
        )
    buffers = [_buffer_bytes(b, path, i) for i, b in enumerate(bins)]
    return buffers, _issame_array(issame_list, path)


def _buffer_bytes(buffer: object, path: Path, index: int) -> bytes:
    """Return one encoded image buffer as bytes (numpy uint8 array, bytes, or a Python-2 ``str`` read as latin1)."""
    if isinstance(buffer, (bytes, bytearray)):
        return bytes(buffer)
    if isinstance(buffer, str):
        return buffer.encode("latin1")
    if isinstance(buffer, np.ndarray) and buffer.dtype == np.uint8:
        return buffer.tobytes()
    raise UnreadableFileError(f"{path}: image {index} is a {type(buffer).__name__}, expected encoded image bytes")


def _issame_array(issame_list: Sequence[object], path: Path) -> np.ndarray:
    """Return the pair labels as a bool array, refusing anything but booleans and 0/1."""
    values = np.asarray(issame_list)
    if values.dtype != np.bool_ and not (values.dtype.kind in "iu" and np.isin(values, (0, 1)).all()):
        raise UnreadableFileError(f"{path}: issame_list must hold booleans, got dtype {values.dtype}")
    return values.astype(bool)


def _decode_image(buffer: bytes, path: Path, index: int) -> Image.Image:
    """Decode one stored JPEG/PNG buffer to an RGB image."""
    try:
        return open_rgb(buffer)
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableFileError(f"{path}: image {index} is not a decodable image ({exc})") from exc


def write_bin(
    path: str | Path,
    images: Sequence[np.ndarray],
    issame: Sequence[bool],
    *,
    fmt: str = "jpg",
    quality: int = 95,
    protocol: int = 4,
) -> Path:
    """Write ``images`` (H×W×3 uint8 RGB, pair ``k`` = images ``2k``, ``2k + 1``) as an insightface ``.bin``.

    Buffers are stored as uint8 arrays of shape (N, 1) like ``cv2.imencode`` output; the write is atomic.
    """
    path = Path(path)
    if len(images) != 2 * len(issame):
        raise InputError(f"{path}: {len(images)} images cannot form {len(issame)} pairs (need {2 * len(issame)})")
    bins = [np.frombuffer(_encode_image(image, fmt, quality), dtype=np.uint8).reshape(-1, 1) for image in images]
    payload = pickle.dumps((bins, [bool(s) for s in issame]), protocol=protocol)
    atomic_write_bytes(path, payload)
    return path


def _encode_image(image: np.ndarray, fmt: str, quality: int) -> bytes:
    """Encode an H×W×3 uint8 RGB array as JPEG or PNG bytes."""
    formats = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG"}
    if fmt not in formats:
        raise InputError(f"unknown image format {fmt!r}; choose one of {sorted(formats)}")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InputError(f"images must be H×W×3 uint8 RGB arrays, got shape {array.shape} dtype {array.dtype}")
    out = io.BytesIO()
    options = {"quality": quality} if formats[fmt] == "JPEG" else {}
    Image.fromarray(array, "RGB").save(out, format=formats[fmt], **options)
    return out.getvalue()


def read_pairs_csv(csv_path: str | Path, image_root: str | Path | None = None, name: str | None = None) -> BinPairs:
    """Read a user's pair list ``path1,path2,issame`` (header row required) with images under ``image_root``.

    Relative image paths resolve against ``image_root`` (default: the CSV's folder); ``issame`` accepts
    1/0, true/false, yes/no. Every image must exist; errors name the CSV line and the image path.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetLayoutError(name or csv_path.stem, csv_path, "a CSV with header path1,path2,issame")
    root = Path(image_root) if image_root is not None else csv_path.parent
    paths, issame = _parse_pairs_csv(csv_path, root)
    identity = ("pairs_csv", tuple(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths),
                tuple(p.stat().st_size for p in paths), issame.tobytes())
    return BinPairs(name=name or csv_path.stem, source=csv_path, issame=issame,
                    read=lambda i: _open_rgb(paths[i]), identity=identity, locate=lambda i: str(paths[i]))


def _parse_pairs_csv(csv_path: Path, root: Path) -> tuple[list[Path], np.ndarray]:
    """Return the image paths (two per pair, in order) and pair labels of a pairs CSV (UTF-8, BOM allowed)."""
    try:
        return _parse_pairs_rows(csv_path, root)
    except UnicodeDecodeError as exc:
        raise DatasetLayoutError(csv_path.stem, csv_path, "a UTF-8 CSV with header path1,path2,issame",
                                 f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def _parse_pairs_rows(csv_path: Path, root: Path) -> tuple[list[Path], np.ndarray]:
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _PAIRS_CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise DatasetLayoutError(csv_path.stem, csv_path, "header path1,path2,issame", f"missing columns {missing}")
        paths: list[Path] = []
        labels: list[bool] = []
        for line, row in enumerate(reader, start=2):
            labels.append(_parse_issame(row["issame"], csv_path, line))
            for column in ("path1", "path2"):
                if leaves_folder(row[column].strip()):
                    raise DatasetLayoutError(csv_path.stem, csv_path, f"paths relative to {root}",
                                             f"line {line}, column {column!r}: {row[column].strip()!r} leaves {root}")
                image = root / row[column].strip()
                if not image.is_file():
                    raise DatasetLayoutError(csv_path.stem, image, "an image file", f"{csv_path} line {line}: missing")
                paths.append(image)
    if not labels:
        raise DatasetLayoutError(csv_path.stem, csv_path, "at least one pair row", "no pairs")
    return paths, np.asarray(labels, dtype=bool)


def _parse_issame(text: str | None, csv_path: Path, line: int) -> bool:
    """Parse one ``issame`` cell."""
    word = (text or "").strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise InputError(f"{csv_path} line {line}: issame must be 1/0/true/false/yes/no, got {text!r}")


def _open_rgb(path: Path) -> Image.Image:
    """Open an image file as RGB."""
    return open_rgb(path)
