"""Attack-detection protocol lists (MAD and PAD): one CSV row per image or video frame.

Columns ``path,label,attack_type,video_id,subject_id,split,source``: ``label`` is ``bona_fide`` or ``attack``;
``attack_type`` names the PAI species (print, replay, mask, ...) or the morphing method and is empty for bona
fide rows; ``path`` is relative to the CSV's folder; ``split`` is ``train``, ``dev`` or ``test``; ``source`` names
the dataset a row comes from (the letters O, C, I, M of the MCIO protocols). Empty ``video_id`` means the image
is its own video.

Cross-dataset PAD protocols are leave-one-out merges of per-dataset lists (SSDG ``O_C_I_to_M`` etc.,
biometric-protocols.md §7.3). Video-level scores are the mean of the frame scores of each video (SSDG,
FoundPAD; §7.2). Splits become :class:`~overspec.data.base.LabelledImages` with label 1 = bona fide and
0 = attack (the MAD/PAD code convention, §1).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from overspec.data.base import DatasetLayoutError, LabelledImages
from overspec.data.digests import lazy_files_digest
from overspec.data.formats.common import is_image_suffix
from overspec.data.images import open_rgb
from overspec.files import atomic_write_text
from overspec.errors import InputError

__all__ = [
    "COLUMNS", "LABELS", "SPLITS", "TASKS", "CLASSNAMES", "TEMPLATES", "OCIM_PROTOCOLS",
    "AttackSample", "AttackProtocol", "ProtocolListError", "VideoScores",
    "read_protocol", "write_protocol", "protocol_from_folders", "leave_one_out", "ocim_protocols", "video_scores",
]

logger = logging.getLogger(__name__)

COLUMNS = ("path", "label", "attack_type", "video_id", "subject_id", "split", "source")
LABELS = ("bona_fide", "attack")
SPLITS = ("train", "dev", "test")
TASKS = ("pad", "mad")
#: Class names in label order (0 = attack, 1 = bona fide), the prompts of zero-shot scoring.
CLASSNAMES = {"pad": ("spoof face", "real face"), "mad": ("morphed face", "real face")}
TEMPLATES = ("a photo of a {c}.", "a close-up photo of a {c}.")
#: SSDG experiment names → (three sources, target), biometric-protocols.md §7.3.
OCIM_PROTOCOLS = {
    "O_C_I_to_M": (("O", "C", "I"), "M"),
    "O_M_I_to_C": (("O", "M", "I"), "C"),
    "O_C_M_to_I": (("O", "C", "M"), "I"),
    "I_C_M_to_O": (("I", "C", "M"), "O"),
}


class ProtocolListError(InputError):
    """A protocol CSV is malformed; the one-line message names the file, the line and the column."""


class MissingSplitError(ProtocolListError, KeyError):
    """A protocol has no samples in a split that is needed; names the protocol and its file."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class AttackSample:
    """One image or frame of a protocol; ``path`` is relative to the protocol root (POSIX separators)."""

    path: str
    label: str
    attack_type: str
    video_id: str
    subject_id: str
    split: str
    source: str

    @property
    def is_bona_fide(self) -> bool:
        """Whether the row is bona fide (label 1 in :meth:`AttackProtocol.split`)."""
        return self.label == "bona_fide"


