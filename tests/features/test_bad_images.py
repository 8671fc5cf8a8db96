"""Bad-image policy of the feature store: corrupt, truncated and empty files fail clearly or are skipped and
recorded; non-finite embeddings are refused; nothing wrong is ever cached."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from overspec.data.base import BadImageError
from overspec.data.formats import SplitRequest
from overspec.data.formats.csv import load_split
from overspec.features.store import FeatureStore, NonFiniteFeaturesError
from overspec.models import ModelSpec, load_model

N_IMAGES = 8
BAD_INDEX = 3


def _image_bytes(seed: int, fmt: str) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


DAMAGE = {
    "corrupt_bytes": (".png", lambda: np.random.default_rng(9).integers(0, 256, 300, dtype=np.uint8).tobytes()),
    "truncated_png": (".png", lambda: _image_bytes(BAD_INDEX, "PNG")[: len(_image_bytes(BAD_INDEX, "PNG")) // 2]),
    "truncated_jpeg": (".jpg", lambda: _image_bytes(BAD_INDEX, "JPEG")[: len(_image_bytes(BAD_INDEX, "JPEG")) // 2]),
    "zero_byte": (".png", lambda: b""),
}


def write_csv_dataset(root, damage: str | None, n: int = N_IMAGES, bad_index: int = BAD_INDEX, skip_bad_row=False):
    """A csv-format split of ``n`` PNG images; image ``bad_index`` damaged as ``damage`` says (or left out)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("a\nb\n")
    rows = ["path,label"]
    for i in range(n):
        suffix, data = ".png", _image_bytes(i, "PNG")
        if i == bad_index and damage is not None:
            suffix, make = DAMAGE[damage]
            data = make()
        if i == bad_index and skip_bad_row:
            continue
        name = f"images/{i}{suffix}"
        (root / name).write_bytes(data)
        rows.append(f"{name},{i % 2}")
    (root / "test.csv").write_text("\n".join(rows) + "\n")
    return root


def csv_split(root):
    return load_split(SplitRequest("bad-demo", root, "test", "classnames.txt, test.csv"))


@pytest.fixture
def encoder(tmp_path, micro_checkpoint):
    return load_model(ModelSpec(name="m", architecture="micro-clip", weights=str(micro_checkpoint)), cache_dir=tmp_path)


def _cached_files(root):
    return sorted(p.name for p in root.rglob("*") if p.suffix in (".npy", ".json"))


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_fail_names_the_file_in_one_line_and_caches_nothing(tmp_path, encoder, damage):
    split = csv_split(write_csv_dataset(tmp_path / "data", damage))
    store = FeatureStore(tmp_path / "store", batch_size=3, progress=False)
    with pytest.raises(BadImageError) as info:
        store.image_features(encoder, split)
    message = str(info.value)
    bad_file = tmp_path / "data" / "images" / f"{BAD_INDEX}{DAMAGE[damage][0]}"
    assert str(bad_file) in message and "'bad-demo'" in message and "'test'" in message
    assert "\n" not in message and isinstance(info.value, ValueError)
    assert info.value.location == str(bad_file) and info.value.problem
    assert _cached_files(tmp_path / "store") == []


def test_fail_through_a_worker_process_gives_the_same_one_line_error(tmp_path, encoder):
    split = csv_split(write_csv_dataset(tmp_path / "data", "truncated_jpeg"))
    store = FeatureStore(tmp_path / "store", batch_size=3, num_workers=1, progress=False)
    with pytest.raises(BadImageError, match=r"images/3\.jpg: OSError: .*[Tt]runcated") as info:
        store.image_features(encoder, split)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    assert _cached_files(tmp_path / "store") == []


@pytest.mark.parametrize("workers", [0, 1])
def test_skip_zeroes_and_records_the_bad_row_and_keeps_the_others_exact(tmp_path, encoder, workers):
    split = csv_split(write_csv_dataset(tmp_path / "data", "zero_byte"))
    store = FeatureStore(tmp_path / "store", batch_size=3, num_workers=workers, progress=False, on_bad_image="skip")
    feats = store.image_features(encoder, split)
    assert feats.valid.tolist() == [i != BAD_INDEX for i in range(N_IMAGES)] and feats.n_skipped == 1
    assert not np.asarray(feats.x)[BAD_INDEX].any()
    clean = csv_split(write_csv_dataset(tmp_path / "clean", None, skip_bad_row=True))
    independent = FeatureStore(tmp_path / "clean-store", batch_size=2, progress=False).image_features(encoder, clean)
    assert independent.valid.all() and independent.n_skipped == 0
    np.testing.assert_allclose(np.asarray(feats.x)[feats.valid], np.asarray(independent.x), rtol=1e-5, atol=1e-6)
    header = json.loads(next((tmp_path / "store").rglob("*.json")).read_text())
    (record,) = header["bad_images"]
    assert record["index"] == BAD_INDEX and record["location"].endswith("images/3.png")
    assert "cannot identify image file" in record["problem"]
    again = store.image_features(encoder, split)
    assert again.cached and again.valid.tolist() == feats.valid.tolist()


