"""A model's identity from what it is built of on disk, and the facts (fingerprints, size) recorded under it.

Units are keyed by model fingerprints, which hash loaded weights. Loading every model (and importing its library)
only to learn that all its units are finished would dominate a run that has nothing left to do, so the facts of a
loaded model are recorded under the hash of its spec and of the bytes of every file it is built from; a later run
with the same spec, the same library versions and byte-identical files reads them back instead of loading. Specs
whose weights are not local files (pretrained tags, hub names, random initialisation) have no identity and are
always loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from overspec.files import atomic_write_text, file_sha256
from overspec.models.base import Encoder
from overspec.models.sources.files import weight_files
from overspec.config.model import ModelSpec, spec_as_config
from overspec.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["ModelFacts", "model_identity", "read_facts", "write_facts"]

IDENTITY_VERSION = 2  # bump when what load_model builds from the same files changes
#: Libraries whose version can change what the same files load into.
_LIBRARIES = ("torch", "open_clip_torch", "transformers", "timm", "safetensors")


@dataclass(frozen=True)
class ModelFacts:
    """What a run needs of a model without running it: the fingerprints its units are keyed by, and its size."""

    fingerprint: str
    text_fingerprint: str | None
    image_parameters: int
    preprocess: dict | None = None

    @classmethod
    def of(cls, encoder: Encoder) -> ModelFacts:
        """Return the facts of a loaded encoder."""
        parameters = sum(int(v.numel()) for v in encoder.image_state().values())
        preprocess = (encoder.info or {}).get("preprocess")
        return cls(encoder.fingerprint, encoder.text_fingerprint, parameters,
                   None if preprocess is None else json.loads(json.dumps(preprocess)))


def model_identity(spec: ModelSpec, cache_dir: Path) -> str | None:
    """Return a hash of ``spec``, the library versions and every file it is built from, or None (not local files)."""
    weights = weight_files(spec, Path(cache_dir))
    if weights is None:
        return None
    extra = [Path(p).expanduser() for p in (spec.adapter, spec.head, spec.config_file) if p]
    if not all(path.is_file() for path in extra):
        return None
    terms = [_term_identity(term.model, cache_dir) for term in spec.combine]
    if None in terms:
        return None
    h = hashlib.sha256(f"model-identity-v{IDENTITY_VERSION}\0".encode())
    h.update(json.dumps(spec_as_config(spec), sort_keys=True, default=str).encode() + b"\0")
    h.update(json.dumps({name: _version(name) for name in _LIBRARIES}, sort_keys=True).encode() + b"\0")
    for path in [*weights, *extra]:
        h.update(f"{path}={file_sha256(path)}\0".encode())
    for term in terms:
        h.update(f"term={term}\0".encode())
    return h.hexdigest()[:32]


def _term_identity(model: str | ModelSpec, cache_dir: Path) -> str | None:
    """Return the identity of a combination term's model (None when it has none or names no known preset)."""
    from overspec.models.registry import model_presets

    if isinstance(model, str):
        if model not in model_presets():
            return None
        model = model_presets().get(model)
    return model_identity(model, cache_dir)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def _facts_path(cache_dir: Path, identity: str) -> Path:
    return Path(cache_dir) / "model-facts" / identity[:2] / f"{identity}.json"


def _checksum(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def read_facts(cache_dir: Path, identity: str) -> ModelFacts | None:
    """Return the facts recorded under ``identity``, or None when absent or damaged (reported; the model is loaded)."""
    path = _facts_path(cache_dir, identity)
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored["sha256"] != _checksum(stored["facts"]):
            raise InputError("checksum mismatch")
        return ModelFacts(**stored["facts"])
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("%s: unusable model facts (%s); loading the model instead", path, exc)
        return None


def write_facts(cache_dir: Path, identity: str, facts: ModelFacts) -> None:
    """Record ``facts`` under ``identity`` (atomically, with a checksum)."""
    record = asdict(facts)
    atomic_write_text(_facts_path(cache_dir, identity),
                      json.dumps({"facts": record, "sha256": _checksum(record)}, sort_keys=True))
