"""The training-set readers of overspec.data.formats: class (identity) folders, MXNet RecordIO, webdataset shards.

Fine-tuning reads through these same format readers as the catalog; the webdataset tests check that both paths
give the same samples for the same shard, keyed by webdataset's first-dot rule.
"""

import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from overspec.data.base import DatasetLayoutError
from overspec.data.formats import FORMATS, SplitRequest
from overspec.data.formats.imagefolder import class_folders
from overspec.data.formats.recordio import RECORD_MAGIC, read_record_file, write_record_file
from overspec.data.formats.wds import read_shards, split_key


def _png(value: int, size: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_class_folders_label_sorted_identities(tmp_path):
    for identity, n in (("bob", 2), ("alice", 3)):
        (tmp_path / identity).mkdir()
        for k in range(n):
            (tmp_path / identity / f"{k}.png").write_bytes(_png(10 * k))
    (tmp_path / "alice" / "notes.txt").write_text("x")
    data = class_folders(tmp_path)
    assert data.classnames == ("alice", "bob")
    assert data.labels.tolist() == [0, 0, 0, 1, 1]
    assert data[4][0].getpixel((0, 0)) == (10, 10, 10)
    with pytest.raises(DatasetLayoutError, match="identity"):
        class_folders(tmp_path / "missing")


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
    data = read_shards(tmp_path)
    assert data.labels.tolist() == [0, 1, 1]
    assert [data[i][0].getpixel((1, 1))[0] for i in range(3)] == [10, 20, 30]




def _write_shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _catalog_and_fine_tune(split_dir: Path):
    """The same shard folder read by the catalog's ``wds`` format and by fine-tuning's :func:`read_shards`."""
    (split_dir / "nshards.txt").write_text(f"{len(list(split_dir.glob('*.tar')))}\n")
    catalog = FORMATS.get("wds")(SplitRequest("shards", split_dir.parent, split_dir.name, "wds layout"))
    return catalog, read_shards(split_dir)


@pytest.mark.parametrize(("name", "key", "field"), [
    ("sample.jpg", "sample", "jpg"),
    ("sample.0001.jpg", "sample", "0001.jpg"),
    ("a/b.c.jpg", "a/b", "c.jpg"),
    ("v1.2/x.cls", "v1.2/x", "cls"),
    ("noext", "noext", ""),
])
def test_a_member_key_ends_at_the_first_dot_of_its_base_name(name, key, field):
    assert split_key(name) == (key, field)


def test_catalog_and_fine_tuning_read_the_same_samples_from_a_shard(tmp_path):
    split_dir = tmp_path / "wds" / "test"
    _write_shard(split_dir / "0.tar", [
        ("b.json", b"{}"), ("b.png", _png(40)), ("b.cls", b"1"), ("b.seg.png", _png(99)),
        ("dir.v1/a.png", _png(70)), ("dir.v1/a.cls", b"0"),
    ])
    catalog, fine_tune = _catalog_and_fine_tune(split_dir)
    for data in (catalog, fine_tune):
        assert data.labels.tolist() == [1, 0]  # tar order; "b.seg.png" is a field of "b", not a sample "b.seg"
        assert [data[i][0].getpixel((0, 0)) for i in range(2)] == [(40, 40, 40), (70, 70, 70)]
        assert [data.location(i) for i in range(2)] == [str(split_dir / "0.tar" / "b"),
                                                        str(split_dir / "0.tar" / "dir.v1" / "a")]


def test_dotted_file_names_are_fields_of_one_key_for_both_readers(tmp_path):
    split_dir = tmp_path / "wds" / "test"
    _write_shard(split_dir / "0.tar", [("sample.0001.jpg", _png(10)), ("sample.0001.cls", b"0"),
                                       ("sample.0002.jpg", _png(20)), ("sample.0002.cls", b"1")])
    (split_dir / "nshards.txt").write_text("1\n")
    catalog = FORMATS.get("wds")
    with pytest.raises(DatasetLayoutError, match=r"sample 'sample' has no image \(fields: 0001.jpg, 0001.cls, "
                                                 r"0002.jpg, 0002.cls; a key ends at the first dot"):
        catalog(SplitRequest("shards", split_dir.parent, "test", "wds layout"))
    with pytest.raises(DatasetLayoutError, match=r"sample 'sample' has no image \(fields: 0001.jpg, 0001.cls"):
        read_shards(split_dir)


def test_a_label_without_an_image_is_refused_by_both_readers(tmp_path):
    split_dir = tmp_path / "wds" / "test"
    _write_shard(split_dir / "0.tar", [("a.png", _png(1)), ("a.cls", b"0"), ("b.cls", b"1")])
    (split_dir / "nshards.txt").write_text("1\n")
    with pytest.raises(DatasetLayoutError, match="sample 'b' has no image"):
        FORMATS.get("wds")(SplitRequest("shards", split_dir.parent, "test", "wds layout"))
    with pytest.raises(DatasetLayoutError, match="sample 'b' has no image"):
        read_shards(split_dir)


def test_every_folder_reader_takes_the_one_image_suffix_list(tmp_path):
    from overspec.data.biometric.attack_list import protocol_from_folders
    from overspec.data.formats.common import IMAGE_EXTENSIONS

    suffixes = sorted(IMAGE_EXTENSIONS)
    for folder in (tmp_path / "ids" / "alice", tmp_path / "pad" / "train" / "bona_fide"):
        folder.mkdir(parents=True)
        for k, suffix in enumerate(suffixes):
            Image.fromarray(np.full((4, 4, 3), k, np.uint8)).save(folder / f"{k}{suffix.upper()}")
        (folder / "notes.txt").write_text("not an image")
        (folder / "x.png").mkdir()
    assert len(class_folders(tmp_path / "ids")) == len(suffixes)
    assert len(protocol_from_folders(tmp_path / "pad").samples) == len(suffixes)
