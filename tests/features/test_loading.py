import threading
import time

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from overspec.data.base import BadImageError, LabelledImages
from overspec.features import FeatureStore
from overspec.features.loading import KeptImages, image_batches, prefetched, split_preprocess
from overspec.models import ModelSpec, PreprocessSpec, load_model
from overspec.models.preprocess import build_transform
from tests.conftest import make_split


def _images() -> list[Image.Image]:
    """RGB images smaller, larger, non-square and exactly the target size, so every resize branch runs."""
    rng = np.random.default_rng(3)
    shapes = [(40, 40), (17, 29), (61, 23), (32, 32), (5, 90)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in shapes]


def _split_batch(preprocess, images) -> torch.Tensor:
    split = split_preprocess(preprocess)
    assert split.splits
    per_image = [split.per_image(image) for image in images]
    assert all(t.dtype == torch.uint8 for t in per_image)
    return split.finish(torch.stack(per_image))


@pytest.mark.parametrize("spec", [
    PreprocessSpec(size=32),
    PreprocessSpec(size=24, interpolation="bilinear", resize_mode="squash", mean=(0.5, 0.5, 0.5),
                   std=(0.5, 0.5, 0.5)),
    PreprocessSpec(size=28, interpolation="nearest", channel_order="BGR", mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25)),
], ids=["clip-shortest-crop", "hf-squash", "bgr"])
def test_split_preprocessing_gives_the_same_tensors_as_the_model_transform(spec):
    preprocess = build_transform(spec)
    images = _images()
    expected = torch.stack([preprocess(image) for image in images])
    np.testing.assert_array_equal(_split_batch(preprocess, images).numpy(), expected.numpy())


def test_open_clip_eval_transform_is_split_and_matches():
    preprocess = open_clip.image_transform(32, is_train=False, mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1))
    images = _images()
    expected = torch.stack([preprocess(image) for image in images])
    np.testing.assert_array_equal(_split_batch(preprocess, images).numpy(), expected.numpy())


@pytest.mark.parametrize("preprocess", [
    lambda image: T.functional.to_tensor(image.resize((8, 8))),
    T.Compose([T.Resize(8), T.CenterCrop(8), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3), T.Lambda(torch.tanh)]),
    T.Compose([T.Resize((8, 8)), T.Grayscale(3), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)]),
    T.Compose([T.Resize((8, 8)), T.ToTensor()]),
], ids=["function", "extra-tensor-step", "unknown-pil-step", "no-normalize"])
def test_unrecognised_preprocessing_runs_whole_per_image(preprocess):
    split = split_preprocess(preprocess)
    assert not split.splits and split.per_image is preprocess
    batch = torch.stack([preprocess(image) for image in _images()[:2]])
    assert split.finish(batch) is batch


@pytest.fixture
def encoder(tmp_path, micro_checkpoint):
    return load_model(ModelSpec(name="m", architecture="micro-clip", weights=str(micro_checkpoint)), cache_dir=tmp_path)


def _reference(encoder, split) -> np.ndarray:
    with torch.inference_mode():
        batch = torch.stack([encoder.preprocess(split.decoded(i)) for i in range(len(split))])
        return encoder.encode_image(batch).numpy()


@pytest.mark.parametrize("workers", [0, 1])
def test_store_features_match_the_encoders_own_preprocess(tmp_path, encoder, workers):
    assert split_preprocess(encoder.preprocess).splits
    split = make_split(n=7, size=37, seed=4)
    store = FeatureStore(tmp_path / "store", batch_size=3, num_workers=workers, progress=False)
    np.testing.assert_allclose(store.image_features(encoder, split).x, _reference(encoder, split), rtol=0, atol=1e-5)


def test_store_falls_back_to_the_model_transform_when_not_recognised(tmp_path, encoder):
    split = make_split(n=5, size=30, seed=5)
    recognised = FeatureStore(tmp_path / "a", batch_size=2, progress=False).image_features(encoder, split)
    model_transform = encoder.preprocess
    encoder.preprocess = lambda image: model_transform(image)
    assert not split_preprocess(encoder.preprocess).splits
    whole = FeatureStore(tmp_path / "b", batch_size=2, progress=False).image_features(encoder, split)
    np.testing.assert_allclose(whole.x, recognised.x, rtol=0, atol=1e-5)
    np.testing.assert_allclose(whole.x, _reference(encoder, split), rtol=0, atol=1e-5)


def _with_truncated_image(good: LabelledImages, bad: int) -> LabelledImages:
    """``good`` with image ``bad`` failing to decode as a truncated file does."""
    def read(i: int) -> Image.Image:
        if i == bad:
            raise OSError("truncated file")
        return good.read(i)

    return LabelledImages("toy", "test", good.labels, read, identity=f"truncated-{bad}-of-{len(good)}")


