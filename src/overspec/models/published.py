"""Converters for the released FRoundation, MADation and FoundPAD checkpoints (study.md §6).

The released backbone file is a whole OpenAI-CLIP state dict in which every visual attention is split into
``q_proj`` / ``k_proj`` / ``v_proj`` / ``proj`` Linears, ``q_proj`` and ``v_proj`` carrying ``w_lora_A`` (r × W) and
``w_lora_B`` (W × r). Alpha and the scaling rule are stored nowhere, so they come from a named preset
(:data:`LORA_PRESETS`, each with its source) or explicit options; a checkpoint with LoRA tensors and no scaling is
an error, never a silent default. Loading: merge ``W ← W + s·λ·B·A`` per projection, fuse q/k/v into
``in_proj_weight`` and ``proj`` into ``out_proj`` (study.md §6.4), then load strictly into an open_clip model.
The ``<epoch>_header.pth`` head (``linear.weight`` (2, D), ``linear.bias`` (2,)) becomes a :class:`BinaryHead`.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import open_clip
import torch

from overspec.models.base import Encoder, ModelLoadError
from overspec.models.heads import BinaryHead, load_binary_head
from overspec.models.preprocess import preprocess_fingerprint
from overspec.config.model import OPENAI_MEAN, OPENAI_STD, ModelSpec, PreprocessSpec
from overspec.safeload import check_float_parameters, load_torch_checkpoint

logger = logging.getLogger(__name__)

__all__ = [
    "PublishedLora",
    "LORA_PRESETS",
    "PREPROCESS_PROFILES",
    "ConversionInfo",
    "read_published_checkpoint",
    "infer_lora_rank",
    "resolve_lora_scaling",
    "convert_published_state_dict",
    "released_spelling",
    "check_against_base",
    "load_published_backbone",
    "load_published_head",
    "load_published",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Per-model preprocessing of biometric inputs (study.md §7).
PREPROCESS_PROFILES: dict[str, PreprocessSpec] = {
    "openai-clip": PreprocessSpec(224, OPENAI_MEAN, OPENAI_STD, "bicubic", "shortest", "RGB"),
    "froundation": PreprocessSpec(224, OPENAI_MEAN, OPENAI_STD, "bicubic", "squash", "RGB"),
    "madation": PreprocessSpec(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", "squash", "BGR"),
    "foundpad": PreprocessSpec(224, IMAGENET_MEAN, IMAGENET_STD, "bilinear", "squash", "RGB"),
}


@dataclass(frozen=True)
class PublishedLora:
    """LoRA hyper-parameters a released checkpoint was trained with (not stored in the file), and their source."""

    rank: int
    alpha: float
    rule: str
    dropout: float
    profile: str
    source: str

    @property
    def scaling(self) -> float:
        """``alpha/sqrt(rank)`` for rule ``rslora``, ``alpha/rank`` for ``standard``."""
        return _scaling(self.alpha, self.rank, self.rule)


#: study.md §6.5. rsLoRA since FRoundation commit e58de4e (2025-04-20) and in the MADation / FoundPAD copies.
LORA_PRESETS: dict[str, PublishedLora] = {
    "froundation": PublishedLora(
        16, 32.0, "rslora", 0.25, "froundation",
        "FRoundation README usage example (alpha 32 since Nov 2024), author's answer in FRoundation issue #1, "
        "rsLoRA fix e58de4e; documented for CLIP ViT-B/16 WebFace4M, assumed for the other released sets"),
    "froundation-pre-rslora-fix": PublishedLora(
        16, 32.0, "standard", 0.25, "froundation",
        "FRoundation public code before e58de4e applied alpha/r (s = 2); only for models trained with that code"),
    "madation-b16": PublishedLora(2, 4.0, "rslora", 0.4, "madation", "MADation paper (WACV-W 2025) and train.sh"),
    "madation-l14": PublishedLora(2, 8.0, "rslora", 0.2, "madation", "MADation paper (WACV-W 2025) and train.sh"),
    "foundpad": PublishedLora(8, 8.0, "rslora", 0.4, "foundpad", "FoundPAD paper (WACV-W 2025) and code defaults"),
}

_OPTION_KEYS = ("lora_preset", "lora_alpha", "lora_rule", "lora_scaling", "lora_strength", "preprocess_profile")
_SPLIT_KEY = re.compile(r"^(visual\.transformer\.resblocks\.\d+\.attn)\.(q_proj|k_proj|v_proj|proj)\."
                        r"(weight|bias|w_lora_A|w_lora_B)$")
_FUSED_ATTN = re.compile(r"^(visual\.transformer\.resblocks\.\d+\.attn)\.(in_proj_weight|in_proj_bias|"
                         r"out_proj\.weight|out_proj\.bias)$")
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "proj")


@dataclass(frozen=True)
class ConversionInfo:
    """What a conversion found and applied: LoRA rank, adapted projections, scaling and strength."""

    rank: int | None
    blocks: int
    adapted: tuple[str, ...]
    scaling: float | None
    strength: float


def _scaling(alpha: float, rank: int, rule: str) -> float:
    if rule not in ("rslora", "standard"):
        raise ModelLoadError(f"lora_rule must be 'rslora' (alpha/sqrt(r)) or 'standard' (alpha/r), got {rule!r}")
    return float(alpha) / (math.sqrt(rank) if rule == "rslora" else rank)


def read_published_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Load a released ``.pth`` safely (weights_only), strip a ``module.`` prefix, and check it holds tensors only."""
    path = Path(path)
    state = load_torch_checkpoint(path, map_location="cpu")
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: expected a state dict (a dict of tensors), got {type(state).__name__}")
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ModelLoadError(f"{path}: entries that are not tensors: {not_tensors[:8]} (expected a flat state dict)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def infer_lora_rank(state: dict[str, torch.Tensor]) -> int | None:
    """The LoRA rank of a released state dict (``w_lora_A.shape[0]``), checked equal in every layer; None if absent."""
    ranks: dict[int, list[str]] = {}
    for key, value in state.items():
        if key.endswith((".w_lora_A", ".w_lora_B")):
            if value.ndim != 2:
                raise ModelLoadError(f"LoRA tensor {key} has shape {tuple(value.shape)}; expected a matrix")
            rank = value.shape[0] if key.endswith("_A") else value.shape[1]
            ranks.setdefault(int(rank), []).append(key)
    if len(ranks) > 1:
        detail = "; ".join(f"rank {r}: {sorted(keys)[:3]}" for r, keys in sorted(ranks.items()))
        raise ModelLoadError(f"inconsistent LoRA ranks across layers: {detail}")
    return next(iter(ranks), None)


def resolve_lora_scaling(options: dict, rank: int | None) -> tuple[float | None, str]:
    """The scaling ``s`` from ``lora_preset``, ``lora_alpha`` (+ ``lora_rule``) or ``lora_scaling``, with its origin.

    A preset's rank must match the checkpoint's, so a wrong preset is caught before it silently changes accuracy.
    """
    unknown = sorted(set(options) - set(_OPTION_KEYS))
    if unknown:
        raise ModelLoadError(f"unknown options {unknown} for source 'published' (known: {list(_OPTION_KEYS)})")
    given = [k for k in ("lora_preset", "lora_alpha", "lora_scaling") if k in options]
    if len(given) > 1:
        raise ModelLoadError(f"options {given} conflict: give one of lora_preset, lora_alpha or lora_scaling")
    if rank is None:
        return None, "no LoRA tensors in the checkpoint"
    if not given:
        raise ModelLoadError("the checkpoint has LoRA tensors but alpha and scaling are not stored in it: set "
                             f"options.lora_preset (one of {sorted(LORA_PRESETS)}), lora_alpha or lora_scaling")
    if "lora_preset" in options:
        name = options["lora_preset"]
        if name not in LORA_PRESETS:
            raise ModelLoadError(f"unknown lora_preset {name!r}; known: {sorted(LORA_PRESETS)}")
        preset = LORA_PRESETS[name]
        if preset.rank != rank:
            raise ModelLoadError(f"lora_preset {name!r} is for rank {preset.rank}, but the checkpoint has rank {rank}")
        return preset.scaling, f"preset {name} (alpha {preset.alpha}, {preset.rule}; {preset.source})"
    if "lora_alpha" in options:
        rule = options.get("lora_rule", "rslora")
        return _scaling(float(options["lora_alpha"]), rank, rule), f"alpha {options['lora_alpha']}, {rule}"
    return float(options["lora_scaling"]), "explicit lora_scaling"


def _expected_released_keys(model_state: dict[str, torch.Tensor]) -> set[str]:
    """Keys a released checkpoint must hold for ``model_state`` (fused visual attention spelt as split Linears)."""
    keys = set()
    for key in model_state:
        match = _FUSED_ATTN.match(key)
        if not match:
            keys.add(key)
            continue
        prefix = match.group(1)
        keys |= {f"{prefix}.{proj}.{part}" for proj in _PROJECTIONS for part in ("weight", "bias")}
    return keys


def _merged_weight(state: dict[str, torch.Tensor], base: str, scaling: float | None, strength: float) -> torch.Tensor:
    """``weight + s·λ·B·A`` of one split projection (just ``weight`` when it carries no LoRA)."""
    weight = state[f"{base}.weight"].float()
    a, b = state.get(f"{base}.w_lora_A"), state.get(f"{base}.w_lora_B")
    if a is None and b is None:
        return weight
    if a is None or b is None:
        present, absent = ("w_lora_A", "w_lora_B") if a is not None else ("w_lora_B", "w_lora_A")
        raise ModelLoadError(f"{base}: has {present} without its partner: missing key {base}.{absent}")
    if a.shape[1] != weight.shape[1] or b.shape[0] != weight.shape[0] or a.shape[0] != b.shape[1]:
        raise ModelLoadError(f"{base}: w_lora_A {tuple(a.shape)} and w_lora_B {tuple(b.shape)} do not fit "
                             f"weight {tuple(weight.shape)}")
    return weight + (b.double() @ a.double()).float() * (scaling * strength)


def convert_published_state_dict(state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor], *,
                                 scaling: float | None, strength: float = 1.0) -> tuple[dict, ConversionInfo]:
    """Merge the LoRA tensors and fuse the split attention of ``state`` into the keys of ``model_state``.

    Strict: missing and unexpected keys (in the released spelling) and shape mismatches are errors naming them.
    """
    rank = infer_lora_rank(state)
    if rank is not None and scaling is None:
        raise ModelLoadError("the checkpoint has LoRA tensors; a scaling is required to merge them")
    expected = _expected_released_keys(model_state)
    lora_keys = {k for k in state if k.endswith((".w_lora_A", ".w_lora_B")) and _SPLIT_KEY.match(k)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected - lora_keys)
    if missing or unexpected:
        hint = (" (this looks like a fused open_clip/OpenAI checkpoint: use source open_clip)"
                if any(_FUSED_ATTN.match(k) for k in unexpected) else "")
        raise ModelLoadError(f"checkpoint does not match the architecture: missing keys {_listing(missing)}, "
                             f"unexpected keys {_listing(unexpected)}{hint}")
    _check_lora_coverage(state, sorted({m.group(1) for k in model_state if (m := _FUSED_ATTN.match(k))}))
    converted: dict[str, torch.Tensor] = {}
    for key in model_state:
        match = _FUSED_ATTN.match(key)
        if not match:
            converted[key] = state[key]
            continue
        prefix, part = match.groups()
        if part == "in_proj_weight":
            converted[key] = torch.cat([_merged_weight(state, f"{prefix}.{p}", scaling, strength)
                                        for p in ("q_proj", "k_proj", "v_proj")])
        elif part == "in_proj_bias":
            converted[key] = torch.cat([state[f"{prefix}.{p}.bias"] for p in ("q_proj", "k_proj", "v_proj")])
        elif part == "out_proj.weight":
            converted[key] = _merged_weight(state, f"{prefix}.proj", scaling, strength)
        else:
            converted[key] = state[f"{prefix}.proj.bias"]
    adapted = {_SPLIT_KEY.match(k).group(2) for k in lora_keys}
    mismatched = [f"{k} {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
                  for k, v in converted.items() if v.shape != model_state[k].shape]
    if mismatched:
        raise ModelLoadError(f"checkpoint shapes do not match the architecture: {_listing(mismatched)}")
    blocks = len({m.group(1) for k in model_state if (m := _FUSED_ATTN.match(k))})
    info = ConversionInfo(rank, blocks, tuple(sorted(adapted)), scaling, float(strength))
    return converted, info


