"""Training data for fine-tuning: readers for the usual FR training formats and seeded, resumable batch plans.

Readers (all return :class:`~overspec.data.base.LabelledImages`):

- :func:`identity_folders`: ``<root>/<identity>/*.jpg`` (CASIA-WebFace layout; label = sorted folder index).
- :func:`read_record_file`: insightface MXNet ``train.rec`` / ``train.idx`` (MS1MV2, Glint360K) read without
  mxnet. Framing (dmlc-core ``recordio``): per part a little-endian uint32 magic ``0xced7230a``, a uint32
  ``lrecord`` = cflag << 29 | length, the payload, zero padding to 4 bytes; cflag 0 = whole record, 1/2/3 =
  first/middle/last part of a record that was split where the payload contained the magic (the reader puts the
  magic back between parts). Payload = IRHeader ``<IfQQ`` (flag uint32, label float32, id uint64, id2 uint64);
  when flag > 0 the label is ``flag`` float32 values that follow the header. Then the encoded image. Record 0
  (insightface convention) has label ``[a, b]``: images are keys ``1 … a−1`` and keys ``a … b−1`` are identity
  records whose label is that identity's image-key range. ``.idx`` lines are ``key<TAB>byte offset``.
  :func:`write_record_file` writes the same layout (used by the tests).
- :func:`read_wds_shards`: webdataset tar shards (``<key>.jpg|png|webp`` + ``<key>.cls``) read with ``tarfile``.
- MAD / PAD protocol lists: :func:`overspec.data.biometric.attack_list.read_protocol` (label 1 = bona fide);
  :func:`carve_dev` holds out whole subjects as a development split when a list has none.

Batch plans decide every step's sample indices and flips from ``(seed, step)`` alone, so a run resumed at step
``k`` draws exactly the batches an uninterrupted run would, and ranks of a distributed run take contiguous
slices of the same global batch.
"""

from __future__ import annotations

import logging
import struct
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from overspec.files import atomic_write_bytes
from overspec.data.base import DatasetLayoutError, LabelledImages
from overspec.data.images import open_rgb

__all__ = [
    "identity_folders", "read_record_file", "write_record_file", "read_wds_shards", "carve_dev",
    "TrainingImages", "ShuffledBatches", "BalancedBatches", "RECORD_MAGIC",
]

logger = logging.getLogger(__name__)

RECORD_MAGIC = 0xCED7230A
_IR_HEADER = struct.Struct("<IfQQ")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_LENGTH_MASK = (1 << 29) - 1


# ------------------------------------------------------------------------------------------- identity folders


def identity_folders(root: str | Path, name: str | None = None) -> LabelledImages:
    """Read ``<root>/<identity>/<image>`` folders; identity ``k`` of the sorted folder names gets label ``k``."""
    root = Path(root)
    expected = "<root>/<identity>/*.jpg|png (one folder per identity)"
    if not root.is_dir():
        raise DatasetLayoutError(name or root.name, root, expected)
    identities = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, identity in enumerate(identities):
        files = sorted(p for p in (root / identity).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        paths += [f"{identity}/{p.name}" for p in files]
        labels += [label] * len(files)
    if not paths:
        raise DatasetLayoutError(name or root.name, root, expected, "no identity folders with images")
    return LabelledImages(name or root.name, "train", np.asarray(labels), lambda i: open_rgb(root / paths[i]),
                          identity=("identity-folders", tuple(paths)), classnames=tuple(identities),
                          info={"format": "identity-folders", "root": str(root)})


# ------------------------------------------------------------------------------------------- MXNet record files


def _read_part(handle, path: Path, offset: int) -> tuple[int, bytes]:
    head = handle.read(8)
    if len(head) != 8:
        raise DatasetLayoutError(path.stem, path, "MXNet RecordIO", f"truncated record header at byte {offset}")
    magic, lrecord = struct.unpack("<II", head)
    if magic != RECORD_MAGIC:
        raise DatasetLayoutError(path.stem, path, "MXNet RecordIO (magic 0xced7230a)",
                                 f"bad magic {magic:#010x} at byte {offset}")
    length = lrecord & _LENGTH_MASK
    payload = handle.read((length + 3) & ~3)[:length]
    if len(payload) != length:
        raise DatasetLayoutError(path.stem, path, "MXNet RecordIO", f"truncated record at byte {offset}")
    return lrecord >> 29, payload


def _read_record(handle, path: Path, offset: int) -> bytes:
    """The payload of the (possibly multi-part) record starting at ``offset``."""
    handle.seek(offset)
    parts = []
    while True:
        cflag, payload = _read_part(handle, path, offset)
        parts.append(payload)
        if cflag in (0, 3):
            return struct.pack("<I", RECORD_MAGIC).join(parts)


def _unpack_ir(record: bytes) -> tuple[np.ndarray, bytes]:
    """(label values, image bytes) of an IRHeader record."""
    flag, label, _, _ = _IR_HEADER.unpack_from(record)
    body = record[_IR_HEADER.size:]
    if flag > 0:
        return np.frombuffer(body, dtype="<f4", count=flag).copy(), body[4 * flag:]
    return np.array([label], dtype=np.float32), body


def _pack_ir(label: Sequence[float] | float, key: int, image: bytes = b"") -> bytes:
    values = np.atleast_1d(np.asarray(label, dtype="<f4"))
    if values.size == 1:
        return _IR_HEADER.pack(0, float(values[0]), key, 0) + image
    return _IR_HEADER.pack(values.size, 0.0, key, 0) + values.tobytes() + image


def _encode_record(payload: bytes) -> bytes:
    """dmlc ``RecordIOWriter::WriteRecord``: split at 4-byte-aligned magic words, then pad to 4 bytes."""
    magic = struct.pack("<I", RECORD_MAGIC)
    out, start = [], 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i:i + 4] == magic:
            out.append(magic + struct.pack("<I", (1 if start == 0 else 2) << 29 | (i - start)) + payload[start:i])
            start = i + 4
    tail = payload[start:]
    out.append(magic + struct.pack("<I", (3 if start else 0) << 29 | len(tail)) + tail + b"\0" * (-len(tail) % 4))
    return b"".join(out)


