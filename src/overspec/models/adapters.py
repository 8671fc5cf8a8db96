"""Adapters applied on top of a loaded base model, checked against the base they were made for.

An adapter file is a safetensors file whose metadata names its ``kind`` and the ``base_fingerprint`` (image-tower
weights of the base it was trained on). Loading it onto any other base is an error, never a silent load.
The ``weights`` kind replaces (``mode=replace``) or adds to (``mode=delta``) named image-tower tensors; other kinds
(LoRA) register themselves in :data:`ADAPTERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from overspec.files import atomic_write_bytes
from overspec.models.base import Encoder, ModelLoadError
from overspec.models.fingerprint import combine, tensors_fingerprint
from overspec.config.model import ModelSpec
from overspec.registry import Registry, RegistryError

__all__ = ["ADAPTERS", "apply_adapter", "image_weights_fingerprint", "save_weights_adapter"]

ADAPTERS: Registry[Callable[[Encoder, dict[str, torch.Tensor], dict[str, str]], None]] = Registry("adapter kind")


def image_weights_fingerprint(encoder: Encoder) -> str:
    """Fingerprint of the image-tower weights alone (what adapters are checked against)."""
    return tensors_fingerprint(sorted(encoder.image_state().items()))


def save_weights_adapter(path: Path, base: Encoder, tensors: dict[str, torch.Tensor], *, mode: str = "delta") -> Path:
    """Write a ``weights`` adapter for ``base`` (keys as in ``base.image_state()``) atomically to ``path``."""
    unknown = sorted(set(tensors) - set(base.image_state()))
    if unknown:
        raise KeyError(f"adapter keys not in the image tower of {base.name!r}: {unknown[:10]}")
    path = Path(path)
    metadata = {"kind": "weights", "mode": mode, "base_fingerprint": image_weights_fingerprint(base)}
    atomic_write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata))
    return path


def apply_adapter(encoder: Encoder, spec: ModelSpec, path: Path) -> Encoder:
    """Load the adapter at ``path`` onto ``encoder`` after checking its base fingerprint; refresh the fingerprint."""
    if not path.is_file():
        raise ModelLoadError(f"model {spec.name!r}: adapter file not found: {path}")
    metadata, tensors = _read_adapter_file(spec, path)
    expected = metadata.get("base_fingerprint")
    actual = image_weights_fingerprint(encoder)
    if expected != actual:
        raise ModelLoadError(
            f"model {spec.name!r}: adapter {path} was made for a base with image weights {expected}, "
            f"but {spec.architecture or spec.weights!r} has {actual}"
        )
    kind = metadata.get("kind", "")
    try:
        ADAPTERS.get(kind)(encoder, tensors, metadata)
    except (ModelLoadError, ValueError, RegistryError) as exc:  # LoraError is a ValueError
        raise ModelLoadError(f"model {spec.name!r}: adapter {path}: {exc}") from None
    weights_fp = tensors_fingerprint(sorted(encoder.image_state().items()))
    encoder.fingerprint = combine(weights_fp, (encoder.info or {}).get("preprocess_fingerprint", ""))
    encoder.info = {**(encoder.info or {}), "adapter": str(path), "adapter_kind": kind}
    return encoder


def _read_adapter_file(spec: ModelSpec, path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Return the metadata and tensors of an adapter file; a malformed file is an error naming it."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}, {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for malformed files
        detail = " ".join(str(exc).split())
        raise ModelLoadError(f"model {spec.name!r}: adapter {path} is not a readable safetensors file ({detail})") from None


def _apply_weights(encoder: Encoder, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    mode = metadata.get("mode", "delta")
    if mode not in ("delta", "replace"):
        raise ModelLoadError(f"weights adapter: unknown mode {mode!r} (expected 'delta' or 'replace')")
    params = dict(encoder.module.state_dict(keep_vars=True))
    for key, value in tensors.items():
        if key not in params:
            raise ModelLoadError(f"weights adapter: key {key!r} is not a parameter of {encoder.name!r}")
        target = params[key]
        if target.shape != value.shape:
            raise ModelLoadError(f"weights adapter: {key!r} has shape {tuple(value.shape)}, "
                                 f"model expects {tuple(target.shape)}")
        with torch.no_grad():
            value = value.to(target.device, target.dtype)
            target.add_(value) if mode == "delta" else target.copy_(value)


ADAPTERS.register("weights", _apply_weights)
ADAPTERS.register_lazy("lora", "overspec.models.lora:apply_lora_adapter")