def _adapted_projections(state: dict[str, torch.Tensor]) -> set[tuple[str, str]]:
    """(attention prefix, projection) of every split projection that carries a LoRA tensor."""
    found = set()
    for key in state:
        match = _SPLIT_KEY.match(key)
        if match and match.group(3).startswith("w_lora_"):
            found.add((match.group(1), match.group(2)))
    return found


def _check_lora_coverage(state: dict[str, torch.Tensor], prefixes: list[str]) -> None:
    """Refuse a checkpoint in which a projection lacks the LoRA the same projection of other blocks carries.

    Such a block would be evaluated unadapted without any error; a lone ``w_lora_A`` or ``w_lora_B`` names the
    missing partner key.
    """
    adapted = _adapted_projections(state)
    names = sorted({proj for _, proj in adapted})
    bare = []
    for prefix in prefixes:
        for proj in names:
            base = f"{prefix}.{proj}"
            present = [part for part in ("w_lora_A", "w_lora_B") if f"{base}.{part}" in state]
            if len(present) == 1:
                absent = "w_lora_B" if present == ["w_lora_A"] else "w_lora_A"
                raise ModelLoadError(f"{base}: has {present[0]} without its partner: missing key {base}.{absent}")
            if not present:
                bare.append(base)
    if bare:
        raise ModelLoadError(f"LoRA missing on {_listing(bare)} (no w_lora_A / w_lora_B) while other blocks adapt "
                             f"{', '.join(names)}: those projections would run unadapted")


