"""Damaged cache entries (zero-shot classifiers and image features) are reported and recomputed, never used."""

import json

import numpy as np
import pytest

from overspec.features import FeatureStore
from overspec.models import ModelSpec, load_model
from tests.conftest import make_split

CLASSES, TEMPLATES = ("red", "green", "blue"), ("a photo of {c}.", "{c}")


@pytest.fixture
def encoder(tmp_path, micro_checkpoint):
    return load_model(ModelSpec(name="m", architecture="micro-clip", weights=str(micro_checkpoint)), cache_dir=tmp_path)


def _flip_last_value(path):
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-8])


def _break_header(path):
    path.with_suffix(".json").write_text("{not json")


def _lie_about_shape(path):
    header = json.loads(path.with_suffix(".json").read_text())
    header["shape"] = [header["shape"][0] + 1, *header["shape"][1:]]
    path.with_suffix(".json").write_text(json.dumps(header))


DAMAGES = [(_flip_last_value, "checksum mismatch"), (_truncate, "unreadable cache entry"),
           (_break_header, "unreadable cache entry"), (_lie_about_shape, "differ from its header")]


@pytest.mark.parametrize(("damage", "reported"), DAMAGES)
def test_a_damaged_classifier_is_reported_and_rebuilt(tmp_path, encoder, caplog, damage, reported):
    store = FeatureStore(tmp_path / "store", progress=False)
    original = np.array(store.text_classifier(encoder, CLASSES, TEMPLATES))
    path = next((tmp_path / "store" / "text").rglob("*.npy"))
    damage(path)
    rebuilt = np.array(store.text_classifier(encoder, CLASSES, TEMPLATES))
    assert reported in caplog.text and str(path) in caplog.text
    np.testing.assert_array_equal(rebuilt, original)


@pytest.mark.parametrize(("damage", "reported"), DAMAGES)
def test_damaged_features_are_reported_and_extracted_again(tmp_path, encoder, caplog, damage, reported):
    store = FeatureStore(tmp_path / "store", progress=False)
    split = make_split()
    original = np.array(store.image_features(encoder, split).x)
    path = next((tmp_path / "store" / "image").rglob("*.npy"))
    damage(path)
    again = store.image_features(encoder, split)
    assert not again.cached and reported in caplog.text
    np.testing.assert_array_equal(np.asarray(again.x), original)
