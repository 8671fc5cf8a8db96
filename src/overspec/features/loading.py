"""Image loading for feature extraction: geometry per image in the workers on uint8, normalisation per batch.

A model's preprocessing ``Compose([Resize, CenterCrop, ToTensor, Normalize(, BGR)])`` (what
:func:`overspec.models.preprocess.build_transform` and open_clip's eval transform build) is split in two: the
decoding workers resize and crop in PIL and ship ``uint8`` tensors (a quarter of float32's inter-process traffic),
and whole batches are converted and normalised in one vectorised op with the same arithmetic as ``ToTensor`` and
``Normalize``, so the tensors are bit-identical to the model's own ``preprocess``. Any other transform is not split:
it runs unchanged per image and batches pass through as they come.

Where a batch is normalised follows what is scarce: on a GPU after the (4x smaller) uint8 transfer; on CPU with
decoding workers in the worker, so the main process's cores only encode; on CPU without workers in the main process.
Without workers the next batch is still loaded ahead, in one background thread: PIL decodes and resizes with the GIL
released, so loading fills the gaps the encoder leaves in its cores instead of adding to the wall time.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from overspec.data.base import LabelledImages
from overspec.models.preprocess import ToBGR

logger = logging.getLogger(__name__)

__all__ = ["KeptImages", "SplitPreprocess", "split_preprocess", "image_batches", "prefetched"]

#: Batches a loader without workers keeps ready ahead of the encoder.
PREFETCH_DEPTH = 2

@dataclass(frozen=True)
class SplitPreprocess:
    """A preprocessing split into ``per_image`` (run in the loader) and :meth:`finish` (run once per batch)."""

    per_image: Callable[[Image.Image], torch.Tensor]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bgr: bool = False

    @property
    def splits(self) -> bool:
        """Whether per-image work stops at uint8 and the batch is normalised by :meth:`finish`."""
        return self.mean is not None

    def finish(self, batch: torch.Tensor) -> torch.Tensor:
        """Return the model-ready float batch: ``uint8 / 255``, then ``(x - mean) / std``, then the channel order."""
        if not self.splits:
            return batch
        x = batch.to(torch.get_default_dtype()).div_(255)
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x.sub_(mean).div_(std)
        return x.flip(1) if self.bgr else x


class _ToUint8:
    """Run PIL geometry steps on an RGB image (as the split's items are), then return it as a ``(3, H, W)`` uint8
    tensor; a class rather than a closure so that loader workers can receive it."""

    def __init__(self, steps: list[Callable[[Image.Image], Image.Image]]) -> None:
        self.steps = steps

    def __call__(self, image: Image.Image) -> torch.Tensor:
        for step in self.steps:
            image = step(image)
        return torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1).contiguous()


def split_preprocess(preprocess: Callable[[Image.Image], torch.Tensor]) -> SplitPreprocess:
    """Return ``preprocess`` split into per-image uint8 geometry and per-batch normalisation when recognised.

    Recognised: a ``Compose`` of PIL ``Resize`` / ``CenterCrop`` steps (and open_clip's conversion to RGB), then
    ``ToTensor``, ``Normalize`` and optionally the BGR swap. Anything else runs whole per image (no split).
    """
    from torchvision import transforms as T  # on first extraction, not at import: stored features never need it

    steps = list(preprocess.transforms) if isinstance(preprocess, T.Compose) else []
    cut = next((i for i, step in enumerate(steps) if isinstance(step, T.ToTensor)), None)
    if cut is None or not all(_is_geometry(step) for step in steps[:cut]):
        return _unsplit(preprocess)
    tail = steps[cut + 1:]
    if not tail or not isinstance(tail[0], T.Normalize) or len(tail) > 2:
        return _unsplit(preprocess)
    if len(tail) == 2 and not isinstance(tail[1], ToBGR):
        return _unsplit(preprocess)
    normalize = tail[0]
    return SplitPreprocess(_ToUint8(steps[:cut]), tuple(map(float, normalize.mean)), tuple(map(float, normalize.std)),
                           bgr=len(tail) == 2)


def _is_geometry(step: object) -> bool:
    """Whether ``step`` maps an RGB PIL image to an RGB PIL image (resize, crop, open_clip's RGB conversion), and so
    may run before the uint8 conversion."""
    from torchvision import transforms as T

    if isinstance(step, (T.Resize, T.CenterCrop)):
        return True
    if getattr(step, "__module__", "") != "open_clip.transform":
        return False
    converts_to_rgb = type(step).__name__ == "MaybeConvertMode" and getattr(step, "mode", None) == "RGB"
    return converts_to_rgb or getattr(step, "__name__", "") == "_convert_to_rgb"


def _unsplit(preprocess: Callable[[Image.Image], torch.Tensor]) -> SplitPreprocess:
    """The fallback: ``preprocess`` runs whole per image and :meth:`SplitPreprocess.finish` passes batches through."""
    logger.debug("preprocessing %r not recognised as resize/crop/to-tensor/normalise: run whole per image",
                 preprocess)
    return SplitPreprocess(preprocess)


class _FinishingCollate:
    """Collate ``(image, label, problem)`` items and normalise the image batch (runs inside a loader worker)."""

    def __init__(self, preprocess: SplitPreprocess) -> None:
        self.preprocess = preprocess

    def __call__(self, items: list) -> list:
        images, labels, problems = default_collate(items)
        return [self.preprocess.finish(images), labels, problems]


class KeptImages:
    """The uint8 batches of splits loaded in this process, by split content and geometry, up to ``max_bytes``.

    Every model of a run that resizes and crops alike (a base and its fine-tunes, models of one family) then decodes
    a split once: the kept batches are bit-identical to decoding again. A split that does not fit in the room left
    is not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.room = max_bytes
        self.batches: dict[str, list[tuple[torch.Tensor, list[str]]]] = {}

    def get(self, key: str) -> list[tuple[torch.Tensor, list[str]]] | None:
        """The kept batches of ``key``, or None."""
        return self.batches.get(key)

    def keeping(self, key: str, batches: Iterable[tuple[torch.Tensor, list[str]]]) -> Iterator:
        """Yield ``batches`` unchanged; once all were yielded and fit in the room, keep them under ``key``."""
        held, size = [], 0
        for images, problems in batches:
            size += images.numel() * images.element_size()
            if size <= self.room:
                held.append((images, problems))
            yield images, problems
        if size <= self.room:
            self.batches[key] = held
            self.room -= size


def _geometry_key(per_image: object) -> str | None:
    """What a split preprocessing's per-image steps do to pixels, or None when that cannot be told exactly."""
    from torchvision import transforms as T

    parts = []
    for step in getattr(per_image, "steps", None) or [None]:
        if isinstance(step, T.Resize):
            parts.append(f"resize {step.size} {step.interpolation.value} {step.max_size} {step.antialias}")
        elif isinstance(step, T.CenterCrop):
            parts.append(f"crop {list(step.size)}")
        elif step is not None and _is_geometry(step):
            parts.append("rgb")
        else:
            return None
    return "; ".join(parts)


def image_batches(split: LabelledImages, preprocess: Callable[[Image.Image], torch.Tensor], *, batch_size: int,
                  num_workers: int, device: str, kept: KeptImages | None = None
                  ) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """Yield ``(model-ready batch on device, decode problems)`` for ``split`` in order, preprocessed as ``preprocess``.

    Decoding problems stay inside the items (``LabelledImages.checked``): an undecodable image is a placeholder
    with a non-empty problem string, never an exception across the loader. Without workers, batches are loaded
    ahead in a background thread (:func:`prefetched`), and with ``kept`` a split's uint8 batches are decoded once
    per geometry (:class:`KeptImages`).
    """
    split_pre = split_preprocess(preprocess)
    on_gpu = torch.device(device).type == "cuda"
    finish_in_worker = split_pre.splits and num_workers > 0 and not on_gpu
    geometry = _geometry_key(split_pre.per_image) if kept is not None and split_pre.splits and num_workers == 0 \
        else None
    key = f"{split.fingerprint} {batch_size} {geometry}" if geometry is not None else ""
    stored = kept.get(key) if key else None
    if stored is None:
        loader = DataLoader(
            split.with_transform(split_pre.per_image).checked(), batch_size=batch_size, shuffle=False,
            num_workers=num_workers, pin_memory=on_gpu,
            collate_fn=_FinishingCollate(split_pre) if finish_in_worker else None,
        )
        stored = ((images, list(problems)) for images, _, problems in loader)
        stored = kept.keeping(key, stored) if key else stored
    finish = (lambda images: images) if finish_in_worker else split_pre.finish
    batches = ((finish(images.to(device, non_blocking=True)), problems) for images, problems in stored)
    yield from prefetched(batches, PREFETCH_DEPTH) if num_workers == 0 else batches


def prefetched(items: Iterable, depth: int) -> Iterator:
    """Yield ``items`` in order while one background thread keeps up to ``depth`` of them ready.

    An exception raised while producing an item is raised here, at that item's place. Closing the generator early
    (the consumer stopped on a bad image, or was interrupted) stops the thread before this returns.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(iter(items), ready, stop), name="overspec-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():
            _drain(ready)
            thread.join(timeout=0.05)


def _produce(items: Iterator, ready: queue.Queue, stop: threading.Event) -> None:
    """Put ``("item", x)`` for each item, then ``("end", None)``, or ``("error", exc)`` where producing raised."""
    try:
        for item in items:
            if not _put_unless_stopped(ready, ("item", item), stop):
                return
        _put_unless_stopped(ready, ("end", None), stop)
    except BaseException as exc:  # handed to the consumer, which re-raises it in its own thread
        _put_unless_stopped(ready, ("error", exc), stop)


def _put_unless_stopped(ready: queue.Queue, entry: tuple, stop: threading.Event) -> bool:
    """Put ``entry`` once there is room; return False without putting it when ``stop`` is set first."""
    while not stop.is_set():
        try:
            ready.put(entry, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _drain(ready: queue.Queue) -> None:
    """Empty ``ready`` so a producer blocked on it notices the stop."""
    with contextlib.suppress(queue.Empty):
        while True:
            ready.get_nowait()
