"""Typed description of a model: where its weights come from and how images must be fed to it.

A spec is what a preset YAML (``models/presets/*.yaml``) or a run config holds; :func:`overspec.models.load_model`
turns it into an :class:`~overspec.models.base.Encoder`. Preprocessing travels with the weights (STYLE habit 5).
"""

from __future__ import annotations

import math
import os

from dataclasses import asdict, dataclass, field, fields, replace

from overspec.config.typed import check_path_component
from overspec.errors import InputError

__all__ = ["CombineTerm", "PreprocessSpec", "ModelSpec", "OPENAI_MEAN", "OPENAI_STD", "INTERPOLATIONS", "looks_like_path",
           "spec_as_config"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


def looks_like_path(weights: str) -> bool:
    """Whether a spec's weights string names a file or folder rather than a pretrained tag."""
    return os.sep in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors", ".npz"))


@dataclass(frozen=True)
class PreprocessSpec:
    """How a PIL image becomes the tensor a model expects.

    ``resize_mode="shortest"`` resizes the short side then centre-crops (CLIP); ``"squash"`` resizes both sides.
    ``channel_order="BGR"`` swaps channels after normalisation statistics are applied in RGB order of ``mean``/``std``.
    A spec read from a config (:meth:`from_config`) names only some keys; the others come from the model's own
    preprocessing (:meth:`over`), never from these defaults.
    """

    size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(f"preprocess.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.resize_mode not in ("shortest", "squash"):
            raise InputError(f"preprocess.resize_mode must be 'shortest' or 'squash', got {self.resize_mode!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise InputError(f"preprocess.channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if self.size <= 0:
            raise InputError(f"preprocess.size must be positive, got {self.size}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise InputError("preprocess.mean and preprocess.std need three values each, std > 0")

    @classmethod
    def from_config(cls, **given) -> PreprocessSpec:
        """A spec from a config mapping that remembers which keys it named, so that it overrides only those."""
        spec = cls(**given)
        object.__setattr__(spec, "_given", frozenset(given))
        return spec

    @property
    def given(self) -> frozenset[str]:
        """The keys a config named; every key for a spec built in code."""
        return getattr(self, "_given", frozenset(f.name for f in fields(self)))

    def over(self, base: PreprocessSpec) -> PreprocessSpec:
        """``base`` (the weights' own or a profile's preprocessing) with the keys this spec names replaced."""
        return replace(base, **{name: getattr(self, name) for name in sorted(self.given)})


@dataclass(frozen=True)
class CombineTerm:
    """One term of a weight-space combination: ``scale`` times the image-weight change ``model`` makes to the base.

    ``model`` is a preset name, the name of another model of the run (a fine-tune, an inline spec) or a spec.
    """

    model: str | ModelSpec
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.scale):
            raise InputError(f"combine: the scale of {self.name!r} must be a finite number, got {self.scale}")

    @property
    def name(self) -> str:
        """The name of the term's model."""
        return self.model if isinstance(self.model, str) else self.model.name


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: source kind, architecture, weights and (optionally) preprocessing and an adapter.

    ``weights`` is a pretrained tag (downloads only when the machine has a network and the user asked for it), a
    local checkpoint file, ``local-dir:PATH`` (open_clip folder layout) or ``world:NAME`` (a tiny CLIP the project
    pretrains itself). ``preprocess`` overrides what the weights' own config says (it feeds biometric units);
    ``general_preprocess`` feeds general-vision units (default: the base model's, see the run's
    ``general_preprocessing``). ``text=False`` keeps only the image
    tower (linear probe only, never zero-shot). ``head`` is a binary attack-detection head file
    (:mod:`overspec.models.heads`). A fine-tuned variant names its ``base`` model (another spec's name) and its
    ``specialisation`` (``fr``, ``mad`` or ``pad``), which the report uses to pair variants with their base.
    ``combine`` makes the model a point in weight space: the image tower this spec loads plus, per term,
    ``scale`` times (term's image weights - these image weights) — a LoRA strength λ, WiSE-FT interpolation of a
    full fine-tune (Wortsman et al., CVPR 2022), or a sum of several adapters of one base.
    """

    def __post_init__(self) -> None:
        check_path_component(self.name, "model name")
        if self.specialisation not in ("", "fr", "mad", "pad"):
            raise InputError(f"specialisation must be '', 'fr', 'mad' or 'pad', got {self.specialisation!r}")

    name: str
    source: str = "open_clip"
    architecture: str = ""
    weights: str | None = None
    config_file: str | None = None
    preprocess: PreprocessSpec | None = None
    general_preprocess: PreprocessSpec | None = None
    quick_gelu: bool = False
    text: bool = True
    adapter: str | None = None
    head: str | None = None
    base: str | None = None
    specialisation: str = ""
    description: str = ""
    reference: str = ""
    options: dict = field(default_factory=dict)
    combine: tuple[CombineTerm, ...] = ()

    def __hash__(self) -> int:
        return hash((self.name, self.source, self.architecture, self.weights))


def spec_as_config(spec: ModelSpec) -> dict:
    """``asdict(spec)`` with a partial ``preprocess`` cut to the keys it names: what a config must say to rebuild it."""
    data = asdict(spec)
    if spec.preprocess is not None:
        data["preprocess"] = {k: v for k, v in data["preprocess"].items() if k in spec.preprocess.given}
    return data
