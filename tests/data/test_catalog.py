"""Contract tests over every catalog entry, plus the catalog's validation, registry and status functions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from overspec.data.base import DatasetLayoutError
from overspec.data.catalog import (
    CATALOG_DIR,
    FROM_DATA,
    CatalogError,
    DatasetEntry,
    dataset_names,
    dataset_registry,
    dataset_status,
    get_dataset,
    has_role,
    load_catalog_file,
    load_dataset,
    parse_entry,
    register_dataset,
    shipped_classnames,
    shipped_templates,
)
from overspec.data.formats import FORMATS
from overspec.registry import RegistryError

ALL_NAMES = dataset_registry().names()
#: Entries whose class names are shipped lists (checkable without data); ``file`` / ``loader`` lists live in the data.
SHIPPED = [n for n in ALL_NAMES if get_dataset(n).classnames not in FROM_DATA]
STUDY_14 = {"food101", "cifar10", "cifar100", "sun397", "cars", "fgvc_aircraft", "dtd", "mnist", "flowers", "stl10",
            "gtsrb", "country211", "renderedsst2", "imagenetv2"}
_MINIMAL = {"name": "mine", "format": "csv", "root": "mine", "splits": {"test": "test"}, "classnames": "file",
            "templates": "file", "layout": "classnames.txt, test.csv", "tasks": ["zero_shot"]}


def test_catalog_holds_the_study_datasets_and_companions() -> None:
    assert set(dataset_names(study=True)) == STUDY_14
    assert {"imagenet1k", "caltech101", "pets", "eurosat", "resisc45", "pcam"} <= set(ALL_NAMES)
    assert len(ALL_NAMES) == len(list(CATALOG_DIR.rglob("*.yaml")))
    assert "imagenetv2" not in dataset_names(task="linear_probe")
    assert STUDY_14 | {"imagenet1k", "caltech101", "pets", "eurosat", "resisc45", "pcam"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_entry_lists_match_its_declared_class_count(name: str) -> None:
    entry = get_dataset(name)
    assert entry.num_classes is not None, f"{entry.origin}: declare num_classes"
    names = shipped_classnames(entry.classnames)
    assert len(names) == entry.num_classes
    assert all(n.strip() for n in names) and not any(n.startswith("#") for n in names)
    if entry.classnames_variant:
        assert len(shipped_classnames(entry.classnames_variant)) == entry.num_classes
    if entry.templates != "file":
        templates = shipped_templates(entry.templates)
        assert templates and all("{c}" in t for t in templates)
    assert entry.format in FORMATS and entry.source and entry.layout
    assert "test" in entry.splits


@pytest.mark.parametrize("name", ALL_NAMES)
def test_missing_root_names_dataset_path_and_layout(name: str, tmp_path: Path) -> None:
    entry = get_dataset(name)
    role = next(iter(entry.splits))
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset(entry, role, tmp_path)
    message = str(info.value)
    assert repr(name) in message and str(tmp_path / entry.root) in message and entry.layout in message
    assert not (tmp_path / entry.root).exists()  # nothing was created (torchvision's Caltech101 would mkdir)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_shipped_yaml_reparses_to_the_same_entry(name: str) -> None:
    entry = get_dataset(name)
    import yaml

    assert parse_entry(yaml.safe_load(Path(entry.origin).read_text()), origin=entry.origin) == entry


def test_shipped_lists_keep_known_traps() -> None:
    assert shipped_classnames("eurosat")[2] == "brushland or shrubland"  # sorted-folder order, not OpenAI's
    assert "aquarium_fish" in shipped_classnames("cifar100")
    assert "aquarium fish" in shipped_classnames("cifar100_openai")
    assert shipped_classnames("imagenet1k").count("sunglasses") == 2
    assert shipped_classnames("caltech101")[0] == "off-center face"  # torchvision drops the background class
    assert shipped_classnames("caltech101")[29] == "head of a  crocodile"  # inner spacing kept as shipped
    assert shipped_templates("mnist") == ['a photo of the number: "{c}".']
    assert len(shipped_templates("imagenet1k")) == 80


def test_unknown_key_is_rejected_with_file_and_suggestion() -> None:
    raw = {**_MINIMAL, "splts": {"test": "test"}}
    with pytest.raises(CatalogError, match=r"my\.yaml: unknown key 'splts'; did you mean 'splits'"):
        parse_entry(raw, origin="my.yaml")


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "webdataset"}, "key 'format'"),
    ({"splits": {"testing": "test"}}, "unknown role 'testing'"),
    ({"main_metric": "accuracy"}, "key 'main_metric'"),
    ({"tasks": ["zero_shot", "linear_probe"]}, "linear_probe needs a train split"),
    ({"classnames": "no_such_list"}, "no shipped list 'no_such_list'"),
    ({"templates": "no_such_list"}, "key 'templates'"),
    ({"study": "yes"}, "key 'study'"),
    ({"num_classes": 0}, "key 'num_classes'"),
    ({"expected_count": {"train": 10}}, "key 'expected_count': role 'train' is not one of the entry's splits"),
    ({"expected_count": {"test": 0}}, "key 'expected_count': the count of 'test' must be a positive integer"),
    ({"expected_count": [10000]}, "key 'expected_count': must map roles to image counts"),
])
def test_invalid_values_name_the_key(change: dict, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_entry({**_MINIMAL, **change}, origin="my.yaml")


def test_missing_required_keys_are_listed() -> None:
    raw = {k: v for k, v in _MINIMAL.items() if k not in ("layout", "root")}
    with pytest.raises(CatalogError, match="missing required key.*root.*layout"):
        parse_entry(raw, origin="my.yaml")


def test_user_yaml_is_registered_and_loadable(tmp_path: Path) -> None:
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text(
        "name: mine_user_set\nformat: csv\nroot: mine\nsplits: {test: test}\nclassnames: file\n"
        "templates: cifar10\ntasks: [zero_shot]\nlayout: 'classnames.txt, test.csv'\n"
    )
    entry = load_catalog_file(yaml_file)
    assert get_dataset("mine_user_set") is entry and entry.origin == str(yaml_file)
    with pytest.raises(RegistryError, match="already registered"):
        load_catalog_file(yaml_file)
    folder = tmp_path / "data" / "mine"
    folder.mkdir(parents=True)
    Image.new("RGB", (4, 4), (9, 9, 9)).save(folder / "x.png")
    (folder / "classnames.txt").write_text("thing\n")
    (folder / "test.csv").write_text("path,label\nx.png,0\n")
    split = load_dataset("mine_user_set", "test", tmp_path / "data")
    assert split.classnames == ("thing",) and len(split.templates) == 18
    assert dataset_status(entry, tmp_path / "data") == (True, f"found at {folder}")


def test_register_dataset_refuses_a_shipped_name() -> None:
    clash = DatasetEntry(**{**_MINIMAL, "name": "cifar10"})
    with pytest.raises(RegistryError, match="already registered"):
        register_dataset(clash)


def test_unknown_dataset_suggests_the_nearest() -> None:
    with pytest.raises(RegistryError, match="did you mean 'cifar10'"):
        get_dataset("cifar1O")


def test_roles_and_missing_roles() -> None:
    pets = get_dataset("pets")
    assert has_role(pets, "train") and pets.splits["train"] == "trainval" and not has_role(pets, "val")
    with pytest.raises(ValueError, match="has no val split"):
        load_dataset(pets, "val", "/nonexistent")
    with pytest.raises(ValueError, match="unknown split role 'dev'"):
        load_dataset(pets, "dev", "/nonexistent")


def test_dataset_status_reports_missing_and_empty_roots(tmp_path: Path) -> None:
    entry = get_dataset("dtd")
    present, reason = dataset_status(entry, tmp_path)
    assert not present and reason.startswith("missing:") and str(tmp_path / "dtd") in reason
    (tmp_path / "dtd").mkdir()
    assert dataset_status(entry, tmp_path)[0] is False
    (tmp_path / "dtd" / "dtd").mkdir()
    assert dataset_status(entry, tmp_path)[0] is True


def test_class_names_that_do_not_fit_the_data_are_refused(tmp_path: Path) -> None:
    entry = parse_entry({**_MINIMAL, "classnames": "cifar10"}, origin="test")
    folder = tmp_path / "mine"
    folder.mkdir()
    Image.new("RGB", (4, 4)).save(folder / "x.png")
    (folder / "classnames.txt").write_text("\n".join(f"c{i}" for i in range(12)) + "\n")
    (folder / "templates.txt").write_text("{c}\n")
    (folder / "test.csv").write_text("path,label\nx.png,11\n")
    with pytest.raises(ValueError, match="the data has 12 classes but the class-name list has 10"):
        load_dataset(entry, "test", tmp_path)
    assert len(load_dataset(entry, "test", tmp_path, classnames="file").classnames) == 12


def test_resisc45_shipped_names_follow_sorted_folder_order(tmp_path: Path) -> None:
    names = shipped_classnames("resisc45")
    folders = [n.replace(" ", "_") for n in names]
    base = tmp_path / "resisc45" / "NWPU-RESISC45"
    for label, folder in enumerate(reversed(folders)):  # creation order must not matter
        (base / folder).mkdir(parents=True)
        for k in range(5):
            Image.new("RGB", (4, 4), (label, k, 0)).save(base / folder / f"{folder}_{k:03d}.jpg")
    split = load_dataset(replace(get_dataset("resisc45"), expected_count={}), "train", tmp_path)
    assert split.info["native_classes"] == tuple(folders)
    assert len(split) == 45 * 3
    with pytest.raises(DatasetLayoutError, match=rf"train split has 135 images, the catalog expects 18,900: {base} "):
        load_dataset("resisc45", "train", tmp_path)
