"""Content-addressed feature store: image features extracted once per (model, split, view), text classifiers
once per (text tower, prompt set).

Keys are fingerprints of what determines the numbers (image-tower weights + preprocessing, the split's sample list
and labels, the view), never names, so a changed checkpoint or preprocessing can never reuse stale features, and
variants that only change the image tower reuse the base model's zero-shot classifier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from overspec import distributed
from overspec.data.base import LabelledImages
from overspec.data.digests import use_digest_cache
from overspec.features._files import CorruptCacheError, discard, read_entry, write_array
from overspec.features.loading import KeptImages, image_batches
from overspec.features.text import build_classifier, prompt_set_fingerprint
from overspec.models.base import Encoder
from overspec.models.fingerprint import combine
from overspec.errors import InputError
from overspec.progress import bar_disabled, stage

logger = logging.getLogger(__name__)

__all__ = ["FeatureStore", "Features", "ModelFeatures", "NonFiniteFeaturesError", "BAD_IMAGE_POLICIES"]

VIEWS = ("plain", "flip", "blocks")
#: What an undecodable image does: ``fail`` stops with :class:`~overspec.data.base.BadImageError`; ``skip``
#: zeroes its feature row, marks it invalid and records it (index, location, problem) in the cache entry's header.
BAD_IMAGE_POLICIES = ("fail", "skip")
#: Decoded images a store keeps in memory for the next model that resizes alike (:class:`KeptImages`).
KEPT_BYTES = 512 * 2**20


class NonFiniteFeaturesError(InputError):
    """A model produced NaN or infinite embeddings; the one-line message names the model, the data and the rows."""


@dataclass(frozen=True)
class Features:
    """Features of one split: ``x`` is ``(N, D)`` for the plain view, ``(N, 2, D)`` for ``flip`` (image, mirrored),
    ``(N, blocks, width)`` for ``blocks`` (the class token each visual transformer block outputs).

    ``valid[i]`` is False for an image that could not be decoded (skipped under ``on_bad_image="skip"``; its row
    of ``x`` is zero and must not be used); all True when nothing was skipped.
    """

    x: np.ndarray
    labels: np.ndarray
    key: str
    cached: bool
    valid: np.ndarray | None = None

    def __post_init__(self) -> None:
        valid = np.ones(len(self.labels), bool) if self.valid is None else np.asarray(self.valid, bool)
        if valid.shape != (len(self.labels),):
            raise InputError(f"valid mask of shape {valid.shape} does not match {len(self.labels)} labels")
        object.__setattr__(self, "valid", valid)

    @property
    def n_skipped(self) -> int:
        """Number of rows left out because their image could not be decoded."""
        return int(np.count_nonzero(~self.valid))


class FeatureStore:
    """Extracts and caches image features and zero-shot text classifiers under ``root``.

    ``on_bad_image`` (one of :data:`BAD_IMAGE_POLICIES`) decides what an undecodable image does; a cache entry
    written under ``skip`` that has bad rows still raises under ``fail``, so the cache never turns a failing run
    into a passing one.
    """

    def __init__(self, root: Path, *, batch_size: int = 128, num_workers: int = 0, device: str = "cpu",
                 progress: bool = True, verify: bool = True, on_bad_image: str = "fail") -> None:
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise InputError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        self.root = Path(root)
        use_digest_cache(self.root.parent / "file-digests")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.progress = progress
        self.verify = verify
        self.on_bad_image = on_bad_image
        self.kept = KeptImages(KEPT_BYTES)

    def image_key(self, encoder: Encoder, split: LabelledImages, view: str = "plain") -> str:
        """Return the cache key of ``encoder``'s features of ``split`` in ``view``."""
        if view not in VIEWS:
            raise InputError(f"unknown feature view {view!r}; expected one of {VIEWS}")
        return combine("image-features-v1", encoder.fingerprint, split.fingerprint, view)

    def image_features(self, encoder: Encoder, split: LabelledImages, *, view: str = "plain") -> Features:
        """Return cached features of ``split``, extracting (and storing) them first if needed.

        Raises :class:`~overspec.data.base.BadImageError` for an undecodable image under ``on_bad_image="fail"``
        and :class:`NonFiniteFeaturesError` for NaN / infinite embeddings; in both cases nothing is cached.
        """
        key = self.image_key(encoder, split, view)
        path = self.root / "image" / key[:2] / f"{key}.npy"
        meta = {"model": encoder.name, "dataset": split.dataset, "split": split.split, "view": view,
                "model_fingerprint": encoder.fingerprint, "split_fingerprint": split.fingerprint}
        cached = self._cached_features(path, split, key)
        if cached is not None:
            return cached
        if distributed.is_distributed():
            array, bad = self._extract(encoder, split, view)
            if distributed.is_main():
                write_array(path, array, {**meta, "bad_images": bad})
            distributed.barrier()
            return self._stored_features(path, split, key)
        with FileLock(str(path.with_suffix(".lock"))):
            cached = self._cached_features(path, split, key)
            if cached is not None:
                return cached
            with stage(f"features {encoder.name}"):
                array, bad = self._extract(encoder, split, view)
                write_array(path, array, {**meta, "bad_images": bad})
        return self._stored_features(path, split, key)

    def text_classifier(self, encoder: Encoder, classnames: Sequence[str], templates: Sequence[str], *,
                        dataset: str = "") -> np.ndarray:
        """Return the ``(D, C)`` zero-shot classifier, cached by text-tower and prompt-set fingerprints.

        ``dataset`` (e.g. ``"cifar10/test"``) only names the data in the error raised for non-finite embeddings.
        """
        if not encoder.has_text:
            raise TypeError(f"model {encoder.name!r} has no text tower: no zero-shot classifier")
        key = combine("zero-shot-classifier-v1", encoder.text_fingerprint, prompt_set_fingerprint(classnames, templates))
        path = self.root / "text" / key[:2] / f"{key}.npy"
        cached = self._read(path)
        if cached is not None:
            return cached[0]
        with FileLock(str(path.with_suffix(".lock"))):
            cached = self._read(path)
            if cached is None:
                with stage("zero-shot text classifiers"), torch.inference_mode(), self._autocast():
                    classifier = build_classifier(encoder.encode_text, list(classnames), list(templates))
                classifier = classifier.float().cpu().numpy()
                _check_finite_classifier(classifier, encoder.name, classnames, dataset)
                write_array(path, classifier, {"model": encoder.name, "classes": len(classnames)})
                cached = self._read(path)
        return cached[0]

    def _read(self, path: Path) -> tuple[np.ndarray, dict] | None:
        try:
            return read_entry(path, verify=self.verify)
        except CorruptCacheError as exc:
            logger.warning("discarding corrupt cache entry and recomputing: %s", exc)
            discard(path)
            return None

    def _cached_features(self, path: Path, split: LabelledImages, key: str) -> Features | None:
        """Return the stored features of ``split``, or ``None`` when absent or when a recorded bad image now decodes.

        Recorded bad images are decoded again (only those), so a repaired file leads to a fresh extraction
        instead of a stale zero row; under ``fail`` a bad image still present raises.
        """
        entry = self._read(path)
        if entry is None:
            return None
        for record in entry[1].get("bad_images", []):
            problem = split.decode_problem(int(record["index"]))
            if not problem:
                logger.info("%s: image %s decodes now; extracting %s/%s again", path.name,
                            split.location(int(record["index"])), split.dataset, split.split)
                discard(path)
                return None
            if self.on_bad_image == "fail":
                raise split.bad_image_error(int(record["index"]), problem)
        return self._features(entry, split, key, cached=True)

    def _stored_features(self, path: Path, split: LabelledImages, key: str) -> Features:
        """Read back what was just written (memory-mapped, checksum-verified)."""
        entry = self._read(path)
        if entry is None:
            raise CorruptCacheError(f"{path}: cache entry missing or unreadable right after it was written")
        return self._features(entry, split, key, cached=False)

    @staticmethod
    def _features(entry: tuple[np.ndarray, dict], split: LabelledImages, key: str, cached: bool) -> Features:
        array, header = entry
        bad = [int(record["index"]) for record in header.get("bad_images", [])]
        valid = np.ones(len(split), bool)
        valid[bad] = False
        if bad:
            logger.warning("%s/%s: %d unreadable image(s) left out (first: %s)", split.dataset, split.split,
                           len(bad), header["bad_images"][0]["location"])
        return Features(array, split.labels, key, cached, valid)

    def _autocast(self):
        if torch.device(self.device).type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def _extract(self, encoder: Encoder, split: LabelledImages, view: str) -> tuple[np.ndarray, list[dict]]:
        """Encode this rank's shard of ``split`` (all of it when not distributed) and gather the full array.

        Returns the features (zero rows for undecodable images) and the bad images as ``{index, location,
        problem}`` records; raises for a bad image under ``fail`` and for non-finite features.
        """
        start, stop = distributed.shard_bounds(len(split))
        shard = split.subset(np.arange(start, stop))
        batches = image_batches(shard, encoder.preprocess, batch_size=self.batch_size, num_workers=self.num_workers,
                                device=self.device, kept=None if distributed.is_distributed() else self.kept)
        chunks: list[np.ndarray] = []
        bad: list[dict] = []
        fail_fast = self.on_bad_image == "fail" and not distributed.is_distributed()
        bar = tqdm(total=len(shard), desc=f"{encoder.name} {split.dataset}/{split.split}", unit="img",
                   disable=bar_disabled(self.progress and distributed.is_main()), leave=False)
        offset = start
        with torch.inference_mode(), self._autocast():
            for images, problems in batches:
                batch = self._encode_batch(encoder, images, view)
                for row in (k for k, problem in enumerate(problems) if problem):
                    batch[row] = 0.0
                    bad.append({"index": offset + row, "location": split.location(offset + row),
                                "problem": problems[row]})
                    if fail_fast:
                        raise split.bad_image_error(offset + row, problems[row])
                chunks.append(batch)
                offset += batch.shape[0]
                bar.update(batch.shape[0])
        bar.close()
        local = np.concatenate(chunks) if chunks else self._empty(encoder, view)
        array, bad = distributed.gather_rows(local, len(split)), _gathered_records(bad)
        if bad and self.on_bad_image == "fail":
            raise split.bad_image_error(bad[0]["index"], bad[0]["problem"])
        _check_finite_rows(array, [record["index"] for record in bad], encoder.name, split)
        return array, bad

    def _empty(self, encoder: Encoder, view: str) -> np.ndarray:
        """A zero-row array of the right width, for a rank whose shard is empty."""
        size = int((encoder.info or {}).get("preprocess", {}).get("size", 224))
        probe = torch.zeros(1, 3, size, size, device=self.device)
        with torch.inference_mode():
            width = self._encode_batch(encoder, probe, view).shape[1:]
        return np.zeros((0, *width), np.float32)

    @staticmethod
    def _encode_batch(encoder: Encoder, images: torch.Tensor, view: str) -> np.ndarray:
        if view == "blocks":
            from overspec.models.blocks import block_class_tokens

            return block_class_tokens(encoder, images).cpu().numpy()
        plain = encoder.encode_image(images).float()
        if view == "plain":
            return plain.cpu().numpy()
        mirrored = encoder.encode_image(torch.flip(images, dims=[3])).float()
        return torch.stack([plain, mirrored], dim=1).cpu().numpy()


