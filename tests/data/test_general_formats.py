"""Each general-vision format read from tiny files written in the dataset's real on-disk layout."""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from overspec.data.base import DatasetLayoutError
from overspec.data.catalog import get_dataset, load_dataset, parse_entry, shipped_classnames
from overspec.data.formats import FORMATS, SplitRequest
from overspec.data.formats.common import carve_indices


def _color(label: int, index: int = 0) -> tuple[int, int, int]:
    """A colour that encodes (label, index) so read-back can be checked (spaced for JPEG tolerance)."""
    return (40 * (label % 6) + 20, 40 * (index % 6) + 20, 40 * (label // 6 % 6) + 20)


def _write_image(path: Path, color: tuple[int, int, int], size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)


def _close(image: Image.Image, color: tuple[int, int, int], tol: int = 6) -> bool:
    pixel = np.asarray(image)[image.height // 2, image.width // 2].astype(int)
    return image.mode == "RGB" and bool(np.all(np.abs(pixel - np.asarray(color)) <= tol))


def _request(dataset: str, root: Path, split: str, **options: object) -> SplitRequest:
    return SplitRequest(dataset, root, split, f"<layout of {dataset}>", options)


# --------------------------------------------------------------------------- CIFAR-10 (torchvision, pickles)

def _write_cifar10(root: Path, per_batch: int = 3) -> dict[str, list[int]]:
    """Write cifar-10-batches-py with python-2 style pickles of a uint8 (N, 3072) array and a label list."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        labels = [(b + k) % 10 for k in range(per_batch)]
        data = np.zeros((per_batch, 3, 32, 32), np.uint8)
        for k, label in enumerate(labels):
            data[k] = np.asarray(_color(label, b), np.uint8)[:, None, None]
        batch = {"batch_label": name, "labels": labels, "data": data.reshape(per_batch, -1),
                 "filenames": [f"{name}_{k}.png" for k in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = labels
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def test_cifar10_without_checksums_reads_batches_in_order(tmp_path: Path) -> None:
    written = _write_cifar10(tmp_path)
    request = _request("cifar10", tmp_path, "train", **{"class": "CIFAR10", "verify_checksums": False})
    split = FORMATS.get("torchvision")(request)
    expected = [label for i in range(1, 6) for label in written[f"data_batch_{i}"]]
    assert split.labels.tolist() == expected
    assert split.classnames[:2] == ("airplane", "automobile")
    assert _close(split.read(4), _color(expected[4], 1), tol=0)  # 2nd sample of data_batch_2
    test = FORMATS.get("torchvision")(_request("cifar10", tmp_path, "test",
                                               **{"class": "CIFAR10", "verify_checksums": False}))
    assert test.labels.tolist() == written["test_batch"]
    assert test.fingerprint != split.fingerprint


def test_cifar10_checksums_are_verified_by_default(tmp_path: Path) -> None:
    _write_cifar10(tmp_path / "cifar10")
    entry = get_dataset("cifar10")
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset(entry, "train", tmp_path)
    assert "corrupted" in str(info.value) and "cifar10" in str(info.value) and entry.layout in str(info.value)


def test_unverified_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)

    class Exploit:
        def __reduce__(self) -> tuple:
            return (print, ("this must never run",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({"x": Exploit()}, protocol=2))
    with pytest.raises(DatasetLayoutError, match="refused to load"):
        FORMATS.get("torchvision")(_request("cifar10", tmp_path, "train",
                                            **{"class": "CIFAR10", "verify_checksums": False}))


# --------------------------------------------------------------------------- Food101 (torchvision, json meta)

def test_food101_labels_follow_the_shipped_class_order(tmp_path: Path) -> None:
    names = shipped_classnames("food101")
    folders = [name.replace(" ", "_") for name in names]
    base = tmp_path / "food101" / "food-101"
    train = {folder: [f"{folder}/{100 + i}"] for i, folder in enumerate(folders)}
    test = {folder: [f"{folder}/{500 + i}"] for i, folder in enumerate(reversed(folders))}
    for meta in (train, test):
        for rel in (r for rels in meta.values() for r in rels):
            label = folders.index(rel.split("/")[0])
            _write_image(base / "images" / f"{rel}.jpg", _color(label))
    (base / "meta").mkdir()
    (base / "meta" / "train.json").write_text(json.dumps(train))
    (base / "meta" / "test.json").write_text(json.dumps(test))

    split = load_dataset("food101", "test", tmp_path)
    assert len(split) == 101 and split.split == "test"
    for i in (0, 37, 100):
        folder = split.identity[2][i].split("/")[2]
        assert split.classnames[split.labels[i]] == folder.replace("_", " ")
        image, label = split[i]
        assert _close(image, _color(int(label)))
    assert "{c}" in split.templates[0]


# --------------------------------------------------------------------------- ImageNet-V2 (numeric folders)

def _uncounted(name: str):
    """The shipped entry without its documented image counts, for folders a test writes with a few images."""
    return replace(get_dataset(name), expected_count={})


def test_imagenetv2_labels_are_integers_not_string_sorted(tmp_path: Path) -> None:
    base = tmp_path / "imagenetv2" / "ImageNetV2-matched-frequency"
    for label in range(12):
        for k in range(2):
            _write_image(base / str(label) / f"{k}.jpeg", _color(label, k))
    split = load_dataset(_uncounted("imagenetv2"), "test", tmp_path)
    assert sorted(set(split.labels.tolist())) == list(range(12))
    for i, rel in enumerate(split.identity):
        assert split.labels[i] == int(rel.split("/")[1])
    tenth = split.identity.index("ImageNetV2-matched-frequency/10/0.jpeg")
    assert split.labels[tenth] == 10 and _close(split.read(tenth), _color(10))
    assert len(split.classnames) == 1000 and split.classnames[10] == "brambling"
    with pytest.raises(ValueError, match="no train split"):
        load_dataset("imagenetv2", "train", tmp_path)


def test_imagenetv2_rejects_non_numeric_folders(tmp_path: Path) -> None:
    base = tmp_path / "imagenetv2" / "ImageNetV2-matched-frequency"
    _write_image(base / "n01440764" / "0.jpeg", (1, 2, 3))
    with pytest.raises(DatasetLayoutError, match="integer label"):
        load_dataset("imagenetv2", "test", tmp_path)


def test_imagenetv2_folder_with_another_count_than_the_catalog_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "imagenetv2" / "ImageNetV2-matched-frequency"
    for label in range(3):
        for k in range(2):
            _write_image(base / str(label) / f"{k}.jpeg", _color(label, k))
    with pytest.raises(DatasetLayoutError, match=rf"^dataset 'imagenetv2': test split has 6 images, the catalog "
                                                 rf"expects 10,000: {base} \(expected layout there"):
        load_dataset("imagenetv2", "test", tmp_path)
    assert len(load_dataset(replace(get_dataset("imagenetv2"), expected_count={"test": 6}), "test", tmp_path)) == 6


# --------------------------------------------------------------------------- CLIP_benchmark WebDataset folder

def _png_bytes(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _write_wds(root: Path, shards: list[list[int]]) -> None:
    split_dir = root / "test"
    split_dir.mkdir(parents=True)
    (root / "classnames.txt").write_text("zero\none\ntwo\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\nthe {c}.\n")
    (split_dir / "nshards.txt").write_text(f"{len(shards)}\n")
    index = 0
    for number, labels in enumerate(shards):
        with tarfile.open(split_dir / f"{number}.tar", "w") as tar:
            for label in labels:
                key = f"s{index:07d}"
                _add_member(tar, f"{key}.png", _png_bytes(_color(label, index)))
                _add_member(tar, f"{key}.cls", str(label).encode())
                index += 1


def _wds_entry() -> object:
    return parse_entry({"name": "tiny_wds", "format": "wds", "root": "tiny", "splits": {"test": "test"},
                        "classnames": "file", "templates": "file", "tasks": ["zero_shot"],
                        "layout": "test/{nshards.txt,0.tar}"}, origin="test")


def test_wds_reads_tar_shards_with_classnames_and_templates(tmp_path: Path) -> None:
    _write_wds(tmp_path / "tiny", [[2, 0, 1], [1, 1]])
    split = load_dataset(_wds_entry(), "test", tmp_path)
    assert split.labels.tolist() == [2, 0, 1, 1, 1]
    assert split.classnames == ("zero", "one", "two")
    assert split.templates == ("a photo of a {c}.", "the {c}.")
    for i in (4, 0, 3):  # random access, any order
        assert _close(split.read(i), _color(int(split.labels[i]), i), tol=0)


def test_wds_without_nshards_names_the_file(tmp_path: Path) -> None:
    _write_wds(tmp_path / "tiny", [[0]])
    (tmp_path / "tiny" / "test" / "nshards.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="nshards.txt"):
        load_dataset(_wds_entry(), "test", tmp_path)


def test_wds_sample_without_label_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    _write_wds(root, [[0]])
    with tarfile.open(root / "test" / "0.tar", "a") as tar:
        _add_member(tar, "s0000009.webp", _png_bytes((0, 0, 0)))
    with pytest.raises(DatasetLayoutError, match="s0000009"):
        load_dataset(_wds_entry(), "test", tmp_path)


# --------------------------------------------------------------------------- MNIST (torchvision, idx files)

def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 + array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_files_become_rgb_images(tmp_path: Path) -> None:
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, labels in (("train", [5, 0, 4]), ("t10k", [7, 2])):
        images = np.stack([np.full((28, 28), 10 * label + 3, np.uint8) for label in labels])
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.asarray(labels, np.uint8))
    split = load_dataset("mnist", "test", tmp_path)
    assert split.labels.tolist() == [7, 2] and split.classnames == tuple("0123456789")
    image, label = split[0]
    assert image.mode == "RGB" and image.size == (28, 28) and _close(image, (73, 73, 73), tol=0)
    assert load_dataset("mnist", "train", tmp_path).labels.tolist() == [5, 0, 4]


# --------------------------------------------------------------------------- Country211 (split name "valid")

def test_country211_val_role_reads_the_valid_folder(tmp_path: Path) -> None:
    codes = [f"C{i:03d}" for i in range(211)]
    for label, code in enumerate(codes):
        _write_image(tmp_path / "country211" / "country211" / "valid" / code / f"{label}.jpg", _color(label))
    split = load_dataset("country211", "val", tmp_path)
    assert split.info["native_split"] == "valid" and split.split == "val"
    assert split.labels.tolist() == list(range(211))
    assert split.classnames[1] == "United Arab Emirates"
    with pytest.raises(DatasetLayoutError, match="country211"):
        load_dataset("country211", "test", tmp_path)


# --------------------------------------------------------------------------- image folders and csv folders

def test_imagefolder_keeps_label_numbering_when_a_split_lacks_a_class(tmp_path: Path) -> None:
    entry = parse_entry({"name": "folders", "format": "imagefolder", "root": "f", "classnames": "loader",
                         "splits": {"train": "train", "val": "val"}, "templates": "cifar10",
                         "layout": "<split>/<class>/*"}, origin="test")
    for split, classes in (("train", ["ant", "bee", "cat"]), ("val", ["ant", "cat"])):
        for label, name in enumerate(["ant", "bee", "cat"]):
            if name in classes:
                _write_image(tmp_path / "f" / split / name / "a.png", _color(label))
    val = load_dataset(entry, "val", tmp_path)
    assert val.classnames == ("ant", "bee", "cat") and val.labels.tolist() == [0, 2]
    assert _close(val.read(1), _color(2), tol=0)


def _write_csv_folder(root: Path, rows: list[tuple[str, int]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("red square\nblue circle\n")
    (root / "templates.txt").write_text("a photo of a {c}.\n")
    for path, label in rows:
        _write_image(root / path, _color(label))
    (root / "train.csv").write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))


def _csv_entry() -> object:
    return parse_entry({"name": "own", "format": "csv", "root": "own", "splits": {"train": "train"},
                        "classnames": "file", "templates": "file", "layout": "classnames.txt, <split>.csv"},
                       origin="test")


def test_csv_folder_reads_paths_labels_and_prompts(tmp_path: Path) -> None:
    _write_csv_folder(tmp_path / "own", [("img/a.png", 1), ("img/b.png", 0), ("c.png", 1)])
    split = load_dataset(_csv_entry(), "train", tmp_path)
    assert split.labels.tolist() == [1, 0, 1] and split.identity == ("img/a.png", "img/b.png", "c.png")
    assert split.classnames == ("red square", "blue circle") and split.templates == ("a photo of a {c}.",)
    assert _close(split[1][0], _color(0), tol=0)


@pytest.mark.parametrize(("table", "message"), [
    ("file,label\nimg/a.png,0\n", "header"),
    ("path,label\nimg/a.png,2\n", "line 2: label '2'"),
    ("path,label\nimg/zzz.png,0\n", "image file not found"),
])
def test_csv_folder_errors_name_the_problem(tmp_path: Path, table: str, message: str) -> None:
    _write_csv_folder(tmp_path / "own", [("img/a.png", 0)])
    (tmp_path / "own" / "train.csv").write_text(table)
    with pytest.raises(DatasetLayoutError, match=message):
        load_dataset(_csv_entry(), "train", tmp_path)


def test_fingerprint_changes_when_a_label_changes(tmp_path: Path) -> None:
    rows = [("a.png", 0), ("b.png", 1)]
    _write_csv_folder(tmp_path / "own", rows)
    first = load_dataset(_csv_entry(), "train", tmp_path).fingerprint
    assert load_dataset(_csv_entry(), "train", tmp_path).fingerprint == first
    (tmp_path / "own" / "train.csv").write_text("path,label\na.png,1\nb.png,1\n")
    assert load_dataset(_csv_entry(), "train", tmp_path).fingerprint != first


# --------------------------------------------------------------------------- carved splits (EuroSAT layout)

_EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                    "PermanentCrop", "Residential", "River", "SeaLake"]


def _write_eurosat(root: Path, per_class: int = 10) -> None:
    for label, folder in enumerate(_EUROSAT_FOLDERS):
        for k in range(per_class):
            _write_image(root / "eurosat" / "eurosat" / "2750" / folder / f"{folder}_{k + 1}.jpg", _color(label, k))


def test_eurosat_carved_split_is_disjoint_stratified_and_deterministic(tmp_path: Path) -> None:
    _write_eurosat(tmp_path)
    parts = {role: load_dataset("eurosat", role, tmp_path) for role in ("train", "val", "test")}
    # a carved part's identity is (identity of the whole set, index bytes); the whole set lists relative paths
    samples = {role: {p.identity[0][2][i] for i in np.frombuffer(p.identity[1], np.int64)}
               for role, p in parts.items()}
    assert not samples["train"] & samples["test"]
    assert not samples["train"] & samples["val"] and not samples["val"] & samples["test"]
    assert len(samples["train"] | samples["val"] | samples["test"]) == 100
    for role, expected in (("train", 6), ("val", 2), ("test", 2)):
        assert np.bincount(parts[role].labels, minlength=10).tolist() == [expected] * 10
    again = load_dataset("eurosat", "test", tmp_path)
    assert again.fingerprint == parts["test"].fingerprint != parts["train"].fingerprint
    first_sea_lake = int(np.flatnonzero(again.labels == 9)[0])
    name = again.identity[0][2][np.frombuffer(again.identity[1], np.int64)[first_sea_lake]]
    assert name.startswith("eurosat/2750/SeaLake/") and again.classnames[9] == "lake or sea"
    k = int(name.rsplit("_", 1)[1].split(".")[0]) - 1
    assert _close(again.read(first_sea_lake), _color(9, k))


def test_carve_indices_hand_worked_counts_and_seed() -> None:
    labels = np.asarray([0] * 10 + [1] * 4 + [2])
    parts = carve_indices(labels, test_fraction=0.5)
    assert np.bincount(labels[parts["test"]], minlength=3).tolist() == [5, 2, 0]
    assert np.bincount(labels[parts["train"]], minlength=3).tolist() == [5, 2, 1]
    assert parts["val"].size == 0
    assert np.array_equal(carve_indices(labels, 0.5)["test"], parts["test"])
    assert any(not np.array_equal(carve_indices(labels, 0.5, seed=s)["test"], parts["test"]) for s in (1, 2, 3))


def test_split_less_torchvision_class_requires_a_carved_split(tmp_path: Path) -> None:
    _write_eurosat(tmp_path, per_class=1)
    with pytest.raises(ValueError, match="carve_split"):
        FORMATS.get("torchvision")(_request("eurosat", tmp_path / "eurosat", "test", **{"class": "EuroSAT"}))


# --------------------------------------------------------------------------- DTD (torchvision, partition files)

def test_dtd_partition_files_and_shipped_names_agree(tmp_path: Path) -> None:
    names = shipped_classnames("dtd")
    data = tmp_path / "dtd" / "dtd" / "dtd"
    (data / "labels").mkdir(parents=True)
    for split in ("train", "val", "test"):
        rels = [f"{name}/{name}_{split}_{k}.jpg" for name in names for k in range(1 if split != "test" else 2)]
        for rel in rels:
            _write_image(data / "images" / rel, _color(names.index(rel.split("/")[0])))
        (data / "labels" / f"{split}1.txt").write_text("\n".join(rels) + "\n")
    split = load_dataset("dtd", "test", tmp_path)
    assert len(split) == 2 * 47 and split.info["native_split"] == "test"
    for i in (0, 50, 93):
        folder = split.identity[2][i].split("/")[3]
        assert split.classnames[split.labels[i]] == folder
    assert _close(split.read(93), _color(int(split.labels[93])))
