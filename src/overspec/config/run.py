"""The run configuration: which models, which datasets, which protocols, where to put caches and results.

``overspec run CONFIG.yaml`` loads this from YAML (unknown keys rejected, nearest key suggested); with no config,
:func:`default_config` describes the embedded world study. CLI flags override file values.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from overspec.config.typed import ConfigError, check_path_component, from_dict, load_yaml
from overspec.config.model import ModelSpec, looks_like_path, spec_as_config
from overspec.errors import InputError

__all__ = ["BIOMETRIC_SCOPES", "RunConfig", "FinetuneRunConfig", "load_run_config", "default_config",
           "default_cache_dir", "resolved_dict"]

#: Keys of earlier versions whose settings now live under ``protocols:`` (named in the error that rejects them).
MOVED_TO_PROTOCOLS = {"zero_shot": "protocols: {zero_shot: {...}}", "linear_probe": "protocols: {linear_probe: {...}}",
                      "attack_scoring": "protocols: {attack: {scoring: [...]}}"}
MAX_SEED = 2**32 - 1  # numpy seeds are unsigned 32-bit


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


#: Which biometric benchmarks a model is evaluated on (see :class:`RunConfig`).
BIOMETRIC_SCOPES = ("all", "own")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs. Empty ``data_root`` with ``world: true`` means the generated embedded world.

    ``dataset_files`` and ``benchmark_files`` name a user's own catalog YAMLs (general datasets, biometric
    benchmarks), registered for the run; a benchmark file's ``root`` is absolute or relative to its own folder.
    ``preprocessing_controls`` adds, per fine-tune fed other general preprocessing than its base, the base under the
    fine-tune's preprocessing. ``biometric_scope: own`` evaluates a model with tasks (a fine-tune's specialisation,
    or the specialisations of a combination's terms) on those tasks' benchmarks only, as a sweep reads them; ``all``
    evaluates every model on every benchmark of the run.
    """

    name: str = "default"
    models: tuple[str | ModelSpec, ...] = ()
    datasets: tuple[str, ...] | None = None
    dataset_files: tuple[str, ...] = ()
    biometrics: tuple[str, ...] | None = None
    benchmark_files: tuple[str, ...] = ()
    world: bool = False
    data_root: str = ""
    output_dir: str = "runs"
    cache_dir: str = ""
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 128
    num_workers: int = 0
    threads: int = 0
    progress: bool = True
    on_bad_image: str = "fail"
    general_preprocessing: str = "base"
    preprocessing_controls: bool = True
    biometric_scope: str = "all"
    protocols: dict[str, dict] = field(default_factory=dict)
    finetune: FinetuneRunConfig = field(default_factory=FinetuneRunConfig)

    def __post_init__(self) -> None:
        check_path_component(self.name, "name")
        _check_unique_models(self.models)
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"seed must be in [0, {MAX_SEED}], got {self.seed}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise InputError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.threads < 0:
            raise InputError(f"threads must be >= 0 (0: torch's default), got {self.threads}")
        if self.biometric_scope not in BIOMETRIC_SCOPES:
            raise InputError(f"biometric_scope must be one of {BIOMETRIC_SCOPES}, got {self.biometric_scope!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise InputError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")

    @property
    def cache_path(self) -> Path:
        """The cache folder (features, classifiers, generated world, tiny models)."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    @property
    def run_dir(self) -> Path:
        """Where this run's results go: ``<output_dir>/<name>``."""
        return Path(self.output_dir).expanduser() / self.name


def _check_unique_models(models: tuple[str | ModelSpec, ...]) -> None:
    """Refuse two models of one name: they would share one loaded model, one cache entry and one result row."""
    names = [m if isinstance(m, str) else m.name for m in models]
    for name in names:
        check_path_component(name, "models: model name")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"models: the name {repeated[0]!r} is used by {names.count(repeated[0])} models; "
                         "give each model its own name")


def default_cache_dir() -> Path:
    """``$OVERSPEC_CACHE`` if set, else ``~/.cache/overspec``."""
    return Path(os.environ.get("OVERSPEC_CACHE", "~/.cache/overspec")).expanduser()


