"""The recipes' training transforms: each augmentation on hand-made images, pipelines, seeded draws, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from overspec.config.model import OPENAI_MEAN
from overspec.config.typed import ConfigError
from overspec.data.base import LabelledImages
from overspec.finetune.augment import (ColorJitter, Gamma, HFlip, RandAugment, RGBShift, TrainPipeline,
                                       TrainTransform, build_augmentation, draw_generator)
from overspec.finetune.data import AugmentedImages, Draw
from overspec.finetune.recipes import load_recipe
from overspec.models.preprocess import build_transform
from overspec.models.registry import resolve_spec


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(height: int = 4, width: int = 6) -> torch.Tensor:
    """A (3, H, W) uint8 image whose pixels are all different within a channel."""
    values = torch.arange(3 * height * width, dtype=torch.int64).view(3, height, width) % 251
    return values.to(torch.uint8)


def test_hflip_flips_columns_with_its_probability():
    image = _image()
    assert torch.equal(HFlip(p=1.0)(image, _generator()), image[:, :, torch.arange(5, -1, -1)])
    assert torch.equal(HFlip(p=0.0)(image, _generator()), image)
    flips = [not torch.equal(HFlip()(image, _generator(s)), image) for s in range(200)]
    assert 0.35 < np.mean(flips) < 0.65


def test_gamma_of_a_known_pixel():
    image = torch.full((3, 2, 2), 128, dtype=torch.uint8)
    out = Gamma(gamma=(2.0, 2.0), p=1.0)(image, _generator())
    expected = 255 * (128 / 255) ** 2  # 64.25
    assert out.dtype == torch.uint8 and (out.int() - expected).abs().max() <= 1
    drawn = Gamma(gamma=(0.8, 1.8), p=1.0)(image, _generator(3))
    assert 255 * (128 / 255) ** 1.8 - 1 <= int(drawn[0, 0, 0]) <= 255 * (128 / 255) ** 0.8 + 1
    assert torch.equal(Gamma(p=0.0)(image, _generator()), image)


def test_rgb_shift_is_bounded_per_channel_and_clipped():
    image = torch.full((3, 3, 3), 100, dtype=torch.uint8)
    shifts = set()
    for seed in range(50):
        out = RGBShift(limit=20, p=1.0)(image, _generator(seed)).int()
        for channel in range(3):
            assert out[channel].unique().numel() == 1  # one shift per channel
            assert 80 <= int(out[channel, 0, 0]) <= 120
            shifts.add(int(out[channel, 0, 0]))
    assert len(shifts) > 10
    bright = RGBShift(limit=20, p=1.0)(torch.full((3, 1, 1), 250, dtype=torch.uint8), _generator(1))
    assert int(bright.max()) <= 255 and bright.dtype == torch.uint8


def test_color_jitter_brightness_stays_in_its_range_and_p_zero_is_identity():
    image = torch.full((3, 2, 2), 100, dtype=torch.uint8)
    for seed in range(20):
        out = ColorJitter(brightness=0.1, p=1.0)(image, _generator(seed)).float()
        assert 89 <= float(out.mean()) <= 111
    assert torch.equal(ColorJitter(0.1, 0.1, 0.1, 0.1, p=0.0)(image, _generator()), image)
    only_brightness = ColorJitter(brightness=0.5, p=1.0)(image, _generator(7))  # a grey stays an even grey
    assert only_brightness.unique().numel() == 1 and 50 <= int(only_brightness[0, 0, 0]) <= 150


def test_randaugment_is_seeded_by_its_generator_and_leaves_the_global_rng_alone():
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8))
    state = torch.get_rng_state()
    first = RandAugment(num_ops=4, magnitude=16)(image, _generator(5))
    assert torch.equal(first, RandAugment(num_ops=4, magnitude=16)(image, _generator(5)))
    assert any(not torch.equal(first, RandAugment(4, 16)(image, _generator(s))) for s in range(6, 10))
    assert first.shape == image.shape and first.dtype == torch.uint8
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(RandAugment(num_ops=0)(image, _generator()), image)


def test_bgr_swaps_the_channels_after_normalising_in_rgb_order():
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 255, 128, 0  # red, some green, no blue
    transform = TrainTransform(resize=4, channel_order="BGR", mean=(0.5, 0.25, 0.0), std=(0.5, 0.5, 1.0))
    out = TrainPipeline(transform).draw(TrainPipeline(transform).prefix(Image.fromarray(pixels)), _generator())
    assert out[0].unique().tolist() == [0.0]  # blue: (0 - 0) / 1
    assert out[1].unique().tolist() == pytest.approx([(128 / 255 - 0.25) / 0.5])
    assert out[2].unique().tolist() == [1.0]  # red: (1 - 0.5) / 0.5


def test_random_crop_has_the_crop_size_and_is_a_window_of_the_resized_image():
    pipeline = TrainPipeline(TrainTransform(resize=10, crop=6, mean=(0, 0, 0), std=(1, 1, 1)))
    prefix = _image(10, 10)
    windows = set()
    for seed in range(30):
        out = (pipeline.draw(prefix, _generator(seed)) * 255).round().to(torch.uint8)
        assert out.shape == (3, 6, 6)
        found = [(top, left) for top in range(5) for left in range(5)
                 if torch.equal(prefix[:, top:top + 6, left:left + 6], out)]
        assert len(found) == 1
        windows.add(found[0])
    assert len(windows) > 5


@pytest.mark.parametrize("mode", ["squash", "shortest"])
def test_an_unaugmented_pipeline_gives_the_evaluation_tensors_exactly(mode):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 14, 3), dtype=np.uint8))
    transform = TrainTransform(resize=8, resize_mode=mode, interpolation="bilinear", channel_order="BGR",
                               mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    pipeline = TrainPipeline(transform)
    expected = build_transform(transform.eval_spec())(image)
    assert torch.equal(pipeline.draw(pipeline.prefix(image), _generator()), expected)


def _preset_preprocess(name):
    spec = resolve_spec(name).preprocess
    return {key: getattr(spec, key) for key in spec.given}


@pytest.mark.parametrize(("recipe", "preset", "augment"), [
    ("froundation", "froundation-vit-b-16-casia", ["randaugment", "hflip"]),
    ("madation", "madation-vit-b-16", ["hflip"]),
    ("foundpad", "foundpad-vit-b-16", ["hflip", "gamma", "rgb_shift", "color_jitter"]),
])
def test_each_recipe_trains_as_published_and_evaluates_as_its_published_preset(recipe, preset, augment):
    transform = load_recipe(recipe).train_transform
    assert [entry["name"] for entry in transform.augment] == augment
    evaluation = transform.eval_spec()
    assert {k: getattr(evaluation, k) for k in _preset_preprocess(preset)} == _preset_preprocess(preset)
    assert evaluation.size == 224
    if recipe == "froundation":
        assert transform.mean == OPENAI_MEAN and transform.resize == 224 and not transform.crop
        assert transform.augment[0] == {"name": "randaugment", "num_ops": 4, "magnitude": 16}
    if recipe == "foundpad":
        assert (transform.resize, transform.crop) == (256, 224)
        image = Image.new("RGB", (300, 300), (120, 60, 30))
        pipeline = TrainPipeline(transform)
        assert pipeline.draw(pipeline.prefix(image), _generator()).shape == (3, 224, 224)


def test_world_profiles_scale_every_size_by_one_factor_to_the_tiny_input():
    for recipe in ("froundation", "madation", "foundpad"):
        published, world = load_recipe(recipe).train_transform, load_recipe(recipe, profile="world").train_transform
        assert world.eval_spec().size == 32
        assert world.resize == round(published.resize * 32 / 224) and world.crop == round(published.crop * 32 / 224)
        assert world.augment == published.augment and world.channel_order == published.channel_order


def test_unknown_augmentation_or_parameter_names_the_key():
    with pytest.raises(ConfigError, match=r"train_transform.*augment\[0\].*unknown augmentation 'gama'.*'gamma'"):
        load_recipe("foundpad", overrides=("train_transform.augment=[{name: gama}]",))
    with pytest.raises(ConfigError, match=r"augment\[1\].*unknown key 'limt'; did you mean 'limit'"):
        load_recipe("foundpad", overrides=("train_transform.augment=[{name: hflip}, {name: rgb_shift, limt: 3}]",))
    with pytest.raises(ConfigError, match=r"augment\[0\].*'name'"):
        build_augmentation({"p": 0.5}, "augment[0]")
    with pytest.raises(ConfigError, match=r"train_transform.*crop"):
        load_recipe("foundpad", overrides=("train_transform.crop=300",))


def _counted_split(n: int) -> tuple[LabelledImages, list[int]]:
    decoded: list[int] = []
    pixels = np.random.default_rng(0).integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)

    def load(i: int) -> Image.Image:
        decoded.append(i)
        return Image.fromarray(pixels[i])

    return LabelledImages("t", "train", np.arange(n) % 2, load, ("c", n)), decoded


def test_draws_are_fixed_by_seed_step_and_position_and_decode_each_image_once():
    sized = ("train_transform.resize=10", "train_transform.crop=8")
    transform = load_recipe("foundpad", overrides=sized).train_transform
    split, decoded = _counted_split(3)
    images = AugmentedImages(split, TrainPipeline(transform), seed=4)
    state = torch.get_rng_state()
    first = images[Draw(1, 7, 2)][0]
    assert torch.equal(first, images[Draw(1, 7, 2)][0])
    assert torch.equal(first, AugmentedImages(split, TrainPipeline(transform), seed=4, kept_bytes=0)[Draw(1, 7, 2)][0])
    others = [images[Draw(1, 7, 3)][0], images[Draw(1, 8, 2)][0],
              AugmentedImages(split, TrainPipeline(transform), seed=5)[Draw(1, 7, 2)][0]]
    assert all(not torch.equal(first, other) for other in others)
    assert torch.equal(torch.get_rng_state(), state)
    decoded.clear()
    for step in range(4):
        for index in range(3):
            images[Draw(index, step, index)]
    assert sorted(decoded) == [0, 2]  # 12 draws: the two images not drawn before decoded once each
    assert draw_generator(0, 1, 2).initial_seed() != draw_generator(0, 2, 1).initial_seed()
