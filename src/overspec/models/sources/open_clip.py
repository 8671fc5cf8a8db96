"""Load open_clip models: built-in or custom-JSON architectures with a pretrained tag, a local checkpoint file,
a ``local-dir:`` folder, or a folder a registered producer makes (``world:NAME``, the project's own tiny CLIPs).

Nothing is downloaded unless the weights are a pretrained tag; offline, a tag that is not in the local cache is a
clear error that says how to point at a local file instead (open_clip issues #580, #528).
"""

from __future__ import annotations

import contextlib

from dataclasses import asdict
import json
import logging
import pickle
from pathlib import Path

import open_clip
import torch

from overspec.models.base import Encoder, ModelLoadError
from overspec.models.fingerprint import combine, tensors_fingerprint
from overspec.models.preprocess import build_transform, preprocess_fingerprint
from overspec.models.sources.files import looks_like_path, offline, produced_folder, scheme_of, tag_is_cached
from overspec.config.model import PreprocessSpec, ModelSpec
from overspec.safeload import check_float_parameters, load_torch_checkpoint, state_dict_of, torch_load_error
from overspec.torchscript import TORCHSCRIPT_ONLY_KEYS, is_torchscript_archive, read_torchscript_state_dict

logger = logging.getLogger(__name__)

__all__ = ["as_encoder", "load_open_clip", "load_torchscript_weights", "resolve_architecture",
           "without_random_init_notice"]

#: Longest part of a library's error message quoted (torch lists every missing key of a state dict).
_MAX_DETAIL = 600


def load_open_clip(spec: ModelSpec, *, cache_dir: Path, device: str = "cpu") -> Encoder:
    """Build the open_clip model of ``spec`` with its weights and return it as an :class:`Encoder`."""
    name, pretrained = _resolve_name_and_weights(spec, cache_dir)
    torchscript = bool(pretrained and looks_like_path(pretrained) and is_torchscript_archive(pretrained))
    state = None if torchscript or not _is_local_checkpoint(spec, pretrained) else _checked_local_state(name, pretrained)
    try:
        with without_random_init_notice() if torchscript else contextlib.nullcontext():
            model = open_clip.create_model(
                name, pretrained=None if torchscript else pretrained, force_quick_gelu=spec.quick_gelu, device=device,
                cache_dir=str(cache_dir / "open_clip"), weights_only=True,
                require_pretrained=spec.weights is not None and not torchscript,
            )
    except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) refused a global of a local checkpoint
        raise torch_load_error(pretrained or str(spec.weights), exc) from exc
    except (RuntimeError, FileNotFoundError, ValueError, OSError) as exc:
        raise ModelLoadError(_explain_failure(spec, exc)) from exc
    if torchscript:
        load_torchscript_weights(model, Path(pretrained))
    elif state is not None:
        check_float_parameters(state, model.state_dict(), pretrained)
    model.eval()
    own = _preprocess_from_model(model)
    preprocess = spec.preprocess.over(own) if spec.preprocess else own
    return as_encoder(spec, model, preprocess, _tokenizer(name))


def _is_local_checkpoint(spec: ModelSpec, pretrained: str | None) -> bool:
    """Whether ``pretrained`` is a user's checkpoint file that torch or safetensors reads (not numpy weights)."""
    return bool(pretrained and spec.weights and looks_like_path(spec.weights)
                and not pretrained.endswith((".npz", ".npy")))


def _checked_local_state(name: str, path: str) -> dict[str, torch.Tensor]:
    """Read a local checkpoint safely, refusing what is not a state dict and positional embeddings of the wrong
    width (a transposed one makes open_clip fail with a reshape error that names no key)."""
    state = state_dict_of(load_torch_checkpoint(path), path)
    config = open_clip.get_model_config(name) or {}
    widths = {"visual.positional_embedding": config.get("vision_cfg", {}).get("width"),
              "positional_embedding": config.get("text_cfg", {}).get("width")}
    for key, width in widths.items():
        tensor = state.get(key)
        if width and tensor is not None and (tensor.ndim != 2 or tensor.shape[-1] != width):
            raise ModelLoadError(f"{path}: {key} has shape {tuple(tensor.shape)}, but {name} needs (tokens, {width})"
                                 f"{' (transposed?)' if tensor.ndim == 2 and tensor.shape[0] == width else ''}")
    return state