@dataclass(frozen=True)
class AttackProtocol:
    """A MAD or PAD protocol: samples (with their split) whose paths are relative to ``root``."""

    name: str
    root: Path
    samples: tuple[AttackSample, ...]
    task: str = "pad"
    origin: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise InputError(f"protocol {self.name!r}: unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        for sample in self.samples:
            if sample.label not in LABELS or sample.split not in SPLITS:
                raise InputError(f"protocol {self.name!r}: sample {sample.path!r} has label {sample.label!r} / "
                                 f"split {sample.split!r}; expected {LABELS} / {SPLITS}")

    def splits(self) -> tuple[str, ...]:
        """Split names present, in the canonical order train, dev, test."""
        present = {s.split for s in self.samples}
        return tuple(s for s in SPLITS if s in present)

    def samples_of(self, split: str) -> tuple[AttackSample, ...]:
        """The samples of ``split`` in file order; an absent split is an error naming the ones present."""
        chosen = tuple(s for s in self.samples if s.split == split)
        if not chosen:
            where = f" ({self.origin})" if self.origin else ""
            raise MissingSplitError(f"protocol {self.name!r}{where} has no {split!r} split; it has "
                                    f"{', '.join(self.splits())}")
        return chosen

    def require_scorable(self) -> AttackProtocol:
        """Return this protocol if its test split has bona fide and attack samples (what every error rate needs)."""
        labels = {s.label for s in self.samples_of("test")}
        absent = [label.replace("_", " ") for label in LABELS if label not in labels]
        if absent:
            where = self.origin or self.name
            raise ProtocolListError(f"{where}: the 'test' split has no {absent[0]} samples; error rates need both "
                                    "bona fide and attack samples")
        return self

    def attack_types(self, split: str | None = None) -> tuple[str, ...]:
        """Sorted attack types (PAI species or morph methods) of one split or of the whole protocol."""
        samples = self.samples if split is None else self.samples_of(split)
        return tuple(sorted({s.attack_type for s in samples if not s.is_bona_fide}))

    def split(self, name: str) -> LabelledImages:
        """Return split ``name`` as labelled images (1 = bona fide, 0 = attack).

        ``info`` holds per-sample arrays ``attack_type``, ``video_id``, ``subject_id``, ``source`` (same order as
        the labels) and the ``task``; ``LabelledImages.subset`` does not slice them, index them yourself.
        """
        samples = self.samples_of(name)
        root = self.root
        paths = [s.path for s in samples]

        def read(index: int) -> Image.Image:
            return open_rgb(root / paths[index])

        identity = tuple((s.path, s.label, s.attack_type, s.video_id) for s in samples)
        info = {key: np.array([getattr(s, key) for s in samples], dtype=object)
                for key in ("attack_type", "video_id", "subject_id", "source")}
        info["task"] = self.task
        return LabelledImages(
            dataset=self.name, split=name, labels=np.array([int(s.is_bona_fide) for s in samples]), read=read,
            identity=identity, classnames=CLASSNAMES[self.task], templates=TEMPLATES, info=info,
            locate=lambda i: str(root / paths[i]), content=lazy_files_digest([root / p for p in paths]),
        )


def _row_error(path: Path, line: int, column: str, problem: str) -> ProtocolListError:
    return ProtocolListError(f"{path}: line {line}, column {column!r}: {problem}")


def _sample_from_row(row: dict[str, str], path: Path, line: int, check_files: bool,
                     within: Path | None) -> AttackSample:
    values = {key: (row.get(key) or "").strip() for key in COLUMNS}
    if values["label"] not in LABELS:
        raise _row_error(path, line, "label", f"unknown value {values['label']!r}; expected one of {', '.join(LABELS)}")
    if values["split"] not in SPLITS:
        raise _row_error(path, line, "split", f"unknown value {values['split']!r}; expected one of {', '.join(SPLITS)}")
    if not values["path"]:
        raise _row_error(path, line, "path", "empty path")
    if values["label"] == "bona_fide" and values["attack_type"]:
        raise _row_error(path, line, "attack_type", f"bona fide row has attack type {values['attack_type']!r} "
                                                    "(must be empty)")
    relative = Path(values["path"])
    if relative.is_absolute():
        raise _row_error(path, line, "path", f"absolute path {values['path']!r}; paths are relative to {path.parent}")
    if within is not None and not _inside(path.parent / relative, within):
        raise _row_error(path, line, "path", f"{values['path']!r} leaves the data root {within}")
    if check_files and not (path.parent / relative).is_file():
        raise _row_error(path, line, "path", f"file not found: {path.parent / relative}")
    values["path"] = relative.as_posix()
    values["video_id"] = values["video_id"] or values["path"]
    return AttackSample(**values)


def read_protocol(path: str | Path, *, name: str | None = None, task: str = "pad",
                  check_files: bool = True, within: Path | None = None) -> AttackProtocol:
    """Read and validate a protocol CSV (see the module docstring for the columns).

    Every problem (missing column, unknown label or split, attack type on a bona fide row, missing image when
    ``check_files``, a path leaving the folder ``within`` when given, a sample listed twice or in two splits, a test
    split lacking bona fide or attack samples) raises :class:`ProtocolListError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(name or path.stem, path, f"a CSV with header {','.join(COLUMNS)}")
    rows = _read_rows(path, check_files, within)
    if not rows:
        raise ProtocolListError(f"{path}: no rows after the header")
    _check_each_path_once(path, rows)
    samples = tuple(sample for _, sample in rows)
    logger.debug("read protocol %s: %d samples", path, len(samples))
    return AttackProtocol(name or path.stem, path.parent.resolve(), samples, task, str(path))


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (``..`` resolved lexically) lies in ``folder``."""
    target, root = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(folder))
    return os.path.commonpath([target, root]) == root


