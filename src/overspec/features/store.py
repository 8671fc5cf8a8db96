"""Content-addressed feature store: image features extracted once per (model, split, view), text classifiers
once per (text tower, prompt set).

Keys are fingerprints of what determines the numbers (image-tower weights + preprocessing, the split's sample list
and labels, the view), never names, so a changed checkpoint or preprocessing can never reuse stale features, and
variants that only change the image tower reuse the base model's zero-shot classifier.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from overspec import distributed
from overspec.data.base import LabelledImages
from overspec.features._files import CorruptCacheError, discard, read_array, write_array
from overspec.models.base import Encoder
from overspec.models.fingerprint import combine

logger = logging.getLogger(__name__)

__all__ = ["FeatureStore", "Features"]

VIEWS = ("plain", "flip")


@dataclass(frozen=True)
class Features:
    """Features of one split: ``x`` is ``(N, D)`` for the plain view, ``(N, 2, D)`` for ``flip`` (image, mirrored)."""

    x: np.ndarray
    labels: np.ndarray
    key: str
    cached: bool


class FeatureStore:
    """Extracts and caches image features and zero-shot text classifiers under ``root``."""

    def __init__(self, root: Path, *, batch_size: int = 128, num_workers: int = 0, device: str = "cpu",
                 progress: bool = True, verify: bool = True) -> None:
        self.root = Path(root)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.progress = progress
        self.verify = verify

    def image_key(self, encoder: Encoder, split: LabelledImages, view: str = "plain") -> str:
        """Return the cache key of ``encoder``'s features of ``split`` in ``view``."""
        if view not in VIEWS:
            raise ValueError(f"unknown feature view {view!r}; expected one of {VIEWS}")
        return combine("image-features-v1", encoder.fingerprint, split.fingerprint, view)

    def image_features(self, encoder: Encoder, split: LabelledImages, *, view: str = "plain") -> Features:
        """Return cached features of ``split``, extracting (and storing) them first if needed."""
        key = self.image_key(encoder, split, view)
        path = self.root / "image" / key[:2] / f"{key}.npy"
        meta = {"model": encoder.name, "dataset": split.dataset, "split": split.split, "view": view,
                "model_fingerprint": encoder.fingerprint, "split_fingerprint": split.fingerprint}
        cached = self._read(path)
        if cached is not None:
            return Features(cached, split.labels, key, True)
        if distributed.is_distributed():
            array = self._extract(encoder, split, view)
            if distributed.is_main():
                write_array(path, array, meta)
            distributed.barrier()
            return Features(self._read(path), split.labels, key, False)
        with FileLock(str(path.with_suffix(".lock"))):
            cached = self._read(path)
            if cached is not None:
                return Features(cached, split.labels, key, True)
            write_array(path, self._extract(encoder, split, view), meta)
        return Features(self._read(path), split.labels, key, False)

    def text_classifier(self, encoder: Encoder, classnames: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """Return the ``(D, C)`` zero-shot classifier, cached by text-tower and prompt-set fingerprints."""
        from overspec.protocols.zero_shot import build_classifier, prompt_set_fingerprint

        if not encoder.has_text:
            raise TypeError(f"model {encoder.name!r} has no text tower: no zero-shot classifier")
        key = combine("zero-shot-classifier-v1", encoder.text_fingerprint, prompt_set_fingerprint(classnames, templates))
        path = self.root / "text" / key[:2] / f"{key}.npy"
        cached = self._read(path)
        if cached is not None:
            return cached
        with FileLock(str(path.with_suffix(".lock"))):
            cached = self._read(path)
            if cached is None:
                with torch.inference_mode(), self._autocast():
                    classifier = build_classifier(encoder.encode_text, list(classnames), list(templates))
                write_array(path, classifier.float().cpu().numpy(), {"model": encoder.name, "classes": len(classnames)})
                cached = self._read(path)
        return cached

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            return read_array(path, verify=self.verify)
        except CorruptCacheError as exc:
            logger.warning("discarding corrupt cache entry and recomputing: %s", exc)
            discard(path)
            return None

    def _autocast(self):
        if torch.device(self.device).type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def _extract(self, encoder: Encoder, split: LabelledImages, view: str) -> np.ndarray:
        """Encode this rank's shard of ``split`` (all of it when not distributed) and gather the full array."""
        start, stop = distributed.shard_bounds(len(split))
        shard = split.subset(np.arange(start, stop)).with_transform(encoder.preprocess)
        loader = torch.utils.data.DataLoader(
            shard, batch_size=self.batch_size, shuffle=False,
            num_workers=self.num_workers, pin_memory=torch.device(self.device).type == "cuda",
        )
        chunks = []
        bar = tqdm(total=len(shard), desc=f"{encoder.name} {split.dataset}/{split.split}", unit="img",
                   disable=not self.progress or not distributed.is_main(), leave=False)
        with torch.inference_mode(), self._autocast():
            for images, _ in loader:
                chunks.append(self._encode_batch(encoder, images.to(self.device, non_blocking=True), view))
                bar.update(images.shape[0])
        bar.close()
        local = np.concatenate(chunks) if chunks else self._empty(encoder, view)
        return distributed.gather_rows(local, len(split))

    def _empty(self, encoder: Encoder, view: str) -> np.ndarray:
        """A zero-row array of the right width, for a rank whose shard is empty."""
        size = int((encoder.info or {}).get("preprocess", {}).get("size", 224))
        probe = torch.zeros(1, 3, size, size, device=self.device)
        with torch.inference_mode():
            width = self._encode_batch(encoder, probe, view).shape[1:]
        return np.zeros((0, *width), np.float32)

    @staticmethod
    def _encode_batch(encoder: Encoder, images: torch.Tensor, view: str) -> np.ndarray:
        plain = encoder.encode_image(images).float()
        if view == "plain":
            return plain.cpu().numpy()
        mirrored = encoder.encode_image(torch.flip(images, dims=[3])).float()
        return torch.stack([plain, mirrored], dim=1).cpu().numpy()
