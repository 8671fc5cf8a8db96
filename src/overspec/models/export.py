"""Export an encoder's image tower to ONNX and check it against PyTorch with onnxruntime.

The format follows the IJCB 2026 "Adaptation of Foundation Models for FR" submissions (study.md §10): one input
``image`` (N, 3, H, W) with a dynamic batch axis, one output ``embedding`` (N, D), the projected but unnormalised
image embedding. LoRA adapters are merged first, so the graph is a plain CLIP visual transformer. The model's
preprocessing (size, mean/std, interpolation, channel order) is written into the ONNX metadata, because a consumer
that feeds the wrong normalisation gets a silently worse model (study.md §7).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

from overspec.files import atomic_write_bytes, temporary_name
from overspec.models.base import Encoder

logger = logging.getLogger(__name__)

__all__ = ["ExportError", "export_onnx", "require_export_packages"]

INSTALL_HINT = "install overspec[export] (onnx, onnxruntime)"


class ExportError(RuntimeError):
    """The export cannot run (missing packages) or its ONNX output does not match PyTorch."""


class _ImageTower(torch.nn.Module):
    """Wrap an encoder's image function as a module whose only input is the preprocessed image batch."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.model = encoder.module
        self._image_fn = encoder.image_fn

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self._image_fn(image)


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"ONNX export needs the {module!r} package: {INSTALL_HINT}") from None


def require_export_packages() -> tuple[ModuleType, ModuleType]:
    """Return the ``onnx`` and ``onnxruntime`` modules, or an :class:`ExportError` saying how to install them."""
    return _require("onnx"), _require("onnxruntime")


@contextlib.contextmanager
def _merged(encoder: Encoder) -> Iterator[int]:
    """Merge unmerged LoRA adapters for the duration of the export, then restore the encoder as it was."""
    from overspec.models.lora import LoraDelta, merge_lora, unmerge_lora

    if not any(isinstance(m, LoraDelta) for m in encoder.module.modules()):
        yield 0
        return
    merged = merge_lora(encoder.module)
    try:
        yield merged
    finally:
        if merged:
            unmerge_lora(encoder.module)


def _input_size(encoder: Encoder) -> int:
    preprocess = (encoder.info or {}).get("preprocess") or {}
    size = preprocess.get("size")
    if not size:
        raise ExportError(f"encoder {encoder.name!r} does not record its input size in info['preprocess']")
    return int(size)


@contextlib.contextmanager
def _no_mha_fastpath() -> Iterator[None]:
    """Keep ``nn.MultiheadAttention`` off its native fast path (frozen weights under no-grad take it), which the
    exporters cannot translate."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def _export_graph(tower: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, dynamo: bool) -> None:
    with _no_mha_fastpath():
        _run_exporter(tower, example, path, opset, dynamo)


def _run_exporter(tower: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, dynamo: bool) -> None:
    if dynamo:
        _require("onnxscript")
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(tower, (example,), str(path), dynamo=True, input_names=["image"],
                          output_names=["embedding"], opset_version=opset, dynamic_shapes={"image": {0: batch}},
                          external_data=False, verbose=False)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(tower, (example,), str(path), dynamo=False, input_names=["image"],
                          output_names=["embedding"], opset_version=opset, do_constant_folding=True,
                          dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}})


def _write_metadata(path: Path, encoder: Encoder, onnx: ModuleType) -> None:
    """Record name, fingerprint and preprocessing in the ONNX file and run the ONNX checker."""
    model = onnx.load(str(path))
    entries = {"overspec.model": encoder.name, "overspec.fingerprint": encoder.fingerprint,
               "overspec.preprocess": json.dumps((encoder.info or {}).get("preprocess", {}), sort_keys=True),
               "overspec.output": "projected image embedding, not L2-normalised"}
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, str(value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _parity(tower: torch.nn.Module, path: Path, size: int, batch_sizes: tuple[int, ...], seed: int,
            ort: ModuleType) -> dict[int, float]:
    """Max abs difference between PyTorch and onnxruntime outputs on random batches of each size."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    device = next(tower.parameters()).device
    diffs = {}
    for n in batch_sizes:
        images = torch.randn(n, 3, size, size, generator=generator)
        with torch.no_grad():
            expected = tower(images.to(device)).float().cpu().numpy()
        got = session.run(["embedding"], {"image": images.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportError(f"{path}: ONNX output shape {got.shape} differs from PyTorch {expected.shape}")
        diffs[n] = float(abs(got - expected).max())
    return diffs


def export_onnx(encoder: Encoder, path: Path, *, opset: int = 17, tolerance: float = 1e-4,
                batch_sizes: tuple[int, ...] = (2, 3), dynamo: bool = False, seed: int = 0) -> dict:
    """Write the (merged) image tower of ``encoder`` to ``path`` as ONNX and check it against PyTorch.

    Returns the path, opset, input shape and the max abs difference per batch size; a difference above
    ``tolerance`` removes the file and raises :class:`ExportError`. ``dynamo=True`` uses torch.export
    (needs onnxscript) instead of the TorchScript exporter.
    """
    onnx, ort = require_export_packages()
    path = Path(path)
    size = _input_size(encoder)
    tmp = temporary_name(path)
    was_training = encoder.module.training
    encoder.module.eval()
    try:
        with _merged(encoder) as merged:
            tower = _ImageTower(encoder).eval()
            example = torch.zeros(2, 3, size, size, device=encoder.device)
            _export_graph(tower, example, tmp, opset, dynamo)
            _write_metadata(tmp, encoder, onnx)
            diffs = _parity(tower, tmp, size, batch_sizes, seed, ort)
        worst = max(diffs.values())
        if worst > tolerance:
            raise ExportError(f"{path}: ONNX output differs from PyTorch by {worst:.3g} (> {tolerance:g}) "
                              f"on batches {sorted(diffs)}; file not written")
        atomic_write_bytes(path, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
        encoder.module.train(was_training)
    logger.info("exported %s to %s (max abs diff %.3g)", encoder.name, path, worst)
    return {"path": str(path), "opset": opset, "input_shape": ["batch", 3, size, size], "lora_merged": merged,
            "max_abs_diff": {str(n): d for n, d in diffs.items()}, "max_abs_diff_overall": worst,
            "tolerance": tolerance, "onnxruntime": ort.__version__}
