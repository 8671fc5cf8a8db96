"""insightface MXNet RecordIO files (``train.rec`` + ``train.idx``: MS1MV2, Glint360K), read without mxnet.

Framing (dmlc-core ``recordio``): per part a little-endian uint32 magic ``0xced7230a``, a uint32 ``lrecord`` =
cflag << 29 | length, the payload, zero padding to 4 bytes; cflag 0 = whole record, 1/2/3 = first/middle/last part
of a record that was split where the payload contained the magic (the reader puts the magic back between parts).
Payload = IRHeader ``<IfQQ`` (flag uint32, label float32, id uint64, id2 uint64); when flag > 0 the label is
``flag`` float32 values that follow the header. Then the encoded image. Record 0 (insightface convention) has label
``[a, b]``: images are keys ``1 … a−1`` and keys ``a … b−1`` are identity records whose label is that identity's
image-key range. ``.idx`` lines are ``key<TAB>byte offset``. :func:`write_record_file` writes the same layout (used
by the tests).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from overspec.data.base import DatasetLayoutError, LabelledImages
from overspec.data.images import open_rgb
from overspec.files import atomic_write_bytes
from overspec.errors import InputError

__all__ = ["read_record_file", "write_record_file", "RECORD_MAGIC"]

logger = logging.getLogger(__name__)

RECORD_MAGIC = 0xCED7230A
_IR_HEADER = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1


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
        raise InputError("identities must be numbered 0 … C-1")
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
