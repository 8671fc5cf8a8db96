"""IJB-B / IJB-C in the insightface meta-folder layout: read, validate, align, and write synthetic copies.

Layout under a root such as ``IJB_release/IJBC`` (IJB-B identical with prefix ``ijbb``)::

    meta/ijbc_face_tid_mid.txt            image_name template_id media_id          (one line per face)
    meta/ijbc_name_5pts_score.txt         image_name x1 y1 ... x5 y5 faceness_score
    meta/ijbc_template_pair_label.txt     template_id_1 template_id_2 label(1 genuine / 0 impostor)
    meta/ijbc_1N_gallery_G1.csv, ..._G2.csv, ijbc_1N_probe_mixed.csv   (optional; header row, then
                                          template_id,subject_id,... one row per image; IJB-B: _S1, _S2)
    loose_crop/<image_name>               loosely cropped images the landmarks refer to

References: insightface ``recognition/arcface_torch/eval_ijbc.py`` and ``recognition/_evaluation_/ijb/``;
biometric-protocols.md §4.1.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from overspec.files import atomic_write_bytes
from overspec.data.base import DatasetLayoutError, LabelledImages, content_fingerprint, leaves_folder
from overspec.data.biometric.align import align_face
from overspec.data.formats._lines import count_lines, line_blocks, text_line_blocks
from overspec.data.images import open_rgb

__all__ = ["IJBFace", "IJBMeta", "TemplateSubjects", "read_ijb_meta", "write_ijb_meta", "detect_prefix"]

logger = logging.getLogger(__name__)

_LAYOUT = ("meta/{p}_face_tid_mid.txt, meta/{p}_name_5pts_score.txt, meta/{p}_template_pair_label.txt, "
           "loose_crop/<images>")


@dataclass(frozen=True)
class IJBFace:
    """One face image record for :func:`write_ijb_meta`.

    ``image`` is an H×W×3 uint8 RGB loose crop, ``landmarks`` its five points (5×2, x, y: left eye, right eye,
    nose, left and right mouth corners), ``score`` the detector faceness score; ``name`` defaults to
    ``"<row + 1>.jpg"``.
    """

    image: np.ndarray
    landmarks: np.ndarray
    score: float
    template_id: int
    media_id: int
    subject_id: int
    name: str | None = None


@dataclass(frozen=True)
class TemplateSubjects:
    """A 1:N template list (gallery or probe set): unique template ids and the subject of each."""

    template_ids: np.ndarray
    subject_ids: np.ndarray


@dataclass(frozen=True)
class IJBMeta:
    """The parsed meta folder: per-face arrays (row = face), the 1:1 template pairs and the 1:N lists."""

    root: Path
    prefix: str
    image_names: tuple[str, ...] = field(repr=False)
    template_ids: np.ndarray = field(repr=False)
    media_ids: np.ndarray = field(repr=False)
    landmarks: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    pair_t1: np.ndarray = field(repr=False)
    pair_t2: np.ndarray = field(repr=False)
    pair_labels: np.ndarray = field(repr=False)
    galleries: dict[str, TemplateSubjects] = field(default_factory=dict, repr=False)
    probes: dict[str, TemplateSubjects] = field(default_factory=dict, repr=False)

    @property
    def num_faces(self) -> int:
        """Number of face images (rows of the face list)."""
        return len(self.image_names)

    def faces_dataset(self, name: str | None = None, size: int = 112) -> LabelledImages:
        """Return the faces aligned to the ArcFace template as ``LabelledImages`` (label = row index).

        Detector scores, template ids and media ids are the arrays on this object (same row order); they are also
        copied into ``info``.
        """
        crops = self.root / "loose_crop"
        names, landmarks = self.image_names, self.landmarks

        def read(index: int) -> Image.Image:
            return align_face(open_rgb(crops / names[index]), landmarks[index], size)

        identity = content_fingerprint(self.prefix, "\n".join(names), landmarks, size)
        return LabelledImages(
            dataset=name or self.prefix.upper(), split="faces", labels=np.arange(self.num_faces), read=read,
            identity=identity,
            info={"scores": self.scores, "template_ids": self.template_ids, "media_ids": self.media_ids},
            locate=lambda i: str(crops / names[i]),
        )


def detect_prefix(root: str | Path) -> str:
    """Return the file prefix (``ijbb`` or ``ijbc``) of the meta folder under ``root``."""
    meta = Path(root) / "meta"
    found = sorted(p.name[: -len("_face_tid_mid.txt")] for p in meta.glob("*_face_tid_mid.txt"))
    if len(found) != 1:
        problem = "no *_face_tid_mid.txt" if not found else f"several prefixes {found}; pass prefix="
        raise DatasetLayoutError("IJB", meta, _LAYOUT.format(p="ijbc"), problem)
    return found[0]


def read_ijb_meta(root: str | Path, prefix: str | None = None) -> IJBMeta:
    """Read and validate an insightface IJB meta folder; every template a pair or 1:N list names must exist."""
    root = Path(root)
    prefix = prefix or detect_prefix(root)
    meta = root / "meta"
    names, template_ids, media_ids = _read_face_list(meta / f"{prefix}_face_tid_mid.txt", prefix)
    landmarks, scores = _read_landmarks(meta / f"{prefix}_name_5pts_score.txt", names, prefix)
    pair_path = meta / f"{prefix}_template_pair_label.txt"
    t1, t2, labels = _read_pairs(pair_path, prefix)
    known = np.unique(template_ids)
    _check_known_templates(t1, known, pair_path, prefix)
    _check_known_templates(t2, known, pair_path, prefix)
    galleries = _read_1n_lists(meta, f"{prefix}_1N_gallery_", known, prefix)
    probes = _read_1n_lists(meta, f"{prefix}_1N_probe_", known, prefix)
    logger.info("%s: %d faces, %d templates, %d pairs", root, len(names), known.size, t1.size)
    return IJBMeta(root, prefix, names, template_ids, media_ids, landmarks, scores, t1, t2, labels, galleries, probes)


def _required(path: Path, prefix: str) -> Path:
    """``path`` when the required meta file exists, else the layout error naming it."""
    if not path.is_file():
        raise DatasetLayoutError(prefix.upper(), path, _LAYOUT.format(p=prefix))
    return path


def _read_face_list(path: Path, prefix: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Parse ``image_name template_id media_id`` lines a block at a time (the ids by numpy's C reader, no Python int
    per field; only the names are kept as strings)."""
    names: list[str] = []
    ids: list[np.ndarray] = []
    for lines in text_line_blocks(_required(path, prefix)):
        first = len(names)
        for number, line in enumerate(lines, start=first + 1):
            parts = line.split()
            if len(parts) != 3:
                raise DatasetLayoutError(prefix.upper(), path, "lines 'image_name template_id media_id'",
                                         f"line {number} has {len(parts)} fields")
            if leaves_folder(parts[0]):
                raise DatasetLayoutError(prefix.upper(), path, "image names inside loose_crop/",
                                         f"line {number}: image name {parts[0]!r} leaves the image folder")
            names.append(parts[0])
        ids.append(_block_ids(lines, first, path, prefix))
    if not names:
        raise DatasetLayoutError(prefix.upper(), path, "one line per face image", "empty file")
    table = np.concatenate(ids)
    return tuple(names), table[:, 0].copy(), table[:, 1].copy()


