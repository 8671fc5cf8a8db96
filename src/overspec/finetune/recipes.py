"""Fine-tuning recipes: the typed :class:`FinetuneConfig` and the shipped YAML recipes (``recipes/*.yaml``).

A recipe file holds the published hyper-parameters at its top level and named ``profiles`` (e.g. ``world``: the
embedded-world scale) whose keys override them. ``--set key.sub=value`` overrides any field; unknown keys are
rejected with the nearest valid key suggested (:func:`overspec.config.typed.from_dict`). ``train_transform`` is the
published training preprocessing and augmentation (:class:`~overspec.finetune.augment.TrainTransform`); ``variants``
maps a base architecture to overrides applied when the base is of that architecture (:func:`for_architecture`, e.g.
MADation's ViT-L/14 settings), the applied key recorded as ``variant``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from overspec.config.typed import ConfigError, from_dict, load_yaml
from overspec.data.base import content_fingerprint
from overspec.finetune.augment import TrainTransform
from overspec.finetune.heads import BINARY_LOSSES, MARGIN_KINDS
from overspec.finetune.selection import parse_rule
from overspec.models.lora import LoraConfig
from overspec.registry import nearest_names
from overspec.errors import InputError
from overspec.finetune.regularise import RegulariseSettings

__all__ = ["HeadSettings", "OptimSettings", "ScheduleSettings", "MonitorSettings", "FinetuneConfig", "RECIPE_DIR",
           "recipe_names", "load_recipe", "apply_overrides", "config_hash", "for_architecture", "SCHEDULES", "TASKS"]

RECIPE_DIR = Path(__file__).parent / "recipes"
TASKS = ("fr", "mad", "pad")
SCHEDULES = ("constant", "cosine", "cosine_restarts", "step")


@dataclass(frozen=True)
class HeadSettings:
    """``cosface`` / ``arcface`` (FR, scale ``s`` and margin ``m``) or ``binary`` (MAD / PAD, ``loss``)."""

    kind: str = "cosface"
    scale: float = 64.0
    margin: float = 0.3
    loss: str = "bce"

    def __post_init__(self) -> None:
        if self.kind not in (*MARGIN_KINDS, "binary"):
            raise InputError(f"head.kind must be one of {(*MARGIN_KINDS, 'binary')}, got {self.kind!r}")
        if self.loss not in BINARY_LOSSES:
            raise InputError(f"head.loss must be one of {BINARY_LOSSES}, got {self.loss!r}")


@dataclass(frozen=True)
class OptimSettings:
    """AdamW with one learning rate for the adapter and one for the head; gradient norms clipped per group."""

    lr_adapter: float = 1e-4
    lr_head: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 5.0


@dataclass(frozen=True)
class ScheduleSettings:
    """Learning-rate factor per step: linear warm-up from ``warmup_factor`` then the named decay.

    ``cosine``: half cosine to ``min_lr``; ``cosine_restarts``: SGDR with period ``period`` × ``period_mult``^k
    down to ``min_lr``; ``step``: × ``gamma`` every ``period`` steps; ``constant``: flat.
    """

    kind: str = "constant"
    warmup_steps: int = 0
    warmup_factor: float = 1.0
    min_lr: float = 0.0
    period: int = 0
    period_mult: int = 1
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise InputError(f"schedule.kind must be one of {SCHEDULES}, got {self.kind!r}")
        if self.kind in ("cosine_restarts", "step") and self.period < 1:
            raise InputError(f"schedule.kind {self.kind!r} needs schedule.period >= 1")


@dataclass(frozen=True)
class MonitorSettings:
    """The forgetting monitor and the exported step (:mod:`overspec.finetune.monitor`, :mod:`~.selection`).

    ``dataset``: a catalog dataset whose ``split`` gives ``images`` class-stratified images (drawn with ``seed``),
    scored zero-shot at step 0 and every validation against the base's text classifier; empty = monitor off.
    ``select``: ``last``, ``best`` or ``keep:F`` (see :func:`overspec.finetune.selection.choose_step`).
    """

    dataset: str = ""
    images: int = 300
    split: str = "test"
    seed: int = 0
    select: str = "last"

    def __post_init__(self) -> None:
        if self.images < 1:
            raise InputError(f"monitor.images must be >= 1, got {self.images}")
        rule = parse_rule(self.select, where="monitor.select")
        if rule.kind == "keep" and not self.dataset:
            raise InputError(f"monitor.select {self.select!r} compares with the base's general zero-shot accuracy: "
                             "set monitor.dataset (e.g. world-shapes)")


@dataclass(frozen=True)
class FinetuneConfig:
    """A complete fine-tuning run description (one recipe with its profile and overrides applied)."""

    recipe: str
    task: str
    steps: int
    batch_size: int
    seed: int = 0
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(rslora=True))
    regularise: RegulariseSettings = field(default_factory=RegulariseSettings)
    head: HeadSettings = field(default_factory=HeadSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    balanced: bool = False
    bf16: bool = True
    val_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 10
    num_workers: int = 0
    eer_method: str = "bob"
    dev_fraction: float = 0.2
    reference: str = ""
    train_transform: TrainTransform | None = None
    variants: dict = field(default_factory=dict)
    variant: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise InputError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise InputError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if (self.task == "fr") != (self.head.kind in MARGIN_KINDS):
            raise InputError(f"task {self.task!r} needs head.kind "
                             f"{'cosface/arcface' if self.task == 'fr' else 'binary'}, got {self.head.kind!r}")

    def to_dict(self) -> dict:
        """Plain-data form (the resolved config saved beside a run)."""
        return json.loads(json.dumps(asdict(self)))


def recipe_names() -> list[str]:
    """Names of the shipped recipes."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _recipe_path(recipe: str | Path) -> Path:
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml"):
        return path
    if recipe not in recipe_names():
        close = nearest_names(str(recipe), recipe_names())
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown recipe {recipe!r}{hint} (shipped: {', '.join(recipe_names())})")
    return RECIPE_DIR / f"{recipe}.yaml"


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...], where: str = "--set") -> dict:
    """Return ``data`` with ``key.sub=value`` overrides applied (values parsed as YAML scalars / lists)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{where}: expected key=value, got {item!r}")
        target = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{where}: {key!r}: {part!r} is not a section")
        target[parts[-1]] = yaml.safe_load(raw)
    return data


def load_recipe(recipe: str | Path, *, profile: str | None = None, overrides: tuple[str, ...] = ()
                ) -> FinetuneConfig:
    """Load a shipped recipe name or a recipe YAML, apply ``profile`` then ``overrides``, validate."""
    path = _recipe_path(recipe)
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping")
    profiles = data.pop("profiles", {}) or {}
    data.setdefault("recipe", path.stem)
    if profile:
        if profile not in profiles:
            raise ConfigError(f"{path}: no profile {profile!r}; profiles: {', '.join(profiles) or 'none'}")
        data = _merge(data, profiles[profile])
    data = apply_overrides(data, list(overrides))
    where = str(path) + (f" (profile {profile})" if profile else "")
    config = from_dict(FinetuneConfig, data, where=where)
    for key in config.variants:  # validated once here, applied when the base is known
        _with_variant(config, key, where)
    return config


def _architecture_matches(architecture: str, key: str) -> bool:
    """Whether ``key`` names ``architecture`` or is its prefix up to a '-' (``ViT-L-14`` ~ ``ViT-L-14-quickgelu``)."""
    return architecture == key or architecture.startswith(key + "-")


def _with_variant(config: FinetuneConfig, key: str, where: str = "variants") -> FinetuneConfig:
    overrides = config.variants[key]
    if not isinstance(overrides, dict) or not overrides:
        raise ConfigError(f"{where}: variants.{key} must be a non-empty mapping of overrides")
    if {"variants", "variant", "recipe", "task"} & overrides.keys():
        raise ConfigError(f"{where}: variants.{key} may not set recipe, task, variants or variant")
    return from_dict(FinetuneConfig, {**_merge(config.to_dict(), overrides), "variant": key},
                     where=f"{where} variants.{key}")


def for_architecture(config: FinetuneConfig, architecture: str) -> FinetuneConfig:
    """``config`` with its variant for a base of ``architecture`` applied (the longest matching key), if any."""
    keys = sorted((k for k in config.variants if _architecture_matches(architecture, k)), key=len)
    return _with_variant(config, keys[-1]) if keys and not config.variant else config


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def config_hash(config: FinetuneConfig, *parts: object) -> str:
    """Content key of a run: the resolved config plus anything else that changes the result.

    Without regularisation the ``regularise`` section is left out, so a recipe keeps the key (and the cached
    fine-tunes) it had before the section existed.
    """
    data = config.to_dict()
    if not config.regularise.active:
        del data["regularise"]
    return content_fingerprint(json.dumps(data, sort_keys=True), *parts)