@pytest.mark.parametrize("workers", [0, 1])
def test_image_batches_are_the_model_tensors_in_order_with_decode_problems(workers):
    preprocess = build_transform(PreprocessSpec(size=16, mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3)))
    good = make_split(n=5, size=21, seed=6)
    split = _with_truncated_image(good, bad=3)
    batches = list(image_batches(split, preprocess, batch_size=2, num_workers=workers, device="cpu"))
    assert [len(problems) for _, problems in batches] == [2, 2, 1]
    problems = [problem for _, batch_problems in batches for problem in batch_problems]
    assert problems[3] == "OSError: truncated file" and problems[:3] + problems[4:] == ["", "", "", ""]
    images = torch.cat([images for images, _ in batches])
    assert images.dtype == torch.float32
    for i in (0, 1, 2, 4):
        np.testing.assert_array_equal(images[i].numpy(), preprocess(good.decoded(i)).numpy())


def _prefetch_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "overspec-prefetch"]


def test_prefetched_yields_every_item_in_order_and_stops_its_thread():
    produced = []

    def items():
        for i in range(7):
            produced.append(i)
            yield i * i

    assert list(prefetched(items(), depth=2)) == [i * i for i in range(7)]
    assert produced == list(range(7))
    assert _prefetch_threads() == []


def test_prefetched_reads_ahead_of_the_consumer_by_at_most_its_depth():
    produced = []

    def items():
        for i in range(10):
            produced.append(i)
            yield i

    batches = prefetched(items(), depth=3)
    assert next(batches) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 5 and time.monotonic() < deadline:  # item 0 taken, 1..3 queued, 4 waiting to be put
        time.sleep(0.01)
    time.sleep(0.1)  # room to overrun, were the bound not enforced
    assert len(produced) == 5
    batches.close()
    assert _prefetch_threads() == []


def test_prefetched_raises_the_producers_error_at_its_place():
    def items():
        yield "a"
        yield "b"
        raise OSError("disk went away")

    batches = prefetched(items(), depth=2)
    assert [next(batches), next(batches)] == ["a", "b"]
    with pytest.raises(OSError, match="disk went away"):
        next(batches)
    assert _prefetch_threads() == []


def test_closing_prefetched_early_stops_a_producer_blocked_on_a_full_queue():
    finished = threading.Event()

    def items():
        try:
            for i in range(1000):
                yield i
        finally:
            finished.set()

    batches = prefetched(items(), depth=1)
    assert next(batches) == 0
    batches.close()
    assert _prefetch_threads() == []
    assert finished.wait(5)


def test_a_bad_image_under_fail_stops_extraction_without_leaving_a_loading_thread(tmp_path, encoder):
    split = _with_truncated_image(make_split(n=9, size=21, seed=4), bad=1)
    store = FeatureStore(tmp_path, batch_size=2, num_workers=0, progress=False)
    with pytest.raises(BadImageError, match="truncated file"):
        store.image_features(encoder, split)
    assert _prefetch_threads() == []


def _counting(split: LabelledImages) -> tuple[LabelledImages, list[int]]:
    """``split`` with every read of an image recorded."""
    reads: list[int] = []

    def read(i: int) -> Image.Image:
        reads.append(i)
        return split.read(i)

    return LabelledImages(split.dataset, split.split, split.labels, read, identity=split.identity), reads


def test_kept_images_decode_a_split_once_per_geometry_and_give_the_same_batches():
    preprocess = build_transform(PreprocessSpec(size=16, mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3)))
    other_norm = build_transform(PreprocessSpec(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    other_size = build_transform(PreprocessSpec(size=12))
    split, reads = _counting(_with_truncated_image(make_split(n=5, size=21, seed=6), bad=3))
    kept = KeptImages(10**6)

    def batches(pre, **extra):
        return [(images.clone(), problems) for images, problems in
                image_batches(split, pre, batch_size=2, num_workers=0, device="cpu", **extra)]

    fresh = batches(preprocess)
    assert len(reads) == 5
    first, again = batches(preprocess, kept=kept), batches(preprocess, kept=kept)
    assert len(reads) == 10  # the second pass read nothing
    for got in (first, again):
        assert [p for _, p in got] == [p for _, p in fresh]
        assert all(torch.equal(a, b) for (a, _), (b, _) in zip(got, fresh, strict=True))
    normalised = batches(other_norm, kept=kept)  # same resize and crop: same pixels, its own normalisation
    assert len(reads) == 10 and torch.equal(normalised[0][0], batches(other_norm)[0][0])
    assert len(reads) == 15
    batches(other_size, kept=kept)  # another size decodes again
    assert len(reads) == 20


def test_kept_images_leave_out_a_split_that_does_not_fit_or_a_pass_stopped_early():
    preprocess = build_transform(PreprocessSpec(size=8))
    split, reads = _counting(make_split(n=4, size=10, seed=2))
    small = KeptImages(3 * 8 * 8 * 3)  # room for three of the four images
    for _ in range(2):
        list(image_batches(split, preprocess, batch_size=2, num_workers=0, device="cpu", kept=small))
    assert len(reads) == 8 and small.batches == {}
    kept = KeptImages(10**6)
    longer = make_split(n=12, size=10, seed=2)  # six batches: more than the prefetching thread reads ahead
    stopped = image_batches(longer, preprocess, batch_size=2, num_workers=0, device="cpu", kept=kept)
    next(stopped)
    stopped.close()
    assert kept.batches == {}
