import numpy as np
import pytest
from PIL import Image

from overspec.data.base import LabelledImages
from overspec.finetune.data import BalancedBatches, ShuffledBatches, TrainingImages, carve_dev


def test_balanced_batches_are_balanced_seeded_and_stateless():
    labels = np.array([0] * 30 + [1] * 3)
    plan = BalancedBatches(labels, 8, seed=3)
    batch = plan.batch(5)
    assert sum(labels[i] for i, _ in batch) == 4
    assert sum(labels[i] for i, _ in batch[:4]) == 2  # each rank half is balanced too
    assert batch == BalancedBatches(labels, 8, seed=3).batch(5)
    assert batch != plan.batch(6) and batch != BalancedBatches(labels, 8, seed=4).batch(5)
    with pytest.raises(ValueError, match="divisible"):
        BalancedBatches(labels, 7)


def test_shuffled_batches_visit_every_sample_once_per_epoch():
    plan = ShuffledBatches(np.zeros(10), 5, seed=0, flip=False)
    epoch = [i for step in (0, 1) for i, _ in plan.batch(step)]
    assert sorted(epoch) == list(range(10))
    assert [i for i, _ in plan.batch(2)] + [i for i, _ in plan.batch(3)] != epoch
    assert all(not flip for _, flip in plan.batch(0))
    flips = [f for s in range(20) for _, f in ShuffledBatches(np.zeros(10), 5).batch(s)]
    assert 0.3 < np.mean(flips) < 0.7


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
