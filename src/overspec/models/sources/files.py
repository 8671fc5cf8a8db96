"""What a model spec's weights name on disk, answered without importing any model library.

``SCHEME:NAME`` (a folder a producer registered in :data:`WEIGHT_SCHEMES` makes on first use, such as
``world:tiny-s``), ``local-dir:FOLDER``, a checkpoint file or folder, or a pretrained tag. The preflight check and
the model identity (:mod:`overspec.models.identity`) use these; only the question whether a tag is in the local
cache imports open_clip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from overspec.models.base import ModelLoadError
from overspec.config.model import ModelSpec, looks_like_path
from overspec.registry import Registry

__all__ = ["WEIGHT_SCHEMES", "looks_like_path", "offline", "produced_folder", "scheme_of", "tag_is_cached",
           "spec_problems", "weights_problem", "weight_files"]

#: Producers of open_clip ``local-dir`` folders by weights scheme: ``SCHEME:NAME`` -> ``resolver(NAME, cache_dir)``,
#: which makes the folder on first use and raises LookupError for a name it does not know. Entries are lazy, so
#: models never import a producer until a spec names its scheme.
WEIGHT_SCHEMES: Registry[Callable[[str, Path], Path]] = Registry("weights scheme")
WEIGHT_SCHEMES.register_lazy("world", "overspec.world.models:folder_of")


def offline() -> bool:
    """Whether downloads are off (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def tag_is_cached(architecture: str, tag: str, cache_dir: Path) -> bool:
    """Whether the weights of an open_clip pretrained tag are already on disk (checked without network access)."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(architecture, tag)
    if not cfg:
        return False
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        return any(isinstance(try_to_load_from_cache(repo, name, cache_dir=str(cache_dir)), str) for name in names)
    url = cfg.get("url", "")
    return bool(url) and (cache_dir / os.path.basename(url)).is_file()


def weights_problem(spec: ModelSpec, cache_dir: Path) -> str:
    """Why ``spec``'s weights cannot be had right now (missing file, uncached tag while offline), or ''."""
    weights = spec.weights or ""
    if scheme_of(weights) or weights.startswith("local-dir:") or not weights:
        return ""
    if looks_like_path(weights):
        return "" if Path(weights).expanduser().is_file() else f"weights file not found: {weights}"
    if offline() and spec.architecture and not tag_is_cached(spec.architecture, weights, cache_dir / "open_clip"):
        return f"pretrained tag {weights!r} of {spec.architecture!r} is not cached and downloads are off"
    return ""


def scheme_of(weights: str) -> str:
    """The registered scheme a weights string names (``"world"`` for ``world:tiny-s``), or ''."""
    scheme, colon, _ = weights.partition(":")
    return scheme if colon and scheme in WEIGHT_SCHEMES else ""


def produced_folder(spec: ModelSpec, cache_dir: Path) -> Path:
    """Return the ``local-dir`` folder of a ``SCHEME:NAME`` spec, made by the scheme's producer on first use."""
    scheme, _, name = (spec.weights or "").partition(":")
    try:
        return Path(WEIGHT_SCHEMES.get(scheme)(name, Path(cache_dir)))
    except LookupError as exc:
        raise ModelLoadError(f"model {spec.name!r}: {exc}") from exc


def weight_files(spec: ModelSpec, cache_dir: Path) -> list[Path] | None:
    """Return every local file ``spec``'s weights are read from, or None when they are not local files.

    Produced (``SCHEME:NAME``) and ``local-dir:`` folders and checkpoint folders give all files under them; a
    checkpoint file gives itself. Pretrained tags, hub names and random initialisation (no weights) give None.
    """
    weights = spec.weights or ""
    if scheme_of(weights):
        folder = produced_folder(spec, cache_dir)
    elif weights.startswith("local-dir:"):
        folder = Path(weights.split(":", 1)[1]).expanduser()
    elif weights and looks_like_path(weights):
        folder = Path(weights).expanduser()
        if folder.is_file():
            return [folder]
    else:
        return None
    if not folder.is_dir():
        return None
    return sorted(path for path in folder.rglob("*") if path.is_file())


def spec_problems(spec: ModelSpec, cache_dir: Path) -> list[str]:
    """What stops ``spec`` from loading, checked before any computation: missing files (weights, adapter, head,
    config, combine terms'), unavailable weights, or a Hugging Face folder without the tokenizer its text tower
    needs."""
    problems = [f"file not found: {path}" for path in (spec.adapter, spec.head, spec.config_file)
                if path and not Path(path).expanduser().exists()]
    problems += [f"combine term {term.name!r}: {problem}" for term in spec.combine
                 if isinstance(term.model, ModelSpec) for problem in spec_problems(term.model, cache_dir)]
    if spec.source in ("open_clip", "published"):
        problem = weights_problem(spec, cache_dir)
        problems += [problem] if problem else []
    elif spec.weights and not Path(spec.weights).expanduser().exists():
        problems.append(f"weights not found: {spec.weights}")
    elif spec.source == "hf" and spec.text and spec.weights:
        from overspec.models.sources.hf import has_tokenizer_files

        folder = Path(spec.weights).expanduser()
        if not has_tokenizer_files(folder):
            problems.append(f"{folder} has no tokenizer files, so zero-shot is not possible (text: false for image "
                            "only)")
    return problems