def _read_index(rec: Path, idx: Path | None) -> dict[int, int]:
    if idx is not None and idx.is_file():
        offsets = {}
        for line_no, line in enumerate(idx.read_text().splitlines(), 1):
            fields = line.split("\t")
            if len(fields) != 2:
                raise DatasetLayoutError(idx.stem, idx, "lines 'key<TAB>offset'", f"malformed line {line_no}")
            offsets[int(fields[0])] = int(fields[1])
        return offsets
    logger.info("%s: no .idx file, scanning the records", rec)
    offsets, position, key = {}, 0, 0
    with rec.open("rb") as handle:
        size = rec.stat().st_size
        while position < size:
            offsets[key] = position
            handle.seek(position)
            flag = None
            while flag not in (0, 3):  # a record ends with a whole (0) or a last (3) part
                flag = _read_part(handle, rec, position)[0]
            position, key = handle.tell(), key + 1
    return offsets


def read_record_file(rec: str | Path, idx: str | Path | None = None, name: str | None = None) -> LabelledImages:
    """Read an insightface ``.rec`` (+ ``.idx``, default: same stem) as labelled images without mxnet."""
    rec = Path(rec)
    if not rec.is_file():
        raise DatasetLayoutError(name or rec.stem, rec, "an MXNet RecordIO file (train.rec) beside train.idx")
    offsets = _read_index(rec, Path(idx) if idx else rec.with_suffix(".idx"))
    with rec.open("rb") as handle:
        header0, _ = _unpack_ir(_read_record(handle, rec, offsets[0]))
        if header0.size >= 2:
            first_identity, end = int(header0[0]), int(header0[1])
            keys, labels = [], []
            for label, key in enumerate(range(first_identity, end)):
                start, stop = (int(v) for v in _unpack_ir(_read_record(handle, rec, offsets[key]))[0][:2])
                keys += range(start, stop)
                labels += [label] * (stop - start)
        else:
            keys = sorted(offsets)
            labels = [int(_unpack_ir(_read_record(handle, rec, offsets[k]))[0][0]) for k in keys]
    positions = [offsets[k] for k in keys]

    def read(i: int) -> Image.Image:
        with rec.open("rb") as handle:
            return open_rgb(_unpack_ir(_read_record(handle, rec, positions[i]))[1])

    return LabelledImages(name or rec.stem, "train", np.asarray(labels), read,
                          identity=("mxnet-rec", rec.stat().st_size, tuple(keys)),
                          info={"format": "mxnet-rec", "path": str(rec)})


