import numpy as np
import pytest
import torch

from overspec.features import FeatureStore
from overspec.models import ModelSpec, PreprocessSpec, load_model
from overspec.models.adapters import save_weights_adapter
from tests.conftest import make_split


@pytest.fixture
def encoder(tmp_path, micro_checkpoint):
    return load_model(ModelSpec(name="m", architecture="micro-clip", weights=str(micro_checkpoint)), cache_dir=tmp_path)


def _reference_features(encoder, split):
    with torch.no_grad():
        transformed = split.with_transform(encoder.preprocess)
        batch = torch.stack([transformed[i][0] for i in range(len(split))])
        return encoder.encode_image(batch).numpy()


def test_miss_then_hit_returns_identical_features(tmp_path, encoder, toy_split):
    store = FeatureStore(tmp_path / "store", batch_size=5, progress=False)
    first = store.image_features(encoder, toy_split)
    assert not first.cached and first.x.shape == (12, 16)
    np.testing.assert_allclose(first.x, _reference_features(encoder, toy_split), rtol=1e-5, atol=1e-6)
    second = store.image_features(encoder, toy_split)
    assert second.cached and second.key == first.key
    assert isinstance(second.x, np.memmap)
    np.testing.assert_array_equal(np.asarray(first.x), np.asarray(second.x))


def test_key_changes_with_weights_preprocessing_and_split(tmp_path, encoder, micro_checkpoint, toy_split):
    store = FeatureStore(tmp_path / "store", progress=False)
    key = store.image_key(encoder, toy_split)
    other_pre = load_model(ModelSpec(name="m", architecture="micro-clip", weights=str(micro_checkpoint),
                                     preprocess=PreprocessSpec(size=16, interpolation="bilinear")), cache_dir=tmp_path)
    assert store.image_key(other_pre, toy_split) != key
    adapter = save_weights_adapter(tmp_path / "a.safetensors", encoder,
                                   {"visual.proj": 0.1 * torch.randn(encoder.module.visual.proj.shape,
                                                                      generator=torch.Generator().manual_seed(1))})
    adapted = load_model(ModelSpec(name="m", architecture="micro-clip", weights=str(micro_checkpoint),
                                   adapter=str(adapter)), cache_dir=tmp_path)
    assert store.image_key(adapted, toy_split) != key
    assert store.image_key(encoder, make_split(seed=1)) != key
    relabelled = toy_split.subset(np.arange(len(toy_split)))
    relabelled.labels = (relabelled.labels + 1) % 3
    assert store.image_key(encoder, relabelled) != store.image_key(encoder, toy_split.subset(np.arange(12)))
    fresh = store.image_features(adapted, toy_split)
    assert not fresh.cached
    assert not np.allclose(np.asarray(fresh.x), np.asarray(store.image_features(encoder, toy_split).x))


def test_corrupted_cache_is_detected_and_recomputed(tmp_path, encoder, toy_split, caplog):
    store = FeatureStore(tmp_path / "store", progress=False)
    first = store.image_features(encoder, toy_split)
    reference = np.array(first.x)
    path = next((tmp_path / "store" / "image").rglob("*.npy"))
    raw = bytearray(path.read_bytes())
    raw[-4:] = b"\x00\x00\x80\x7f"
    path.write_bytes(bytes(raw))
    again = store.image_features(encoder, toy_split)
    assert not again.cached and "checksum mismatch" in caplog.text
    np.testing.assert_array_equal(np.asarray(again.x), reference)
    path.write_bytes(path.read_bytes()[:100])
    assert not store.image_features(encoder, toy_split).cached


def test_flip_view_holds_image_and_mirror(tmp_path, encoder, toy_split):
    store = FeatureStore(tmp_path / "store", progress=False)
    both = store.image_features(encoder, toy_split, view="flip")
    assert both.x.shape == (12, 2, 16)
    plain = store.image_features(encoder, toy_split)
    np.testing.assert_allclose(both.x[:, 0], plain.x, rtol=1e-5, atol=1e-6)
    mirrored = toy_split.with_transform(lambda im: encoder.preprocess(im).flip(-1))
    with torch.no_grad():
        expected = encoder.encode_image(torch.stack([mirrored[i][0] for i in range(12)])).numpy()
    np.testing.assert_allclose(both.x[:, 1], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown feature view"):
        store.image_key(encoder, toy_split, view="crop")


def test_text_classifier_is_shared_by_image_only_variants(tmp_path, encoder, micro_checkpoint):
    store = FeatureStore(tmp_path / "store", progress=False)
    names, templates = ["cat", "dog", "bird"], ["a photo of a {c}.", "a {c}."]
    first = store.text_classifier(encoder, names, templates)
    assert first.shape == (16, 3)
    np.testing.assert_allclose(np.linalg.norm(first, axis=0), 1.0, rtol=1e-5)
    adapter = save_weights_adapter(tmp_path / "a.safetensors", encoder,
                                   {"visual.proj": torch.ones_like(encoder.module.visual.proj)})
    variant = load_model(ModelSpec(name="v", architecture="micro-clip", weights=str(micro_checkpoint),
                                   adapter=str(adapter)), cache_dir=tmp_path)
    files_before = sorted((tmp_path / "store" / "text").rglob("*.npy"))
    np.testing.assert_array_equal(store.text_classifier(variant, names, templates), first)
    assert sorted((tmp_path / "store" / "text").rglob("*.npy")) == files_before
    store.text_classifier(encoder, names, templates[:1])
    assert len(list((tmp_path / "store" / "text").rglob("*.npy"))) == 2