def _read_rows(path: Path, check_files: bool, within: Path | None) -> list[tuple[int, AttackSample]]:
    """``(line number, sample)`` of every row of the CSV at ``path`` (UTF-8, a byte-order mark allowed)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise ProtocolListError(f"{path}: line 1: missing column(s) {', '.join(repr(c) for c in missing)}; "
                                        f"expected header {','.join(COLUMNS)}")
            reader.fieldnames = header
            return [(reader.line_num, _sample_from_row(row, path, reader.line_num, check_files, within))
                    for row in reader]
    except UnicodeDecodeError as exc:
        raise ProtocolListError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def _check_each_path_once(path: Path, rows: list[tuple[int, AttackSample]]) -> None:
    """Refuse a sample listed twice: a repeated row weighs its score several times, and one listed in two splits
    is trained on and tested on."""
    first: dict[str, tuple[int, str]] = {}
    for line, sample in rows:
        if sample.path not in first:
            first[sample.path] = (line, sample.split)
            continue
        earlier, split = first[sample.path]
        if split == sample.split:
            raise _row_error(path, line, "path", f"{sample.path!r} repeats line {earlier} (split {split!r}); "
                                                 "each sample must be listed once")
        raise _row_error(path, line, "path", f"{sample.path!r} is in split {sample.split!r} here and in split "
                                             f"{split!r} on line {earlier}; train, dev and test must not overlap")





def write_protocol(path: str | Path, protocol: AttackProtocol) -> Path:
    """Write ``protocol`` as a CSV at ``path`` (atomically), paths rewritten relative to the CSV's folder."""
    path = Path(path)
    folder = path.parent.resolve()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for s in protocol.samples:
        relative = Path(os.path.relpath(protocol.root / s.path, folder)).as_posix()
        writer.writerow([relative, s.label, s.attack_type, s.video_id, s.subject_id, s.split, s.source])
    atomic_write_text(path, buffer.getvalue())
    return path


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_suffix(p.suffix))


def _video_id(image: Path, class_dir: Path, root: Path, video_from: str) -> str:
    """Video id (relative to ``root``): the frame folder, or FoundPAD's file name up to the last ``_``."""
    relative = image.relative_to(root)
    if video_from == "stem":
        stem = image.stem.rsplit("_", 1)[0] if "_" in image.stem else image.stem
        return (relative.parent / stem).as_posix()
    if image.parent != class_dir:
        return image.parent.relative_to(root).as_posix()
    return relative.with_suffix("").as_posix()


def protocol_from_folders(root: str | Path, *, name: str | None = None, task: str = "pad", source: str = "",
                          video_from: str = "folder") -> AttackProtocol:
    """Build a protocol from ``<root>/<split>/bona_fide/...`` and ``<root>/<split>/attack/<type>/...``.

    With ``video_from="folder"`` frames inside a sub-folder of a class folder form one video (the per-video
    frame-folder layout) and loose images are single-frame videos; ``"stem"`` groups frames named
    ``<video>_<frame>.png`` (FoundPAD's rule). Splits must be named train, dev or test.
    """
    root = Path(root).resolve()
    expected = "<root>/<train|dev|test>/bona_fide/... and <root>/<split>/attack/<type>/..."
    label = name or root.name
    if video_from not in ("folder", "stem"):
        raise InputError(f"video_from must be 'folder' or 'stem', got {video_from!r}")
    if not root.is_dir():
        raise DatasetLayoutError(label, root, expected)
    samples: list[AttackSample] = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if split_dir.name not in SPLITS:
            raise DatasetLayoutError(label, split_dir, expected, f"unknown split folder {split_dir.name!r}")
        classes = [(split_dir / "bona_fide", "bona_fide", "")]
        attack_dir = split_dir / "attack"
        if attack_dir.is_dir():
            classes += [(d, "attack", d.name) for d in sorted(attack_dir.iterdir()) if d.is_dir()]
        for class_dir, kind, attack_type in classes:
            for image in _images_under(class_dir) if class_dir.is_dir() else []:
                video = _video_id(image, class_dir, root, video_from)
                samples.append(AttackSample(image.relative_to(root).as_posix(), kind, attack_type, video, "",
                                            split_dir.name, source))
    if not samples:
        raise DatasetLayoutError(label, root, expected, "no images found")
    return AttackProtocol(label, root, tuple(samples), task)


def _rebased(protocol: AttackProtocol, key: str, split: str, new_root: Path, splits: Iterable[str]) -> list:
    """Samples of ``splits`` moved to ``new_root``, renamed to ``split``, ids and source prefixed by ``key``."""
    out = []
    for s in protocol.samples:
        if s.split in splits:
            path = Path(os.path.relpath(protocol.root / s.path, new_root)).as_posix()
            out.append(replace(s, path=path, split=split, source=key, video_id=f"{key}/{s.video_id}",
                               subject_id=f"{key}/{s.subject_id}" if s.subject_id else ""))
    return out


