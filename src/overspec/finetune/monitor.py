"""The forgetting monitor: general zero-shot accuracy of the image tower while it is specialised (issue 15).

At step 0 (the base, before any update) and at every validation the trainer scores a small class-stratified probe
set of a catalog dataset zero-shot against the base's text classifier, computed once from the base text tower
(the dataset's class names and templates, CLIP / CLIP_benchmark prompt ensembling) and cached by content in the
feature store (:meth:`overspec.features.store.FeatureStore.text_classifier`, the cache the study's zero-shot
protocol reads). The top-1 accuracy goes into ``train_log.jsonl`` as ``monitor.acc1`` beside the biometric
``validation`` record, to TensorBoard as ``monitor/acc1`` and into the progress bar as ``general``.

When the export rule is not ``last`` (:mod:`overspec.finetune.selection`), the trainable state (LoRA + head) of
every validated step is kept as ``<out>/validated/step-NNNNNNN.safetensors`` (written atomically; its sha256 and
size recorded in the step's log record), so the chosen step can be exported bit for bit, also after a resume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load, save

from overspec.data.base import LabelledImages
from overspec.errors import InputError
from overspec.files import atomic_write_bytes
from overspec.finetune.recipes import MonitorSettings
from overspec.finetune.data import TrainingImages
from overspec.finetune.trainer import file_problem, file_record
from overspec.models.base import Encoder
from overspec.protocols.zero_shot import evaluate_zero_shot

__all__ = ["GeneralProbe", "TrainingMonitor", "stratified_indices", "probe_images", "probe_root", "base_probe",
           "kept_state", "kept_path", "KEPT_FOLDER"]

logger = logging.getLogger(__name__)

KEPT_FOLDER = "validated"


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` samples spread over the classes as evenly as they allow, drawn with ``seed``.

    Each class's members are shuffled; samples are taken by rank within their class (every class's first, then
    every class's second, ...), so per-class counts differ by at most one while the smaller classes last.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    rank = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rank[rng.permutation(members)] = np.arange(len(members))
    order = np.lexsort((labels, rank))
    return np.sort(order[:n])


def probe_root(settings: MonitorSettings, given: Path | None, cache_dir: Path) -> Path:
    """The data root holding ``settings.dataset``: ``given``, else the default embedded world's (seed 0) for a world
    dataset, whose general part is generated if missing (about 10 s; the biometric part is not needed)."""
    if given is not None:
        return Path(given)
    from overspec.data.catalog import get_dataset

    if not get_dataset(settings.dataset).root.startswith("world/"):
        raise InputError(f"monitor.dataset {settings.dataset!r} is not a world dataset: give its data root "
                         "(--monitor-root, finetune(monitor_root=...))")
    from overspec.world import default_root, ensure_world

    root = default_root(cache_dir)
    ensure_world(root, 0)
    return root


def probe_images(settings: MonitorSettings, data_root: Path) -> LabelledImages | None:
    """The monitor's probe images (None when the monitor is off)."""
    if not settings.dataset:
        return None
    from overspec.data.catalog import load_dataset

    split = load_dataset(settings.dataset, settings.split, data_root)
    if not split.classnames or not split.templates:
        raise InputError(f"monitor.dataset {settings.dataset!r} has no class names or templates for zero-shot")
    return split.subset(stratified_indices(split.labels, settings.images, settings.seed))