def released_spelling(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A fused open_clip state dict spelt as a released checkpoint (visual attention as q/k/v/proj Linears)."""
    spelt = {}
    for key, value in model_state.items():
        match = _FUSED_ATTN.match(key)
        if not match:
            spelt[key] = value
            continue
        prefix, part = match.groups()
        if part.startswith("in_proj_"):
            kind = "weight" if part == "in_proj_weight" else "bias"
            spelt.update({f"{prefix}.{p}.{kind}": c for p, c in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3))})
        else:
            spelt[f"{prefix}.proj.{part.split('.')[1]}"] = value
    return spelt


def check_against_base(state: dict[str, torch.Tensor], base_state: dict[str, torch.Tensor], base_name: str) -> None:
    """Refuse a released ``state`` that does not sit on ``base_state`` (a fused open_clip state dict).

    Frozen visual weights must equal the base's (else: a wrong base model); an adapted q/v weight that differs while
    its ``w_lora_B`` is non-zero means the checkpoint was saved merged, and merging again would double the delta.
    """
    base = released_spelling(base_state)
    adapted = {f"{prefix}.{proj}.weight" for prefix, proj in _adapted_projections(state)}
    changed = sorted(k for k in state if k.startswith("visual.") and not k.endswith((".w_lora_A", ".w_lora_B"))
                     and not _same(state[k], base.get(k)))
    merged = [k for k in changed if k in adapted and _has_delta(state, k[: -len(".weight")])]
    wrong = [k for k in changed if k not in merged]
    if wrong:
        raise ModelLoadError(f"{len(wrong)} frozen visual weights differ from base model {base_name!r} "
                             f"(a checkpoint of another base?): {_listing(wrong)}")
    if merged:
        raise ModelLoadError(f"already merged: {_listing(merged)} differ from base model {base_name!r} while the "
                             "checkpoint also holds their LoRA tensors (merging again would apply the delta twice)")


def _has_delta(state: dict[str, torch.Tensor], projection: str) -> bool:
    """Whether a projection's LoRA adds anything (``w_lora_B`` present and not all zero)."""
    b = state.get(f"{projection}.w_lora_B")
    return b is not None and bool(b.any())


def _same(value: torch.Tensor, base: torch.Tensor | None) -> bool:
    """Whether a checkpoint tensor equals the base's (both float32 copies of the same values; no training drift)."""
    if base is None or value.shape != base.shape:
        return False
    return torch.allclose(value.float(), base.float(), rtol=1e-5, atol=1e-6)


def _listing(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', … ({len(items)} in all)' if len(items) > limit else ''}]"


