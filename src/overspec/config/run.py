"""The run configuration: which models, which datasets, which protocols, where to put caches and results.

``overspec run CONFIG.yaml`` loads this from YAML (unknown keys rejected, nearest key suggested); with no config,
:func:`default_config` describes the embedded world study. CLI flags override file values.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from overspec.config.typed import ConfigError, from_dict, load_yaml
from overspec.config.model import ModelSpec, spec_as_config

__all__ = ["RunConfig", "FinetuneRunConfig", "load_run_config", "default_config", "default_cache_dir",
           "resolved_dict"]

#: Keys of earlier versions whose settings now live under ``protocols:`` (named in the error that rejects them).
MOVED_TO_PROTOCOLS = {"zero_shot": "protocols: {zero_shot: {...}}", "linear_probe": "protocols: {linear_probe: {...}}",
                      "attack_scoring": "protocols: {attack: {scoring: [...]}}"}


@dataclass(frozen=True)
class FinetuneRunConfig:
    """Fine-tunes made before evaluation: every recipe on every base model of the run (cached by content).

    ``data`` maps a recipe to its training data (a path); recipes not named there use the embedded world.
    ``profile`` selects a recipe profile (``world`` = the small settings for the embedded world).
    """

    recipes: tuple[str, ...] = ()
    profile: str = ""
    data: dict[str, str] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs. Empty ``data_root`` with ``world: true`` means the generated embedded world."""

    name: str = "default"
    models: tuple[str | ModelSpec, ...] = ()
    datasets: tuple[str, ...] = ()
    dataset_files: tuple[str, ...] = ()
    biometrics: tuple[str, ...] = ()
    world: bool = False
    data_root: str = ""
    output_dir: str = "runs"
    cache_dir: str = ""
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 128
    num_workers: int = 0
    progress: bool = True
    on_bad_image: str = "fail"
    protocols: dict[str, dict] = field(default_factory=dict)
    finetune: FinetuneRunConfig = field(default_factory=FinetuneRunConfig)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name must be a non-empty folder name, got {self.name!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")

    @property
    def cache_path(self) -> Path:
        """The cache folder (features, classifiers, generated world, tiny models)."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    @property
    def run_dir(self) -> Path:
        """Where this run's results go: ``<output_dir>/<name>``."""
        return Path(self.output_dir).expanduser() / self.name


def default_cache_dir() -> Path:
    """``$OVERSPEC_CACHE`` if set, else ``~/.cache/overspec``."""
    return Path(os.environ.get("OVERSPEC_CACHE", "~/.cache/overspec")).expanduser()


def default_config(**overrides) -> RunConfig:
    """The embedded-world study: both tiny CLIPs on every world dataset and world biometric benchmark."""
    base = RunConfig(name="default", models=("tiny-s", "tiny-m"), world=True,
                     finetune=FinetuneRunConfig(recipes=("froundation", "madation", "foundpad"), profile="world"))
    return from_dict(RunConfig, {**_shallow(base), **overrides}, where="default config")


def load_run_config(path: Path, **overrides) -> RunConfig:
    """Read a run config YAML; ``overrides`` (from CLI flags) win over file values."""
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    moved = [key for key in data if key in MOVED_TO_PROTOCOLS]
    if moved:
        raise ConfigError(f"{path}: {moved[0]!r} is now a protocol setting; write {MOVED_TO_PROTOCOLS[moved[0]]}")
    data.setdefault("name", Path(path).stem)
    return from_dict(RunConfig, {**data, **overrides}, where=str(path))


def resolved_dict(config: RunConfig) -> dict:
    """The config as plain data (saved beside the results and hashed into every record).

    A model's partial ``preprocess`` keeps only the keys it names, so the saved config, read back, still takes the
    other keys from the weights.
    """
    data = asdict(config)
    data["models"] = tuple(_model_dict(model, plain) for model, plain in zip(config.models, data["models"]))
    return data


def _model_dict(model: str | ModelSpec, plain: str | dict) -> str | dict:
    return spec_as_config(model) if isinstance(model, ModelSpec) else plain


def _shallow(config: RunConfig) -> dict:
    return {k: getattr(config, k) for k in config.__dataclass_fields__}
