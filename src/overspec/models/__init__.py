"""Models: specs and presets, loaders per source (open_clip, transformers, timm), adapters and fingerprints."""

from overspec.models.base import Encoder, ModelLoadError
from overspec.models.registry import SOURCES, load_model, model_presets, resolve_spec
from overspec.config.model import ModelSpec, PreprocessSpec

__all__ = ["Encoder", "ModelLoadError", "ModelSpec", "PreprocessSpec", "SOURCES", "load_model", "model_presets",
           "resolve_spec"]
