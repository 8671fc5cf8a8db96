"""Model presets and model sources: name → spec (YAML files in ``presets/``) and source kind → loader."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from overspec.config.typed import from_dict, load_yaml
from overspec.models.base import Encoder, ModelLoadError
from overspec.config.model import ModelSpec
from overspec.registry import Registry

__all__ = ["SOURCES", "model_presets", "register_preset_file", "resolve_spec", "load_model"]

PRESET_DIR = Path(__file__).parent / "presets"

SOURCES: Registry = Registry("model source")
SOURCES.register_lazy("open_clip", "overspec.models.sources.open_clip:load_open_clip")
SOURCES.register_lazy("hf", "overspec.models.sources.hf:load_hf")
SOURCES.register_lazy("timm", "overspec.models.sources.timm:load_timm")
SOURCES.register_lazy("published", "overspec.models.published:load_published")


@functools.cache
def model_presets() -> Registry[ModelSpec]:
    """Return the registry of shipped model presets, read once from ``models/presets/*.yaml``."""
    presets: Registry[ModelSpec] = Registry("model")
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        register_preset_file(path, presets)
    return presets


def register_preset_file(path: Path, presets: Registry[ModelSpec] | None = None) -> ModelSpec:
    """Read one preset YAML (relative ``config_file`` resolved against it) and register it."""
    data = load_yaml(path) or {}
    if isinstance(data, dict) and data.get("config_file"):
        data = {**data, "config_file": str((Path(path).parent / data["config_file"]).resolve())}
    spec = from_dict(ModelSpec, data, where=str(path))
    (presets if presets is not None else model_presets()).register(spec.name, spec)
    return spec


def resolve_spec(model: str | ModelSpec) -> ModelSpec:
    """Return the spec of a preset name, or ``model`` itself when it is already a spec."""
    return model if isinstance(model, ModelSpec) else model_presets().get(model)


def load_model(model: str | ModelSpec, *, cache_dir: Path, device: str = "cpu") -> Encoder:
    """Build the encoder for a preset name or spec, applying its adapter and weight-space combination if named."""
    spec = resolve_spec(model)
    encoder = SOURCES.get(spec.source)(spec, cache_dir=Path(cache_dir), device=device)
    if spec.adapter:
        from overspec.models.adapters import apply_adapter

        encoder = apply_adapter(encoder, spec, Path(spec.adapter).expanduser())
    if spec.combine:
        from overspec.models.arithmetic import apply_combination

        encoder = apply_combination(encoder, spec, lambda term: load_model(term.model, cache_dir=cache_dir,
                                                                            device=device))
    if spec.head and encoder.head is None:  # a source that converts its own head format sets it itself
        from overspec.models.heads import load_binary_head

        encoder.head = load_binary_head(Path(spec.head).expanduser())
        _check_head_width(encoder, spec.head)
    return encoder


def embedding_width(encoder: Encoder) -> int:
    """Width of ``encoder``'s image embeddings, measured on one blank image of its input size."""
    size = (encoder.info or {}).get("preprocess", {}).get("size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)[-2:]
    with torch.inference_mode():
        return int(encoder.encode_image(torch.zeros(1, 3, int(height), int(width), device=encoder.device)).shape[-1])


def _check_head_width(encoder: Encoder, head_path: str) -> None:
    """Refuse a binary head whose input width is not the model's embedding width (it would fail only when scoring)."""
    width = embedding_width(encoder)
    if encoder.head.dim != width:
        raise ModelLoadError(f"model {encoder.name!r}: head {head_path} takes embeddings of width {encoder.head.dim}, "
                             f"but the model's are {width} wide")