@dataclass
class GeneralProbe:
    """Zero-shot top-1 of an image tower on ``images`` against a fixed ``(D, C)`` text ``classifier``.

    The preprocessed images are kept between measurements (:class:`~overspec.finetune.data.TrainingImages`, within
    its memory budget): the preprocessing stays the base's while only the tower's weights change.
    """

    images: LabelledImages
    classifier: torch.Tensor
    preprocess: Callable[[Image.Image], torch.Tensor]
    batch_size: int = 128
    _pixels: TrainingImages | None = field(default=None, repr=False)

    @torch.no_grad()
    def _features(self, encoder: Encoder, device: str) -> torch.Tensor:
        """Image embeddings of the probe set by the encoder's tower as it is now, fed the base's preprocessing
        (the trainer's encoder may be fed a recipe's biometric preprocessing, which general images never get)."""
        if self._pixels is None:
            self._pixels = TrainingImages(self.images, self.preprocess)
        out = []
        for start in range(0, len(self.images), self.batch_size):
            indices = range(start, min(start + self.batch_size, len(self.images)))
            batch = torch.stack([self._pixels[(i, False)][0] for i in indices])
            out.append(encoder.encode_image(batch.to(device)).float().cpu())
        return torch.cat(out)

    def __call__(self, encoder: Encoder, device: str) -> dict:
        """``acc1`` (a fraction), the set's name, its size and the seconds the measurement took."""
        started = time.perf_counter()
        features = self._features(encoder, device)
        return {"acc1": evaluate_zero_shot(features, self.images.labels, self.classifier)["acc1"],
                "set": f"{self.images.dataset}/{self.images.split}", "images": len(self.images),
                "seconds": round(time.perf_counter() - started, 4)}


def base_probe(images: LabelledImages | None, encoder: Encoder, cache_dir: Path) -> GeneralProbe | None:
    """The probe with the base ``encoder``'s cached text classifier (None without images or a text tower)."""
    if images is None:
        return None
    if not encoder.has_text:
        logger.warning("forgetting monitor off: %s has no text tower for a zero-shot classifier", encoder.name)
        return None
    from overspec.features.store import FeatureStore

    store = FeatureStore(Path(cache_dir) / "features", progress=False)
    classifier = store.text_classifier(encoder, images.classnames, images.templates,
                                       dataset=f"{images.dataset}/{images.split}")
    return GeneralProbe(images, torch.from_numpy(np.array(classifier)), encoder.preprocess)


class TrainingMonitor:
    """What the trainer asks at step 0 and at each validation: the general probe's record and, when the export rule
    needs it, keeping the step's trainable state."""

    def __init__(self, out_dir: Path, probe: GeneralProbe | None, keep_states: bool) -> None:
        self.out_dir, self.probe, self.keep_states = Path(out_dir), probe, keep_states

    def measure(self, encoder: Encoder, device: str) -> dict | None:
        """The probe's record for the encoder as it is now (None when there is no probe)."""
        return None if self.probe is None else self.probe(encoder, device)

    def keep(self, step: int, state: dict[str, torch.Tensor]) -> dict | None:
        """Write ``state`` as step ``step``'s kept state (when kept at all); its sha256 and size."""
        if not self.keep_states:
            return None
        path = kept_path(self.out_dir, step)
        atomic_write_bytes(path, save({k: v.contiguous() for k, v in state.items()}))
        return file_record(path)

    @staticmethod
    def postfix(record: dict) -> dict[str, str]:
        """Progress-bar fields of a validation record: the biometric metric and the general accuracy."""
        shown = {key: f"{value:.4f}" for key, value in (record.get("validation") or {}).items()
                 if key in ("accuracy", "eer") and isinstance(value, float)}
        if record.get("monitor"):
            shown["general"] = f"{record['monitor']['acc1']:.4f}"
        return shown


def kept_path(out_dir: Path, step: int) -> Path:
    """Where step ``step``'s trainable state is kept."""
    return Path(out_dir) / KEPT_FOLDER / f"step-{step:07d}.safetensors"


def kept_state(out_dir: Path, step: int, record: object) -> dict[str, torch.Tensor]:
    """Step ``step``'s kept trainable state, verified against its log ``record`` (sha256 and size)."""
    path = kept_path(out_dir, step)
    problem = file_problem(path, record)
    if problem:
        raise InputError(f"the kept state of step {step} cannot be exported: {problem}; fine-tune again "
                         f"(--no-resume) to rebuild {path.parent}")
    return load(path.read_bytes())
