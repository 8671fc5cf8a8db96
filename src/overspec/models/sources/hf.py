"""Load Hugging Face ``transformers`` CLIP and SigLIP models from a local directory (never from the Hub).

The folder is what ``save_pretrained`` writes: ``config.json``, weights, tokenizer files and
``preprocessor_config.json`` (from which mean, std, size and interpolation are read unless the spec overrides them).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from overspec.models.base import Encoder, ModelLoadError
from overspec.models.fingerprint import combine, tensors_fingerprint
from overspec.models.preprocess import build_transform, preprocess_fingerprint
from overspec.config.model import ModelSpec, PreprocessSpec
from overspec.safeload import UnreadableFileError

__all__ = ["load_hf", "has_tokenizer_files"]

_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
_IMAGE_PREFIXES = ("vision_model.", "visual_projection.")
#: Files that each hold a whole tokenizer (fast tokenizers, SentencePiece models, WordPiece vocabularies).
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model", "vocab.txt")


def load_hf(spec: ModelSpec, *, cache_dir: Path, device: str = "cpu") -> Encoder:
    """Build a ``transformers`` CLIP/SigLIP model from the local folder ``spec.weights`` as an :class:`Encoder`."""
    folder = Path(spec.weights or "").expanduser()
    if not spec.weights or not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"model {spec.name!r}: source 'hf' needs 'weights' to be a local transformers folder with config.json "
            f"(got {spec.weights!r})"
        )
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise ModelLoadError(f"model {spec.name!r}: install the 'hf' extra (pip install overspec[hf])") from exc
    if spec.text and not has_tokenizer_files(folder):
        raise ModelLoadError(
            f"model {spec.name!r}: {folder} has no tokenizer files ({', '.join(_TOKENIZER_FILES)} or vocab.json with "
            "merges.txt), so zero-shot is not possible; set text: false to use the image tower only"
        )
    model = AutoModel.from_pretrained(folder, local_files_only=True).to(device).eval()
    _check_stored_dtypes(folder, model.state_dict())
    if not hasattr(model, "get_image_features"):
        raise ModelLoadError(f"model {spec.name!r}: {folder} holds a {type(model).__name__}, not a CLIP-like model")
    own = _preprocess_from_folder(folder, model)
    preprocess = spec.preprocess.over(own) if spec.preprocess else own
    image_fp = combine(
        tensors_fingerprint((k, v) for k, v in model.state_dict().items() if k.startswith(_IMAGE_PREFIXES)),
        preprocess_fingerprint(preprocess),
    )
    text_fn = text_fp = None
    if spec.text:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        padding = "max_length" if "siglip" in type(model).__name__.lower() else True
        text_fp = combine(
            tensors_fingerprint((k, v) for k, v in model.state_dict().items()
                                if not k.startswith(_IMAGE_PREFIXES) and not k.startswith("logit_")),
            type(tokenizer).__name__, str(tokenizer.model_max_length),
        )

        def text_fn(texts):
            batch = tokenizer(list(texts), padding=padding, truncation=True, return_tensors="pt").to(model.device)
            return _as_tensor(model.get_text_features(**batch))

    scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
    return Encoder(
        name=spec.name, module=model, preprocess=build_transform(preprocess),
        image_fn=lambda x: _as_tensor(model.get_image_features(pixel_values=x)), fingerprint=image_fp,
        text_fn=text_fn, text_fingerprint=text_fp, logit_scale=scale,
        info={"source": "hf", "class": type(model).__name__, "weights": str(folder), "preprocess": asdict(preprocess),
              "preprocess_fingerprint": preprocess_fingerprint(preprocess)},
        image_prefixes=_IMAGE_PREFIXES,
    )


def _check_stored_dtypes(folder: Path, expected: dict[str, torch.Tensor]) -> None:
    """Refuse safetensors weights stored as integers for float parameters (transformers casts them silently)."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                target, stored = expected.get(key), handle.get_slice(key).get_dtype()
                if target is not None and target.is_floating_point() and not stored.startswith(("F", "BF")):
                    raise UnreadableFileError(f"{path}: {key} is stored as {stored} but the model's parameter is "
                                              f"{str(target.dtype).removeprefix('torch.')}; integer weights are "
                                              "refused (a quantised or damaged checkpoint?)")
def has_tokenizer_files(folder: Path) -> bool:
    """Whether a transformers folder holds a tokenizer (zero-shot needs one; ``save_pretrained`` of a model alone
    does not write it)."""
    names = {path.name for path in Path(folder).iterdir()} if Path(folder).is_dir() else set()
    return bool(names & set(_TOKENIZER_FILES)) or {"vocab.json", "merges.txt"} <= names


def _as_tensor(output) -> torch.Tensor:
    """Newer transformers return a model output object from ``get_*_features``; take its pooled embedding."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, key, None)
        if value is not None:
            return value
    raise TypeError(f"unexpected output type from transformers model: {type(output).__name__}")


def _preprocess_from_folder(folder: Path, model) -> PreprocessSpec:
    path = folder / "preprocessor_config.json"
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    size = cfg.get("crop_size") or cfg.get("size") or model.config.vision_config.image_size
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    squash = "crop_size" not in cfg and bool(cfg)
    return PreprocessSpec(
        size=int(size), mean=tuple(cfg.get("image_mean", PreprocessSpec.mean)),
        std=tuple(cfg.get("image_std", PreprocessSpec.std)),
        interpolation=_RESAMPLE.get(cfg.get("resample", 3), "bicubic"),
        resize_mode="squash" if squash else "shortest",
    )
