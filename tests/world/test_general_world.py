"""The general-vision world: determinism, idempotent atomic writes, csv validity, split hygiene, captions."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from overspec.files import temporary_name
from overspec.world import general

CATALOG = Path(general.__file__).resolve().parents[1] / "data" / "catalog" / "world"


def _rows(folder: Path, split: str) -> list[tuple[str, int]]:
    with open(folder / f"{split}.csv", newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["path", "label"]
        return [(path, int(label)) for path, label in reader]


def _pixel_digests(folder: Path, split: str) -> set[str]:
    return {hashlib.sha256(np.asarray(Image.open(folder / p)).tobytes()).hexdigest() for p, _ in _rows(folder, split)}


def _tree_bytes(world: Path) -> dict[str, bytes]:
    return {p.relative_to(world).as_posix(): p.read_bytes() for p in sorted(world.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, small_general_world) -> None:
    a = _tree_bytes(general.ensure_world(tmp_path / "a", seed=3))
    b = _tree_bytes(general.ensure_world(tmp_path / "b", seed=3))
    c = _tree_bytes(general.ensure_world(tmp_path / "c", seed=4))
    assert a == b
    assert a.keys() == c.keys()
    for name in small_general_world:  # every dataset changes with the seed, not only some
        assert a[f"{name}/train/00000.png"] != c[f"{name}/train/00000.png"] or a[f"{name}/train.csv"] != c[
            f"{name}/train.csv"]
    assert general.world_hash(tmp_path / "a" / "world") == general.world_hash(tmp_path / "b" / "world")
    assert general.world_hash(tmp_path / "a" / "world") != general.world_hash(tmp_path / "c" / "world")


def test_second_call_is_a_noop_and_damage_is_repaired(tmp_path: Path, small_general_world) -> None:
    world = general.ensure_world(tmp_path, seed=0)
    before = _tree_bytes(world)
    marker = world / "world-shapes" / general.MARKER
    stamp = marker.stat().st_mtime_ns
    assert general.ensure_world(tmp_path, seed=0) == world
    assert marker.stat().st_mtime_ns == stamp  # nothing rewritten

    (world / "world-shapes" / "test" / "00001.png").unlink()  # a half-written folder
    (world / "world-digits" / general.MARKER).unlink()  # a folder that never finished
    (world / "world-counts" / "train.csv").write_text("path,label\n")  # an edited one
    temporary_name(world / "world-patterns").mkdir()  # the temporary folder of a killed generator
    general.ensure_world(tmp_path, seed=0)
    assert _tree_bytes(world) == before
    assert not [p for p in world.iterdir() if p.name.endswith(".tmp")]  # no temporary folders left behind


def test_another_seed_replaces_the_world(tmp_path: Path, small_general_world) -> None:
    world = general.ensure_world(tmp_path, seed=0)
    first = general.world_hash(world)
    general.ensure_world(tmp_path, seed=1)
    marker = json.loads((world / "world-colours" / general.MARKER).read_text())
    assert marker["seed"] == 1 and general.world_hash(world) != first


def test_csv_layout_is_valid(general_world: Path) -> None:
    assert sorted(p.name for p in general_world.iterdir() if p.is_dir()) == sorted(general.WORLD_DATASETS)
    for name, spec in general.WORLD_DATASETS.items():
        folder = general_world / name
        classnames = (folder / "classnames.txt").read_text(encoding="utf-8").splitlines()
        templates = (folder / "templates.txt").read_text(encoding="utf-8").splitlines()
        assert classnames == list(spec.classnames) and len(set(classnames)) == len(classnames) >= 5
        assert len(templates) >= 3 and all("{c}" in t for t in templates)
        for split, n in (("train", spec.n_train), ("test", spec.n_test)):
            rows = _rows(folder, split)
            labels = np.array([label for _, label in rows])
            assert len(rows) == n
            assert set(labels.tolist()) == set(range(len(classnames)))  # every class present, no label beyond
            if name != "world-digits":  # synthetic sets are balanced; digits keep the scans' natural frequencies
                counts = np.bincount(labels)
                assert counts.max() - counts.min() <= 1
            first = Image.open(folder / rows[0][0])
            assert first.mode == "RGB" and first.size == (general.IMAGE_SIZE, general.IMAGE_SIZE)
            assert all((folder / path).is_file() for path, _ in rows)


def test_train_and_test_never_share_an_image(general_world: Path) -> None:
    for name in general.WORLD_DATASETS:
        folder = general_world / name
        train, test = _pixel_digests(folder, "train"), _pixel_digests(folder, "test")
        assert not train & test, name
    digits = general.WORLD_DATASETS["world-digits"]
    split = general._digit_split_indices(0, digits.n_train, digits.n_test)
    assert not set(split["train"].tolist()) & set(split["test"].tolist())
    scans = [json.loads(line)["scan"] for line in
             (general_world / "world-digits" / general.ATTRIBUTES).read_text().splitlines()]
    assert scans == split["train"].tolist()


def test_digits_are_the_real_scikit_learn_scans(general_world: Path) -> None:
    from sklearn.datasets import load_digits

    target = load_digits().target
    records = [json.loads(line) for line in (general_world / "world-digits" / general.ATTRIBUTES).read_text()
               .splitlines()]
    assert all(r["label"] == target[r["scan"]] for r in records)


def test_captions_describe_train_images_only_and_name_their_class(general_world: Path) -> None:
    pairs = general.caption_corpus(general_world)
    train = {(general_world / name / p).resolve(): label for name in general.WORLD_DATASETS
             for p, label in _rows(general_world / name, "train")}
    test = {(general_world / name / p).resolve() for name in general.WORLD_DATASETS
            for p, _ in _rows(general_world / name, "test")}
    assert len(pairs) == 2 * len(train)
    assert {p.resolve() for p, _ in pairs} == set(train)
    assert not {p.resolve() for p, _ in pairs} & test
    for path, caption in pairs:
        dataset = path.parent.parent.name
        classname = general.WORLD_DATASETS[dataset].classnames[train[path.resolve()]]
        key = classname.split()[0] if dataset == "world-counts" else classname  # "three shapes" -> "three"
        assert key in caption.split() or f" {key} " in f" {caption} ", (caption, classname)
    assert len({c for _, c in pairs}) > 500  # varied wording, not one sentence per class
    assert " a orange" not in " ".join(c for _, c in pairs)


def test_caption_corpus_needs_a_generated_world(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train_attributes.jsonl"):
        general.caption_corpus(tmp_path)


@pytest.mark.parametrize("name", sorted(general.WORLD_DATASETS))
def test_catalog_entry_matches_the_generator(name: str) -> None:
    entry = yaml.safe_load((CATALOG / f"{name}.yaml").read_text(encoding="utf-8"))
    assert entry["name"] == name and entry["root"] == f"world/{name}" and entry["format"] == "csv"
    assert entry["splits"] == {"train": "train", "test": "test"}
    assert entry["classnames"] == "file" and entry["templates"] == "file"
    assert entry["tasks"] == ["zero_shot", "linear_probe"]


def test_world_loads_through_the_catalog(general_world: Path) -> None:
    from overspec.data.catalog import load_dataset

    for name, spec in general.WORLD_DATASETS.items():
        split = load_dataset(name, "test", general_world.parent)
        assert len(split) == spec.n_test and tuple(split.classnames) == spec.classnames
        assert tuple(split.templates) == spec.templates
        image, label = split[0]
        assert image.size == (general.IMAGE_SIZE, general.IMAGE_SIZE) and 0 <= label < len(spec.classnames)