def _gathered_records(local: list[dict]) -> list[dict]:
    """Every rank's bad-image records, sorted by index (this rank's alone when not distributed)."""
    if not distributed.is_distributed():
        return local
    parts: list[list[dict]] = [[] for _ in range(distributed.world_size())]
    torch.distributed.all_gather_object(parts, local)
    return sorted((record for part in parts for record in part), key=lambda record: record["index"])


def _check_finite_rows(array: np.ndarray, skipped: Sequence[int], model: str, split: LabelledImages) -> None:
    """Raise :class:`NonFiniteFeaturesError` when a row of a decoded image holds NaN or infinity."""
    broken = ~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
    broken[list(skipped)] = False
    if broken.any():
        first = int(np.flatnonzero(broken)[0])
        raise NonFiniteFeaturesError(
            f"model {model!r} produced NaN or infinite image features for {int(broken.sum())} of {len(broken)} "
            f"images of {split.dataset}/{split.split} (first: index {first}, {split.location(first)}); "
            "nothing was cached"
        )


def _check_finite_classifier(classifier: np.ndarray, model: str, classnames: Sequence[str], dataset: str) -> None:
    """Raise :class:`NonFiniteFeaturesError` when a class column of a zero-shot classifier is not finite."""
    broken = ~np.isfinite(classifier).all(axis=0)
    if broken.any():
        first = int(np.flatnonzero(broken)[0])
        where = f" for {dataset}" if dataset else ""
        raise NonFiniteFeaturesError(
            f"model {model!r} produced NaN or infinite text embeddings{where}: {int(broken.sum())} of "
            f"{len(broken)} zero-shot classes affected (first: index {first}, {classnames[first]!r}); "
            "nothing was cached"
        )


class ModelFeatures:
    """One model's view of a :class:`FeatureStore`: its image features, its zero-shot classifier and its head.

    ``load`` returns the model and is called on first use only, so a unit whose results are stored loads nothing.
    """

    def __init__(self, store: FeatureStore, load: Callable[[], Encoder]) -> None:
        self.store, self._load = store, load

    def image(self, split: LabelledImages, view: str = "plain") -> Features:
        """Image features of ``split`` in ``view`` (extracted once, then read from the store)."""
        return self.store.image_features(self._load(), split, view=view)

    def text_classifier(self, classnames: Sequence[str], templates: Sequence[str], dataset: str = "") -> np.ndarray:
        """The ``(D, C)`` zero-shot classifier of a prompt set (built once per text tower and prompt set)."""
        return self.store.text_classifier(self._load(), classnames, templates, dataset=dataset)

    @property
    def head(self):
        """The model's binary head, or None."""
        return self._load().head