def leave_one_out(protocols: Mapping[str, AttackProtocol], target: str, *, sources: Sequence[str] | None = None,
                  train_splits: Sequence[str] = ("train",), test_splits: Sequence[str] = ("test",),
                  dev_splits: Sequence[str] = ("dev",)) -> AttackProtocol:
    """Cross-dataset protocol: train on the sources' ``train_splits``, test on ``target``'s ``test_splits``.

    ``sources`` defaults to every key except ``target``. The sources' ``dev_splits`` (when present) become the
    ``dev`` split, so a development threshold can be fixed without the target. Video and subject ids are prefixed
    by the source key, and ``source`` is set to it. SSDG instead pools each dataset's train and test videos: pass
    ``train_splits=test_splits=("train", "test")`` for that variant (biometric-protocols.md §7.1).
    """
    if target not in protocols:
        raise KeyError(f"unknown target {target!r}; protocols given: {', '.join(protocols)}")
    sources = tuple(k for k in protocols if k != target) if sources is None else tuple(sources)
    unknown = [k for k in sources if k not in protocols]
    if unknown or target in sources or not sources:
        raise InputError(f"sources {sources} must be known, non-empty and exclude the target {target!r}")
    involved = [protocols[k] for k in (*sources, target)]
    tasks = {p.task for p in involved}
    if len(tasks) != 1:
        raise InputError(f"cannot merge protocols of different tasks: {sorted(tasks)}")
    new_root = Path(os.path.commonpath([str(p.root) for p in involved]))
    samples = [s for k in sources for s in _rebased(protocols[k], k, "train", new_root, train_splits)]
    samples += [s for k in sources for s in _rebased(protocols[k], k, "dev", new_root, dev_splits)]
    samples += _rebased(protocols[target], target, "test", new_root, test_splits)
    name = f"{'_'.join(sources)}_to_{target}"
    protocol = AttackProtocol(name, new_root, tuple(samples), tasks.pop(), protocols[target].origin)
    for split in ("train", "test"):
        protocol.samples_of(split)  # both must be non-empty
    return protocol


def ocim_protocols(protocols: Mapping[str, AttackProtocol], **splits: Sequence[str]) -> dict[str, AttackProtocol]:
    """The four MCIO leave-one-out protocols (O_C_I_to_M, O_M_I_to_C, O_C_M_to_I, I_C_M_to_O) from lists O, C, I, M.

    Keyword arguments (``train_splits``, ``test_splits``, ``dev_splits``) are passed to :func:`leave_one_out`.
    """
    missing = [k for k in "OCIM" if k not in protocols]
    if missing:
        raise KeyError(f"MCIO protocols need sources O, C, I and M; missing {', '.join(missing)}")
    return {name: leave_one_out(protocols, target, sources=sources, **splits)
            for name, (sources, target) in OCIM_PROTOCOLS.items()}


@dataclass(frozen=True)
class VideoScores:
    """Per-video mean scores, in order of each video's first frame."""

    video_ids: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    attack_types: np.ndarray
    n_frames: np.ndarray


def video_scores(scores: Sequence[float] | np.ndarray, video_ids: Sequence[str] | np.ndarray,
                 labels: Sequence[int] | np.ndarray, attack_types: Sequence[str] | np.ndarray | None = None
                 ) -> VideoScores:
    """Average frame scores per video (SSDG / FoundPAD video-level scoring).

    All frames of a video must share one label and attack type; a video that mixes them is an error.
    """
    scores = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(video_ids, dtype=object)
    labels = np.asarray(labels)
    types = np.full(len(ids), "", dtype=object) if attack_types is None else np.asarray(attack_types, dtype=object)
    if not (len(scores) == len(ids) == len(labels) == len(types)):
        raise InputError(f"scores ({len(scores)}), video_ids ({len(ids)}), labels ({len(labels)}) and attack_types "
                         f"({len(types)}) must have the same length")
    unique, first, inverse = np.unique(ids.astype(str), return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    sums = np.bincount(inverse, weights=scores, minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique))
    group_key = np.array([f"{label}\x1f{kind}" for label, kind in zip(labels.tolist(), types.tolist())], dtype=object)
    mixed = group_key != group_key[first][inverse]
    if mixed.any():
        video = str(unique[inverse[np.argmax(mixed)]])
        raise InputError(f"video {video!r} mixes labels or attack types across its frames")
    return VideoScores(unique[order].astype(object), (sums / counts)[order], labels[first[order]],
                       types[first[order]], counts[order])