class _RandomInitNotice(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly" notice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def without_random_init_notice():
    """Silence open_clip's random-initialisation notice while building a model whose weights overspec loads itself
    right after (a TorchScript archive) or trains from scratch on purpose (the tiny CLIPs): the notice would tell
    the user their weights were not used."""
    notice = _RandomInitNotice()
    logging.getLogger().addFilter(notice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(notice)


def load_torchscript_weights(model: torch.nn.Module, path: Path) -> None:
    """Load the tensors of a TorchScript archive (OpenAI's ``ViT-B-16.pt``) strictly into ``model``, running no code.

    The archive's settings entries (``input_resolution``, ...) and the model's derived non-persistent buffers (the
    text attention mask a traced open_clip model stores) are not weights and are left out; any other missing or
    unexpected key is an error naming the file and the keys.
    """
    expected = model.state_dict()
    derived = {name for name, _ in model.named_buffers()} - set(expected)
    state = {k: v for k, v in read_torchscript_state_dict(path).items()
             if k not in TORCHSCRIPT_ONLY_KEYS and k not in derived}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
              for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise ModelLoadError(f"{path}: the TorchScript archive does not fit the architecture: missing keys "
                             f"{missing[:8]}, unexpected keys {unexpected[:8]}, shape mismatches {shapes[:8]}")
    check_float_parameters(state, expected, str(path))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


#: Tokenizers built in this process, by (model name, the model config that decides the tokenizer).
_TOKENIZERS: dict[tuple[str, str], object] = {}


def _tokenizer(name: str):
    """Return open_clip's tokenizer for ``name``, built once per process for the same model config.

    Building the BPE tables takes about 0.1 s, and a study loads many models that share a tokenizer (a base and
    its fine-tunes); tokenizers keep no per-call state. Hub models are not memoised (their config is remote).
    """
    config = _model_config_text(name)
    if config is None:
        return open_clip.get_tokenizer(name)
    key = (name, config)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = open_clip.get_tokenizer(name)
    return _TOKENIZERS[key]


def _model_config_text(name: str) -> str | None:
    """Return the text of the model config ``open_clip.get_tokenizer(name)`` reads, or None for a hub model."""
    if name.startswith("hf-hub:"):
        return None
    if name.startswith("local-dir:"):
        return (Path(name.split(":", 1)[1]) / "open_clip_config.json").read_text(encoding="utf-8")
    return json.dumps(open_clip.get_model_config(name), sort_keys=True, default=str)


def _resolve_name_and_weights(spec: ModelSpec, cache_dir: Path) -> tuple[str, str | None]:
    """Return (open_clip model name, pretrained argument), registering custom configs and produced folders."""
    weights = spec.weights
    if weights and scheme_of(weights):
        return f"local-dir:{produced_folder(spec, cache_dir)}", None
    if weights and weights.startswith("local-dir:"):
        folder = Path(weights.split(":", 1)[1]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise ModelLoadError(
                f"model {spec.name!r}: {folder} is not an open_clip local-dir folder "
                "(expected open_clip_config.json with 'model_cfg' and a weights file such as open_clip_model.safetensors)"
            )
        return f"local-dir:{folder}", None
    architecture = resolve_architecture(spec)
    if open_clip.get_model_config(architecture) is None:
        raise ModelLoadError(f"model {spec.name!r}: unknown open_clip architecture {architecture!r}")
    if weights and looks_like_path(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"model {spec.name!r}: weights file not found: {path}")
        return architecture, str(path)
    if weights and offline() and not tag_is_cached(architecture, weights, cache_dir / "open_clip"):
        raise ModelLoadError(
            f"model {spec.name!r}: pretrained tag {weights!r} of {architecture!r} is not in the local cache "
            f"({cache_dir / 'open_clip'}) and downloads are off (HF_HUB_OFFLINE=1). "
            "Point 'weights' at a local checkpoint file instead."
        )
    return architecture, weights


def resolve_architecture(spec: ModelSpec) -> str:
    """Return the open_clip architecture name of ``spec``, registering its custom JSON config first if it has one."""
    if spec.config_file:
        config = Path(spec.config_file).expanduser()
        if not config.is_file():
            raise ModelLoadError(f"model {spec.name!r}: config_file not found: {config}")
        open_clip.add_model_config(config)
    architecture = spec.architecture or (Path(spec.config_file).stem if spec.config_file else "")
    if not architecture:
        raise ModelLoadError(f"model {spec.name!r}: 'architecture' is required for source {spec.source} "
                             "(e.g. ViT-B-16-quickgelu)")
    return architecture


def _explain_failure(spec: ModelSpec, exc: Exception) -> str:
    """One line saying which model and weights failed and why (torch's key listings collapsed onto that line)."""
    text = " ".join(str(exc).split())[:_MAX_DETAIL] or type(exc).__name__
    if spec.weights and not looks_like_path(spec.weights) and ":" not in spec.weights:
        return (
            f"model {spec.name!r}: pretrained tag {spec.weights!r} of {spec.architecture!r} could not be loaded "
            f"(not in the local cache and no network?): {text}. Point 'weights' at a local checkpoint file instead."
        )
    where = f" {Path(spec.weights).expanduser()}:" if spec.weights and looks_like_path(spec.weights) else ""
    return f"model {spec.name!r}:{where} {text}"


def _preprocess_from_model(model: torch.nn.Module) -> PreprocessSpec:
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return PreprocessSpec(
        size=int(size), mean=tuple(cfg.get("mean", PreprocessSpec.mean)), std=tuple(cfg.get("std", PreprocessSpec.std)),
        interpolation=cfg.get("interpolation", "bicubic"),
        resize_mode="squash" if cfg.get("resize_mode") == "squash" else "shortest",
    )


def as_encoder(spec: ModelSpec, model: torch.nn.Module, preprocess: PreprocessSpec, tokenizer) -> Encoder:
    """Wrap a built open_clip ``model`` as an :class:`Encoder` with its tower fingerprints (also for releases)."""
    image_weights = {k: v for k, v in model.state_dict().items() if k.startswith("visual.")}
    image_fp = combine(tensors_fingerprint(image_weights.items()), preprocess_fingerprint(preprocess))
    text_fn = text_fp = None
    if spec.text:
        text_params = [(k, v) for k, v in model.state_dict().items()
                       if not k.startswith("visual.") and not k.startswith("logit_")]
        context = getattr(tokenizer, "context_length", None)
        text_fp = combine(tensors_fingerprint(text_params), type(tokenizer).__name__, str(context))

        def text_fn(texts):
            tokens = tokenizer(list(texts)).to(next(model.parameters()).device)
            return model.encode_text(tokens)

    scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
    info = {"source": "open_clip", "architecture": spec.architecture, "weights": spec.weights,
            "preprocess": asdict(preprocess), "preprocess_fingerprint": preprocess_fingerprint(preprocess)}
    return Encoder(
        name=spec.name, module=model, preprocess=build_transform(preprocess), image_fn=model.encode_image,
        fingerprint=image_fp, text_fn=text_fn, text_fingerprint=text_fp, logit_scale=scale, info=info,
        image_prefixes=("visual.",),
    )