def test_cache_with_bad_rows_still_fails_under_fail(tmp_path, encoder):
    split = csv_split(write_csv_dataset(tmp_path / "data", "corrupt_bytes"))
    FeatureStore(tmp_path / "store", progress=False, on_bad_image="skip").image_features(encoder, split)
    before = _cached_files(tmp_path / "store")
    with pytest.raises(BadImageError, match=r"images/3\.png"):
        FeatureStore(tmp_path / "store", progress=False).image_features(encoder, split)
    assert _cached_files(tmp_path / "store") == before


def test_a_repaired_file_is_extracted_again(tmp_path, encoder):
    root = write_csv_dataset(tmp_path / "data", "truncated_png")
    split = csv_split(root)
    store = FeatureStore(tmp_path / "store", progress=False, on_bad_image="skip")
    assert store.image_features(encoder, split).n_skipped == 1
    (root / "images" / "3.png").write_bytes(_image_bytes(BAD_INDEX, "PNG"))
    repaired = FeatureStore(tmp_path / "store", progress=False).image_features(encoder, split)
    assert not repaired.cached and repaired.valid.all()
    fresh = FeatureStore(tmp_path / "fresh", progress=False).image_features(encoder, split)
    np.testing.assert_allclose(np.asarray(repaired.x), np.asarray(fresh.x), rtol=1e-5, atol=1e-6)


def test_flip_view_zeroes_both_passes_of_a_bad_image(tmp_path, encoder):
    split = csv_split(write_csv_dataset(tmp_path / "data", "zero_byte"))
    feats = FeatureStore(tmp_path / "store", progress=False, on_bad_image="skip").image_features(
        encoder, split, view="flip")
    assert feats.x.shape == (N_IMAGES, 2, 16) and not np.asarray(feats.x)[BAD_INDEX].any()
    assert np.asarray(feats.x)[feats.valid].any(axis=-1).all()


def test_unknown_policy_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="on_bad_image must be one of"):
        FeatureStore(tmp_path, on_bad_image="ignore")


def _nan_in_row(encoder, row: int):
    """The same encoder whose image embedding of batch row ``row`` is NaN (as a broken bf16 cast could give)."""
    original = encoder.image_fn

    def image_fn(images: torch.Tensor) -> torch.Tensor:
        out = original(images).clone()
        if out.shape[0] > row:
            out[row, 0] = float("nan")
        return out

    encoder.image_fn = image_fn
    return encoder


def test_nan_embeddings_raise_naming_model_split_count_and_first_index(tmp_path, encoder):
    split = csv_split(write_csv_dataset(tmp_path / "data", None))
    store = FeatureStore(tmp_path / "store", batch_size=4, progress=False)
    with pytest.raises(NonFiniteFeaturesError) as info:
        store.image_features(_nan_in_row(encoder, 1), split)
    message = str(info.value)
    assert "model 'm'" in message and "bad-demo/test" in message and "2 of 8 images" in message
    assert "index 1" in message and "images/1.png" in message and "\n" not in message
    assert isinstance(info.value, ValueError)
    assert _cached_files(tmp_path / "store") == []


def test_nan_in_a_skipped_row_does_not_count(tmp_path, encoder):
    split = csv_split(write_csv_dataset(tmp_path / "data", "zero_byte", bad_index=1))
    store = FeatureStore(tmp_path / "store", batch_size=4, progress=False, on_bad_image="skip")
    with pytest.raises(NonFiniteFeaturesError, match=r"1 of 8 images .*index 5"):
        store.image_features(_nan_in_row(encoder, 1), split)


def test_nan_text_embeddings_raise_and_cache_nothing(tmp_path, encoder):
    original = encoder.text_fn

    def text_fn(texts):
        out = original(texts).clone()
        out[-1] = float("inf")
        return out

    encoder.text_fn = text_fn
    store = FeatureStore(tmp_path / "store", progress=False)
    with pytest.raises(NonFiniteFeaturesError, match=r"model 'm' .* for colours/test: 1 of 3 .*index 2, 'blue'"):
        store.text_classifier(encoder, ["red", "green", "blue"], ["a {c}."], dataset="colours/test")
    assert _cached_files(tmp_path / "store") == []
