import io
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image

from overspec.data.base import DatasetLayoutError, LabelledImages
from overspec.finetune.data import (RECORD_MAGIC, BalancedBatches, ShuffledBatches, TrainingImages, carve_dev,
                                    identity_folders, read_record_file, read_wds_shards, write_record_file)


def _png(value: int, size: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_identity_folders_label_sorted_identities(tmp_path):
    for identity, n in (("bob", 2), ("alice", 3)):
        (tmp_path / identity).mkdir()
        for k in range(n):
            (tmp_path / identity / f"{k}.png").write_bytes(_png(10 * k))
    (tmp_path / "alice" / "notes.txt").write_text("x")
    data = identity_folders(tmp_path)
    assert data.classnames == ("alice", "bob")
    assert data.labels.tolist() == [0, 0, 0, 1, 1]
    assert data[4][0].getpixel((0, 0)) == (10, 10, 10)
    with pytest.raises(DatasetLayoutError, match="identity"):
        identity_folders(tmp_path / "missing")


def test_record_file_has_the_mxnet_byte_layout(tmp_path):
    rec, idx = write_record_file(tmp_path / "train", [(b"\xff\xd8JPEGDATA!", 0)])
    blob = rec.read_bytes()
    offsets = [int(line.split("\t")[1]) for line in idx.read_text().splitlines()]
    assert [int(line.split("\t")[0]) for line in idx.read_text().splitlines()] == [0, 1, 2]
    magic, lrecord = struct.unpack_from("<II", blob, offsets[1])
    assert magic == RECORD_MAGIC and lrecord >> 29 == 0
    length = lrecord & ((1 << 29) - 1)
    assert length == 24 + 11  # IRHeader + image
    flag, label, key, key2 = struct.unpack_from("<IfQQ", blob, offsets[1] + 8)
    assert (flag, label, key, key2) == (0, 0.0, 1, 0)
    assert blob[offsets[1] + 32:offsets[1] + 32 + 11] == b"\xff\xd8JPEGDATA!"
    assert offsets[2] == offsets[1] + 8 + 36  # payload padded to a multiple of 4
    flag0, _, _, _ = struct.unpack_from("<IfQQ", blob, offsets[0] + 8)
    assert flag0 == 2 and np.frombuffer(blob, "<f4", 2, offsets[0] + 32).tolist() == [2.0, 3.0]


def test_record_file_round_trip_with_and_without_index(tmp_path):
    samples = [(_png(v), label) for v, label in ((30, 1), (60, 0), (90, 1), (120, 2), (150, 0))]
    rec, idx = write_record_file(tmp_path / "train", samples)
    data = read_record_file(rec)
    assert data.labels.tolist() == [0, 0, 1, 1, 2]
    assert [data[i][0].getpixel((0, 0))[0] for i in range(5)] == [60, 150, 30, 90, 120]
    idx.unlink()
    assert read_record_file(rec).labels.tolist() == [0, 0, 1, 1, 2]


def test_record_split_where_payload_contains_the_magic(tmp_path):
    magic = struct.pack("<I", RECORD_MAGIC)
    image = _png(77)
    # the IRHeader is 24 bytes, so an image starting with 4 bytes + magic puts the magic at an aligned offset
    payload_image = image + b"\0" * (-len(image) % 4) + magic + b"tail"
    rec, _ = write_record_file(tmp_path / "m", [(payload_image, 0), (_png(5), 1)])
    blob = rec.read_bytes()
    flags = []
    position = 0
    while position < len(blob):
        _, lrecord = struct.unpack_from("<II", blob, position)
        flags.append(lrecord >> 29)
        position += 8 + (((lrecord & ((1 << 29) - 1)) + 3) & ~3)
    assert 1 in flags and 3 in flags  # the first image record was split in two parts
    data = read_record_file(rec)
    assert data[0][0].getpixel((0, 0)) == (77, 77, 77)


def test_wds_shards_read_images_and_labels(tmp_path):
    for shard, items in enumerate([[("a", 10, 0), ("b", 20, 1)], [("c", 30, 1)]]):
        with tarfile.open(tmp_path / f"{shard:05d}.tar", "w") as tar:
            for key, value, label in items:
                for name, data in ((f"{key}.png", _png(value)), (f"{key}.cls", str(label).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    data = read_wds_shards(tmp_path)
    assert data.labels.tolist() == [0, 1, 1]
    assert [data[i][0].getpixel((1, 1))[0] for i in range(3)] == [10, 20, 30]


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