def load_published_backbone(model: torch.nn.Module, path: Path, *, scaling: float | None,
                            strength: float = 1.0) -> ConversionInfo:
    """Read a released backbone file and load it, merged and fused, into the open_clip ``model`` (in place)."""
    return _load_state_into(model, read_published_checkpoint(path), path, scaling=scaling, strength=strength)


def _load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, *,
                     scaling: float | None, strength: float) -> ConversionInfo:
    model_state = model.state_dict()
    try:
        converted, info = convert_published_state_dict(state, model_state, scaling=scaling, strength=strength)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None
    check_float_parameters(state, _released_dtypes(model_state), path)
    model.load_state_dict({k: v.to(model_state[k].dtype) for k, v in converted.items()}, strict=True)
    return info


def _released_dtypes(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's tensors by released key spelling too (a split q/k/v projection stands for its fused parameter)."""
    spelt = dict(model_state)
    for key, tensor in model_state.items():
        match = _FUSED_ATTN.match(key)
        if match:
            prefix = match.group(1)
            spelt.update({f"{prefix}.{proj}.{part}": tensor for proj in _PROJECTIONS for part in ("weight", "bias")})
    return spelt


def load_published_head(path: Path) -> BinaryHead:
    """A ``<epoch>_header.pth`` (``linear.weight``, ``linear.bias``) or an overspec safetensors head → BinaryHead."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_binary_head(path)
    state = read_published_checkpoint(path)
    if set(state) != {"linear.weight", "linear.bias"}:
        raise ModelLoadError(f"{path}: a released header has keys ['linear.bias', 'linear.weight'], "
                             f"got {sorted(state)}")
    try:
        return BinaryHead(state["linear.weight"].float(), state["linear.bias"].float(), normalise_input=True)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None


def _check_quick_gelu(spec: ModelSpec, architecture: str) -> None:
    config = open_clip.get_model_config(architecture)
    if config is None:
        raise ModelLoadError(f"model {spec.name!r}: unknown open_clip architecture {architecture!r}")
    if not (spec.quick_gelu or config.get("quick_gelu", False)):
        raise ModelLoadError(f"model {spec.name!r}: the released checkpoints are OpenAI CLIP (QuickGELU); "
                             f"architecture {architecture!r} uses GELU: use a -quickgelu config or quick_gelu: true")


def _profile_for(spec: ModelSpec, architecture: str) -> PreprocessSpec:
    """The named profile (else the LoRA preset's, else OpenAI CLIP's) at the architecture's image size, with the
    keys the spec's own ``preprocess`` names put over it."""
    preset = LORA_PRESETS.get(spec.options.get("lora_preset", ""))
    name = spec.options.get("preprocess_profile") or (preset.profile if preset else "openai-clip")
    if name not in PREPROCESS_PROFILES:
        raise ModelLoadError(f"model {spec.name!r}: unknown preprocess_profile {name!r}; "
                             f"known: {sorted(PREPROCESS_PROFILES)}")
    profile = replace(PREPROCESS_PROFILES[name], size=_image_size(architecture))
    return spec.preprocess.over(profile) if spec.preprocess is not None else profile


def _image_size(architecture: str) -> int:
    """The input size of an open_clip architecture (336 for ViT-L-14-336), read from its config."""
    size = (open_clip.get_model_config(architecture) or {}).get("vision_cfg", {}).get("image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _architecture(spec: ModelSpec) -> str:
    from overspec.models.sources.open_clip import resolve_architecture

    return resolve_architecture(spec)


def _weights_path(spec: ModelSpec) -> Path:
    if not spec.weights:
        raise ModelLoadError(f"model {spec.name!r}: 'weights' must name the released backbone .pth file")
    path = Path(spec.weights).expanduser()
    if not path.is_file():
        where = f" (not bundled; obtain it as the preset says: {spec.reference})" if spec.reference else ""
        raise ModelLoadError(f"model {spec.name!r}: weights file not found: {path}{where}")
    return path


def load_published(spec: ModelSpec, *, cache_dir: Path, device: str = "cpu") -> Encoder:
    """Build an open_clip model with a released FRoundation / MADation / FoundPAD checkpoint merged into it.

    ``spec.options``: ``lora_preset`` or ``lora_alpha`` (+ ``lora_rule``) or ``lora_scaling``; ``lora_strength``
    (λ, default 1); ``preprocess_profile``. ``spec.head`` (a ``_header.pth`` or safetensors head) sets
    ``encoder.head``.
    """
    from overspec.models.sources.open_clip import as_encoder

    architecture = _architecture(spec)
    _check_quick_gelu(spec, architecture)
    path = _weights_path(spec)
    options = dict(spec.options)
    try:
        state = read_published_checkpoint(path)
        scaling, origin = resolve_lora_scaling(options, infer_lora_rank(state))
        _check_base(spec, state, path, cache_dir)
        model = open_clip.create_model(architecture, pretrained=None, force_quick_gelu=spec.quick_gelu)
        info = _load_state_into(model, state, path, scaling=scaling,
                                strength=float(options.get("lora_strength", 1.0)))
    except ModelLoadError as exc:
        raise ModelLoadError(f"model {spec.name!r}: {exc}") from None
    del state
    model.to(device).eval()
    preprocess = _profile_for(spec, architecture)
    encoder = as_encoder(spec, model, preprocess, open_clip.get_tokenizer(architecture))
    encoder.info = {**encoder.info, "source": "published", "checkpoint": str(path), "lora": {
        **asdict(info), "adapted": list(info.adapted), "scaling_from": origin}, "preprocess_fingerprint": preprocess_fingerprint(preprocess)}
    if spec.head:
        encoder.head = _head_for(spec, model)
    logger.info("loaded %s from %s (LoRA rank %s, scaling %s)", spec.name, path, info.rank, info.scaling)
    return encoder


def _check_base(spec: ModelSpec, state: dict[str, torch.Tensor], path: Path, cache_dir: Path) -> None:
    """Compare ``state`` with the spec's base model when that base is a preset whose weights are at hand."""
    base_state = _base_state(spec, cache_dir)
    if base_state is None:
        return
    try:
        check_against_base(state, base_state, str(spec.base))
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None


def _base_state(spec: ModelSpec, cache_dir: Path) -> dict[str, torch.Tensor] | None:
    """The state dict of ``spec.base`` (an open_clip preset with weights on hand), or None when it cannot be had."""
    from overspec.models.registry import load_model, model_presets

    if not spec.base:
        return None
    if spec.base not in model_presets():
        logger.info("model %r: base %r is not a registered preset; not compared with it", spec.name, spec.base)
        return None
    base = model_presets().get(spec.base)
    problem = _base_unavailable(base, cache_dir)
    if problem:
        logger.warning("model %r: not compared with its base %r: %s", spec.name, spec.base, problem)
        return None
    return load_model(base, cache_dir=cache_dir).module.state_dict()


def _base_unavailable(base: ModelSpec, cache_dir: Path) -> str:
    """Why the base preset's weights cannot serve as the reference (not open_clip, no weights, not at hand), or ''."""
    from overspec.models.sources.files import weights_problem

    if base.source != "open_clip":
        return f"its source is {base.source!r}, not open_clip"
    if not base.weights:
        return "it has no weights"
    return weights_problem(base, cache_dir)


def _head_for(spec: ModelSpec, model: torch.nn.Module) -> BinaryHead:
    head = load_published_head(Path(spec.head).expanduser())
    width = int(getattr(model.visual, "output_dim", head.dim))
    if head.dim != width:
        raise ModelLoadError(f"model {spec.name!r}: head {spec.head} expects {head.dim}-d embeddings, "
                             f"the image tower gives {width}")
    return head