def _block_ids(lines: list[str], first: int, path: Path, prefix: str) -> np.ndarray:
    """The two integer ids of each face line of a block as an int64 (lines, 2) table, naming a bad line."""
    table = _numbers(lines, np.int64)
    if table is None:
        for number, line in enumerate(lines, start=first + 1):
            for text in line.split()[1:]:
                _int(text, path, number, prefix)
        raise DatasetLayoutError(prefix.upper(), path, "integer ids", "an id is not an integer")
    return table.reshape(-1, 2)


def _numbers(lines: list[str], dtype: type) -> np.ndarray | None:
    """All fields after the first of ``lines`` as one flat array, or None when one is not a ``dtype`` number."""
    text = " ".join(line.split(None, 1)[1] for line in lines)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            return np.fromstring(text, dtype=dtype, sep=" ")
        except (DeprecationWarning, ValueError):
            return None


def _int(text: str, path: Path, line: int, prefix: str) -> int:
    """Parse an integer field, naming file and line on failure."""
    try:
        return int(text)
    except ValueError:
        raise DatasetLayoutError(prefix.upper(), path, "integer ids", f"line {line}: {text!r} is not an integer") from None


def _read_landmarks(path: Path, names: tuple[str, ...], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``name x1 y1 ... x5 y5 score`` lines a block at a time and return them in the face list's order."""
    keys: list[str] = []
    tables: list[np.ndarray] = []
    for lines in text_line_blocks(_required(path, prefix)):
        first = len(keys)
        for number, line in enumerate(lines, start=first + 1):
            parts = line.split()
            if len(parts) != 12:
                raise DatasetLayoutError(prefix.upper(), path, "lines 'image_name x1 y1 ... x5 y5 score'",
                                         f"line {number} has {len(parts)} fields")
            keys.append(parts[0])
        values = _numbers(lines, np.float64)
        if values is None:
            bad = next(n for n, line in enumerate(lines, start=first + 1) if _numbers([line], np.float64) is None)
            raise DatasetLayoutError(prefix.upper(), path, "numeric landmarks and score",
                                     f"line {bad} has a non-number")
        tables.append(values.reshape(-1, 11).astype(np.float32))
    table = np.concatenate(tables) if tables else np.empty((0, 11), np.float32)
    if keys != list(names):
        table = table[_positions(keys, names, path, prefix)]
    return table[:, :10].reshape(-1, 5, 2), table[:, 10].copy()


def _positions(keys: list[str], names: tuple[str, ...], path: Path, prefix: str) -> np.ndarray:
    """The line of ``keys`` (the last one, for a repeated name) holding each of ``names``."""
    line_of = {key: row for row, key in enumerate(keys)}
    missing = next((n for n in names if n not in line_of), None)
    if missing is not None:
        raise DatasetLayoutError(prefix.upper(), path, "one line per face of the face list",
                                 f"no landmarks for image {missing!r}")
    return np.fromiter((line_of[n] for n in names), dtype=np.int64, count=len(names))


def _read_pairs(path: Path, prefix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse the all-integer pair file a block of whole lines at a time (numpy's C text reader; IJB-C has ~15.6M
    lines) into int32 template ids and int8 labels, allocated once from the file's line count."""
    lines = count_lines(_required(path, prefix))
    t1, t2, labels = np.empty(lines, np.int32), np.empty(lines, np.int32), np.empty(lines, np.int8)
    rows = 0
    for block in line_blocks(path):
        if not block.strip():
            continue
        table = _pair_block(block, rows, path, prefix)
        stop = rows + table.shape[0]
        if stop > t1.size:  # several pairs on one line: more rows than lines
            t1, t2, labels = (_grown(column, rows, max(stop, 2 * column.size)) for column in (t1, t2, labels))
        t1[rows:stop], t2[rows:stop], labels[rows:stop] = table.T
        rows = stop
    if rows == t1.size:
        return t1, t2, labels
    return t1[:rows].copy(), t2[:rows].copy(), labels[:rows].copy()


def _grown(column: np.ndarray, used: int, size: int) -> np.ndarray:
    """A ``size``-long array starting with the first ``used`` entries of ``column``."""
    grown = np.empty(size, column.dtype)
    grown[:used] = column[:used]
    return grown


def _pair_block(text: bytes, first_line: int, path: Path, prefix: str) -> np.ndarray:
    """Parse whole ``template_id_1 template_id_2 label`` lines into an int32 (rows, 3) table, naming bad lines."""
    expected = "lines 'template_id_1 template_id_2 label'"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            values = np.fromstring(text, dtype=np.int64, sep=" ")
        except (DeprecationWarning, ValueError) as exc:
            raise DatasetLayoutError(prefix.upper(), path, expected, f"non-integer content ({exc})") from None
    if values.size % 3:
        raise DatasetLayoutError(prefix.upper(), path, expected,
                                 f"{values.size} numbers after line {first_line} is not a multiple of 3")
    table = values.reshape(-1, 3)
    labels = table[:, 2]
    if not np.isin(labels, (0, 1)).all():
        bad = int(np.flatnonzero(~np.isin(labels, (0, 1)))[0])
        raise DatasetLayoutError(prefix.upper(), path, "labels 0 or 1",
                                 f"line {first_line + bad + 1}: label {labels[bad]}")
    if table.size and (table.min() < np.iinfo(np.int32).min or table.max() > np.iinfo(np.int32).max):
        raise DatasetLayoutError(prefix.upper(), path, "template ids within 32-bit integers",
                                 f"an id beyond them after line {first_line}")
    return table.astype(np.int32)


def _check_known_templates(ids: np.ndarray, known: np.ndarray, path: Path, prefix: str) -> None:
    """Raise naming ``path``, the line and the first template id absent from the face list (checked in chunks, so
    a 15.6M-pair list costs no int64 copy)."""
    step = 1 << 20
    for start in range(0, ids.size, step):
        chunk = ids[start:start + step]
        position = np.minimum(np.searchsorted(known, chunk), known.size - 1)
        unknown = np.flatnonzero(known[position] != chunk)
        if unknown.size:
            first = start + int(unknown[0])
            raise DatasetLayoutError(prefix.upper(), path, "template ids that appear in the face list",
                                     f"line {first + 1}: unknown template id {int(ids[first])}")


def _read_1n_lists(meta: Path, stem: str, known: np.ndarray, prefix: str) -> dict[str, TemplateSubjects]:
    """Read every ``<stem><NAME>.csv`` (gallery or probe list) into ``{NAME: TemplateSubjects}``."""
    lists: dict[str, TemplateSubjects] = {}
    for path in sorted(meta.glob(f"{stem}*.csv")):
        table = _read_template_csv(path, prefix)
        _check_known_templates(table[:, 0], known, path, prefix)
        lists[path.stem[len(stem):]] = _unique_templates(table, path, prefix)
    return lists


def _read_template_csv(path: Path, prefix: str) -> np.ndarray:
    """Return the (template_id, subject_id) columns of a 1:N CSV (first row, the header, skipped), a block at a time."""
    blocks: list[np.ndarray] = []
    header = True
    for block in line_blocks(path):
        rows = list(csv.reader(block.decode("utf-8").splitlines()))
        if header:
            rows, header = rows[1:], False
        try:
            blocks.append(np.asarray([(int(r[0]), int(r[1])) for r in rows if r], dtype=np.int64).reshape(-1, 2))
        except (ValueError, IndexError):
            raise DatasetLayoutError(prefix.upper(), path, "a header row, then template_id,subject_id,...",
                                     "a row without two integer columns") from None
    return np.concatenate(blocks) if blocks else np.empty((0, 2), np.int64)


def _unique_templates(table: np.ndarray, path: Path, prefix: str) -> TemplateSubjects:
    """Collapse per-image rows to one (template, subject) each; a template with two subjects is an error."""
    pairs = np.unique(table, axis=0)
    ids, counts = np.unique(pairs[:, 0], return_counts=True)
    if (counts > 1).any():
        raise DatasetLayoutError(prefix.upper(), path, "one subject per template",
                                 f"template {int(ids[counts > 1][0])} has several subject ids")
    return TemplateSubjects(pairs[:, 0], pairs[:, 1])


def write_ijb_meta(
    root: str | Path,
    prefix: str,
    faces: Sequence[IJBFace],
    pairs: Sequence[tuple[int, int, int]] | np.ndarray,
    *,
    galleries: Mapping[str, Sequence[int]] | None = None,
    probes: Sequence[int] | None = None,
) -> Path:
    """Write an IJB meta folder (and ``loose_crop/`` JPEGs) in the insightface layout; returns ``root``.

    ``pairs`` rows are ``(template_id_1, template_id_2, label)``; ``galleries`` maps names such as ``"G1"`` to
    template ids and ``probes`` lists the probe templates (written as ``<prefix>_1N_probe_mixed.csv``); subjects
    come from the faces. Every file is written atomically.
    """
    root = Path(root)
    names = [face.name or f"{row + 1}.jpg" for row, face in enumerate(faces)]
    for name, face in zip(names, faces, strict=True):
        atomic_write_bytes(root / "loose_crop" / name, _jpeg_bytes(face.image))
    meta = root / "meta"
    _write_text(meta / f"{prefix}_face_tid_mid.txt",
                [f"{n} {f.template_id} {f.media_id}" for n, f in zip(names, faces, strict=True)])
    _write_text(meta / f"{prefix}_name_5pts_score.txt",
                [_landmark_line(n, f) for n, f in zip(names, faces, strict=True)])
    _write_text(meta / f"{prefix}_template_pair_label.txt", [f"{int(a)} {int(b)} {int(c)}" for a, b, c in pairs])
    lists = {f"gallery_{name}": ids for name, ids in (galleries or {}).items()}
    if probes is not None:
        lists["probe_mixed"] = probes
    for stem, template_ids in lists.items():
        _write_text(meta / f"{prefix}_1N_{stem}.csv", _template_csv_lines(template_ids, names, faces))
    return root


def _jpeg_bytes(image: np.ndarray) -> bytes:
    """Encode an H×W×3 uint8 RGB array as a high-quality JPEG."""
    out = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), "RGB").save(out, format="JPEG", quality=95)
    return out.getvalue()


def _landmark_line(name: str, face: IJBFace) -> str:
    """Format one ``name x1 y1 ... x5 y5 score`` line."""
    points = " ".join(f"{v:.4f}" for v in np.asarray(face.landmarks, dtype=np.float64).reshape(10))
    return f"{name} {points} {face.score:.6f}"


def _template_csv_lines(template_ids: Sequence[int], names: list[str], faces: Sequence[IJBFace]) -> list[str]:
    """Return a 1:N CSV (header + one row per image of each listed template)."""
    wanted = {int(t) for t in template_ids}
    rows = [f"{f.template_id},{f.subject_id},{n}" for n, f in zip(names, faces, strict=True) if f.template_id in wanted]
    return ["TEMPLATE_ID,SUBJECT_ID,FILENAME", *rows]


def _write_text(path: Path, lines: list[str]) -> None:
    """Atomically write ``lines`` (newline-terminated) to ``path``."""
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
