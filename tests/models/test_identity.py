"""Model identity (spec + file bytes + library versions) and the facts recorded under it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from overspec.models.identity import ModelFacts, model_identity, read_facts, write_facts
from overspec.models.sources.files import weight_files
from overspec.config.model import ModelSpec, PreprocessSpec


@pytest.fixture
def spec(tmp_path) -> ModelSpec:
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights v1")
    adapter = tmp_path / "adapter.safetensors"
    adapter.write_bytes(b"adapter v1")
    return ModelSpec(name="m", architecture="ViT-B-32", weights=str(weights), adapter=str(adapter))


def test_identity_is_stable_and_follows_every_input(tmp_path, spec):
    cache = tmp_path / "cache"
    base = model_identity(spec, cache)
    assert base is not None and base == model_identity(spec, cache)
    changed = {model_identity(replace(spec, quick_gelu=True), cache),
               model_identity(replace(spec, preprocess=PreprocessSpec(size=196)), cache)}
    assert base not in changed and len(changed) == 2
    for path in (spec.weights, spec.adapter):
        original = open(path, "rb").read()
        with open(path, "wb") as handle:
            handle.write(original[:-1] + b"2")  # same size, last byte changed
        assert model_identity(spec, cache) != base
        with open(path, "wb") as handle:
            handle.write(original)
    assert model_identity(spec, cache) == base


def test_identity_follows_library_versions(tmp_path, spec, monkeypatch):
    from overspec.models import identity

    base = model_identity(spec, tmp_path)
    monkeypatch.setattr(identity, "_version", lambda name: "9.9" if name == "open_clip_torch" else "1.0")
    assert model_identity(spec, tmp_path) != base


@pytest.mark.parametrize("weights", [None, "openai", "laion2b_s34b_b79k"])
def test_weights_that_are_not_local_files_have_no_identity(tmp_path, weights):
    spec = ModelSpec(name="m", architecture="ViT-B-32", weights=weights)
    assert weight_files(spec, tmp_path) is None
    assert model_identity(spec, tmp_path) is None


def test_missing_files_have_no_identity(tmp_path, spec):
    assert model_identity(replace(spec, head=str(tmp_path / "absent.safetensors")), tmp_path) is None
    assert model_identity(replace(spec, weights=str(tmp_path / "absent.pt")), tmp_path) is None


def test_folder_weights_cover_every_file_below(tmp_path):
    folder = tmp_path / "clip"
    (folder / "sub").mkdir(parents=True)
    for name in ("open_clip_config.json", "open_clip_model.safetensors", "sub/tokenizer.json"):
        (folder / name).write_text(name)
    spec = ModelSpec(name="m", weights=f"local-dir:{folder}")
    assert weight_files(spec, tmp_path) == sorted(folder.rglob("*.*"))
    base = model_identity(spec, tmp_path)
    (folder / "sub" / "tokenizer.json").write_text("changed")
    assert model_identity(spec, tmp_path) != base


def test_facts_round_trip_and_damage_is_refused(tmp_path, caplog):
    facts = ModelFacts("a" * 32, None, 1234)
    assert read_facts(tmp_path, "ab" * 16) is None
    write_facts(tmp_path, "ab" * 16, facts)
    assert read_facts(tmp_path, "ab" * 16) == facts
    path = next(tmp_path.rglob("*.json"))
    stored = json.loads(path.read_text())
    stored["facts"]["image_parameters"] = 99
    path.write_text(json.dumps(stored))
    assert read_facts(tmp_path, "ab" * 16) is None and "checksum mismatch" in caplog.text
    path.write_text("{not json")
    assert read_facts(tmp_path, "ab" * 16) is None


def test_a_partial_preprocess_has_its_own_identity(tmp_path, spec):
    cache = tmp_path / "cache"
    complete = replace(spec, preprocess=PreprocessSpec(size=224))
    partial = replace(spec, preprocess=PreprocessSpec.from_config(size=224))
    assert complete.preprocess == partial.preprocess
    assert model_identity(complete, cache) != model_identity(partial, cache)
