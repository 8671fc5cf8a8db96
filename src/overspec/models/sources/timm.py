"""Image-only encoders built with timm from a local weights file (no text tower: linear probe only).

Typical for face-recognition backbones and for comparing a CLIP image tower against a supervised one.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from overspec.models.base import Encoder, ModelLoadError
from overspec.models.fingerprint import combine, tensors_fingerprint
from overspec.models.preprocess import build_transform, preprocess_fingerprint
from overspec.config.model import ModelSpec, PreprocessSpec

__all__ = ["load_timm"]


def load_timm(spec: ModelSpec, *, cache_dir: Path, device: str = "cpu") -> Encoder:
    """Build ``timm.create_model(spec.architecture, num_classes=0)`` and load ``spec.weights`` (a local file)."""
    import timm

    if not spec.architecture:
        raise ModelLoadError(f"model {spec.name!r}: 'architecture' is required for source timm")
    try:
        model = timm.create_model(spec.architecture, pretrained=False, num_classes=0, **spec.options)
    except RuntimeError as exc:
        raise ModelLoadError(f"model {spec.name!r}: {exc}") from exc
    if spec.weights:
        _load_weights(spec, model, Path(spec.weights).expanduser())
    model = model.to(device).eval()
    own = _preprocess_from_timm(model)
    preprocess = spec.preprocess.over(own) if spec.preprocess else own
    fingerprint = combine(tensors_fingerprint(model.state_dict().items()), preprocess_fingerprint(preprocess))
    return Encoder(
        name=spec.name, module=model, preprocess=build_transform(preprocess), image_fn=model,
        fingerprint=fingerprint, info={"source": "timm", "architecture": spec.architecture,
                                       "weights": spec.weights, "preprocess": asdict(preprocess),
                                       "preprocess_fingerprint": preprocess_fingerprint(preprocess)},
    )


def _load_weights(spec: ModelSpec, model: torch.nn.Module, path: Path) -> None:
    from overspec.safeload import check_float_parameters, load_torch_checkpoint, state_dict_of

    if not path.is_file():
        raise ModelLoadError(f"model {spec.name!r}: weights file not found: {path}")
    state = state_dict_of(load_torch_checkpoint(path), path)
    check_float_parameters(state, model.state_dict(), path)
    _check_shapes(spec, model, state, path)
    result = model.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.startswith(("fc.", "head.", "classifier."))]
    if result.missing_keys or unexpected:
        raise ModelLoadError(
            f"model {spec.name!r}: {path} does not match {spec.architecture!r}: "
            f"missing keys {result.missing_keys[:10]}, unexpected keys {unexpected[:10]}"
        )


def _check_shapes(spec: ModelSpec, model: torch.nn.Module, state: dict, path: Path) -> None:
    """Refuse weights of another architecture in one line naming the file (torch would list every shape)."""
    own = model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape]
    if mismatched:
        raise ModelLoadError(f"model {spec.name!r}: {path} holds weights of another architecture than "
                             f"{spec.architecture!r}: {len(mismatched)} shape mismatches {mismatched[:5]}")


def _preprocess_from_timm(model: torch.nn.Module) -> PreprocessSpec:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    size = cfg.get("input_size", (3, 224, 224))[-1]
    return PreprocessSpec(
        size=int(size), mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))), interpolation=cfg.get("interpolation", "bicubic")
        if cfg.get("interpolation") in ("bicubic", "bilinear", "nearest") else "bicubic",
    )