def default_config(**overrides) -> RunConfig:
    """The embedded-world study: both tiny CLIPs on every world dataset and world biometric benchmark.

    It runs torch on one CPU thread, as the tiny CLIPs are pretrained: their kernels are too small to gain from
    more, while several threads spin at every kernel's barrier, which on a busy machine multiplies the CPU time.
    """
    base = RunConfig(name="default", models=("tiny-s", "tiny-m"), world=True, threads=1,
                     finetune=FinetuneRunConfig(recipes=("froundation", "madation", "foundpad"), profile="world"))
    return from_dict(RunConfig, {**_shallow(base), **overrides}, where="default config")


STUDIES_FOLDER = Path(__file__).with_name("studies")


def shipped_studies() -> dict[str, Path]:
    """Return the study configs shipped with overspec by name, so ``overspec run ijcb2025`` needs no file."""
    return {path.stem: path for path in sorted(STUDIES_FOLDER.glob("*.yaml"))}


def config_path(argument: str | Path) -> Path:
    """Return the config file a ``run`` argument names: an existing file, else the shipped study of that name."""
    path = Path(argument).expanduser()
    if path.exists():
        return path
    studies = shipped_studies()
    if str(argument) in studies:
        return studies[str(argument)]
    raise ConfigError(f"{argument}: no such config file, and no shipped study of that name "
                      f"(shipped: {', '.join(studies)})")


def load_run_config(path: Path, **overrides) -> RunConfig:
    """Read a run config YAML; ``overrides`` (from CLI flags) win over file values."""
    data = load_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: the config is empty; name the models to evaluate (or run without a config "
                          "for the embedded world study)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    moved = [key for key in data if key in MOVED_TO_PROTOCOLS]
    if moved:
        raise ConfigError(f"{path}: {moved[0]!r} is now a protocol setting; write {MOVED_TO_PROTOCOLS[moved[0]]}")
    data.setdefault("name", Path(path).stem)
    config = from_dict(RunConfig, {**_resolved_paths(data, Path(path).parent), **overrides}, where=str(path))
    if not config.models:
        raise ConfigError(f"{path}.models: no models to evaluate; name at least one preset or inline spec")
    return config


_PATH_KEYS = {"data_root", "output_dir", "cache_dir"}
_MODEL_FILE_KEYS = ("adapter", "head", "config_file")


def _resolved_paths(data: dict, folder: Path) -> dict:
    """``data`` with the relative paths it names resolved from ``folder`` (the config's), not the working folder."""
    data = dict(data)
    for key in _PATH_KEYS & data.keys():
        data[key] = _from_folder(data[key], folder)
    for key in ("dataset_files", "benchmark_files"):
        if isinstance(data.get(key), list):
            data[key] = [_from_folder(p, folder) for p in data[key]]
    finetune = data.get("finetune")
    if isinstance(finetune, dict) and isinstance(finetune.get("data"), dict):
        data["finetune"] = {**finetune, "data": {k: _from_folder(v, folder) for k, v in finetune["data"].items()}}
    if isinstance(data.get("models"), list):
        data["models"] = [_model_paths(m, folder) if isinstance(m, dict) else m for m in data["models"]]
    return data


def _model_paths(spec: dict, folder: Path) -> dict:
    """An inline model spec with its local file paths (weights file, adapter, head, config file) resolved."""
    spec = {k: _from_folder(v, folder) if k in _MODEL_FILE_KEYS else v for k, v in spec.items()}
    weights = spec.get("weights")
    if isinstance(weights, str) and weights.startswith("local-dir:"):
        spec["weights"] = "local-dir:" + _from_folder(weights.split(":", 1)[1], folder)
    elif isinstance(weights, str) and ":" not in weights and looks_like_path(weights):
        spec["weights"] = _from_folder(weights, folder)
    return spec


def _from_folder(value: object, folder: Path) -> object:
    """A relative path string joined to ``folder``; absolute, ``~``-prefixed, empty and non-string values as given."""
    if not isinstance(value, str) or not value or value.startswith("~") or Path(value).is_absolute():
        return value
    return str(folder / value)


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