def write_record_file(prefix: str | Path, samples: Sequence[tuple[bytes, int]]) -> tuple[Path, Path]:
    """Write ``(encoded image, identity)`` samples as ``prefix.rec`` / ``prefix.idx`` in the insightface layout.

    Identities must be 0 … C−1; samples are stored grouped by identity (stable order), followed by one identity
    record per identity and record 0 naming that range.
    """
    ordered = sorted(samples, key=lambda s: s[1])
    n = len(ordered)
    identities = sorted({label for _, label in ordered})
    if identities != list(range(len(identities))):
        raise ValueError("identities must be numbered 0 … C-1")
    payloads = {0: _pack_ir([n + 1, n + 1 + len(identities)], 0)}
    ranges: dict[int, list[int]] = {}
    for key, (image, label) in enumerate(ordered, start=1):
        payloads[key] = _pack_ir(float(label), key, image)
        ranges.setdefault(label, [key, key])[1] = key + 1
    for label in identities:
        payloads[n + 1 + label] = _pack_ir(ranges[label], n + 1 + label)
    prefix = Path(prefix)
    rec, idx = prefix.with_suffix(".rec"), prefix.with_suffix(".idx")
    blob, lines = bytearray(), []
    for key in sorted(payloads):
        lines.append(f"{key}\t{len(blob)}\n")
        blob += _encode_record(payloads[key])
    atomic_write_bytes(rec, bytes(blob))
    atomic_write_bytes(idx, "".join(lines).encode())
    return rec, idx


# ------------------------------------------------------------------------------------------- webdataset shards


@dataclass(frozen=True)
class _TarMember:
    shard: Path
    offset: int
    size: int


def _index_shard(shard: Path) -> tuple[dict[str, _TarMember], dict[str, int]]:
    images, classes = {}, {}
    with tarfile.open(shard) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.rpartition(".")
            if "." + ext.lower() in _IMAGE_SUFFIXES:
                images[key] = _TarMember(shard, member.offset_data, member.size)
            elif ext == "cls":
                text = tar.extractfile(member).read().decode().strip()
                try:
                    classes[key] = int(text)
                except ValueError:
                    raise DatasetLayoutError(shard.stem, shard, "<key>.cls holding an integer",
                                             f"{member.name} holds {text!r}") from None
    return images, classes


def read_wds_shards(path: str | Path, name: str | None = None) -> LabelledImages:
    """Read webdataset shards (one ``.tar`` or a folder of ``*.tar``) of ``<key>.jpg`` + ``<key>.cls`` samples."""
    path = Path(path)
    shards = sorted(path.glob("*.tar")) if path.is_dir() else [path]
    expected = "tar shards of <key>.jpg|png|webp + <key>.cls"
    if not shards or not all(s.is_file() for s in shards):
        raise DatasetLayoutError(name or path.stem, path, expected)
    members, labels = [], []
    for shard in shards:
        images, classes = _index_shard(shard)
        unlabelled = sorted(set(images) - set(classes))
        if unlabelled:
            raise DatasetLayoutError(name or path.stem, shard, expected, f"no .cls for {unlabelled[:3]}")
        for key in sorted(images):
            members.append(images[key])
            labels.append(classes[key])
    if not members:
        raise DatasetLayoutError(name or path.stem, path, expected, "no samples in the shards")

    def read(i: int) -> Image.Image:
        member = members[i]
        with member.shard.open("rb") as handle:
            handle.seek(member.offset)
            return open_rgb(handle.read(member.size))

    identity = ("wds", tuple((s.name, s.stat().st_size) for s in shards))
    return LabelledImages(name or path.stem, "train", np.asarray(labels), read, identity=identity,
                          info={"format": "wds", "shards": len(shards)})


# ------------------------------------------------------------------------------------------- splits and batches


def carve_dev(split: LabelledImages, fraction: float, seed: int) -> tuple[LabelledImages, LabelledImages]:
    """Split off about ``fraction`` of the subjects (``info['subject_id']``, else samples) as a ``dev`` split."""
    groups = np.asarray(split.info.get("subject_id", np.arange(len(split))), dtype=object).astype(str)
    names = np.unique(groups)
    chosen = set(np.random.default_rng(seed).permutation(names)[: max(1, round(fraction * len(names)))])
    dev = np.array([g in chosen for g in groups])
    if dev.all() or not dev.any():
        raise ValueError(f"cannot carve a dev split from {split.dataset}/{split.split}: too few subjects")
    return split.subset(np.flatnonzero(~dev), "train"), split.subset(np.flatnonzero(dev), "dev")


class TrainingImages(torch.utils.data.Dataset):
    """Items keyed by ``(index, flip)``: the image (flipped when asked) through ``preprocess``, and its label."""

    def __init__(self, images: LabelledImages, preprocess: Callable[[Image.Image], torch.Tensor]) -> None:
        self.images = images.with_transform(None)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, bool]) -> tuple[torch.Tensor, int]:
        index, flip = key
        image, label = self.images[int(index)]
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self.preprocess(image), label


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
            raise ValueError(f"balanced batches need >= 2 classes and a batch size divisible by their number; got "
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
