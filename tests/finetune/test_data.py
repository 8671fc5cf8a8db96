import numpy as np
import pytest
import torch
from PIL import Image

from overspec.data.base import LabelledImages
from overspec.finetune.data import BalancedBatches, Draw, ShuffledBatches, TrainingImages, carve_dev


def test_balanced_batches_are_balanced_seeded_and_stateless():
    labels = np.array([0] * 30 + [1] * 3)
    plan = BalancedBatches(labels, 8, seed=3)
    batch = plan.batch(5)
    assert sum(labels[d.index] for d in batch) == 4
    assert sum(labels[d.index] for d in batch[:4]) == 2  # each rank half is balanced too
    assert batch == BalancedBatches(labels, 8, seed=3).batch(5)
    assert batch != plan.batch(6) and batch != BalancedBatches(labels, 8, seed=4).batch(5)
    assert [(d.step, d.position) for d in batch] == [(5, p) for p in range(8)]
    with pytest.raises(ValueError, match="divisible"):
        BalancedBatches(labels, 7)


def test_shuffled_batches_visit_every_sample_once_per_epoch():
    plan = ShuffledBatches(np.zeros(10), 5, seed=0)
    epoch = [d.index for step in (0, 1) for d in plan.batch(step)]
    assert sorted(epoch) == list(range(10))
    assert [d.index for d in plan.batch(2)] + [d.index for d in plan.batch(3)] != epoch
    assert plan.batch(1) == [Draw(i, 1, p) for p, i in enumerate(epoch[5:])]


def test_training_images_flip_and_carve_dev():
    pixels = np.zeros((4, 2, 2, 3), dtype=np.uint8)
    pixels[:, :, 0] = 255
    split = LabelledImages("t", "train", np.array([0, 1, 0, 1]), lambda i: Image.fromarray(pixels[i]), ("t",),
                           info={"subject_id": np.array(["a", "a", "b", "c"], dtype=object)})
    dataset = TrainingImages(split, lambda image: np.asarray(image))
    assert dataset[(0, False)][0][0, 0, 0] == 255 and dataset[(0, True)][0][0, 0, 0] == 0
    train, dev = carve_dev(split, 0.34, seed=0)
    assert len(train) + len(dev) == 4 and dev.split == "dev"
    assert not set(train.info["subject_id"]) & set(dev.info["subject_id"])


def test_an_attack_validation_split_without_attacks_is_refused_before_training():
    import numpy as np
    import pytest
    from PIL import Image

    from overspec.data.base import LabelledImages
    from overspec.finetune.trainer import AttackValidator

    def split(labels):
        return LabelledImages("mad-list", "dev", np.array(labels), lambda i: Image.new("RGB", (4, 4)), identity="d")

    assert AttackValidator(split([1, 0, 1])).split.dataset == "mad-list"
    with pytest.raises(ValueError, match=r"validation split mad-list/dev has 2 bona fide and 0 attack samples"):
        AttackValidator(split([1, 1]))


def _counted_split(n: int) -> tuple[LabelledImages, list[int]]:
    """A split of ``n`` distinct 6x4 images that records every decode."""
    decoded: list[int] = []
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, 6, 4, 3), dtype=np.uint8)

    def load(i: int) -> Image.Image:
        decoded.append(i)
        return Image.fromarray(pixels[i])

    return LabelledImages("t", "train", np.arange(n) % 2, load, ("a", "b")), decoded


def test_training_images_decode_once_under_a_model_preprocess_and_give_the_same_tensors():
    from torchvision import transforms as T

    preprocess = T.Compose([T.Resize(3, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(3), T.ToTensor(),
                            T.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])
    split, decoded = _counted_split(4)
    kept = TrainingImages(split, preprocess)
    keys = [(i, flip) for i in range(4) for flip in (False, True)] * 3
    items = [kept[key] for key in keys]
    assert sorted(decoded) == sorted([i for i in range(4) for _ in range(2)])  # each (image, flip) decoded once
    fresh_split, fresh_decoded = _counted_split(4)
    fresh = TrainingImages(fresh_split, preprocess, kept_bytes=0)
    for key, (tensor, label) in zip(keys, items, strict=True):
        expected, expected_label = fresh[key]
        assert label == expected_label and torch.equal(tensor, expected)
    assert len(fresh_decoded) == len(keys)
    items[0][0].zero_()  # a caller editing its item in place does not edit what later draws get
    assert torch.equal(kept[keys[0]][0], fresh[keys[0]][0])


def test_training_images_rerun_a_preprocess_they_cannot_tell_is_deterministic():
    calls = []
    split, decoded = _counted_split(2)
    dataset = TrainingImages(split, lambda image: calls.append(1) or torch.rand(3))
    first, second = dataset[(0, False)][0], dataset[(0, False)][0]
    assert len(calls) == 2 and len(decoded) == 2 and not torch.equal(first, second)
