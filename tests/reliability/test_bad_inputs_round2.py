"""The bad-input catalogue, round two (issue 13): inputs that crashed, misled or silently gave wrong numbers.

Each case is refused with one line naming the file or key at fault (exit status 2 from the command line, nothing
written), or is now handled as a user expects.
"""

from __future__ import annotations

import errno
import json
from dataclasses import replace
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from overspec.config.run import MAX_SEED, load_run_config
from overspec.config.typed import ConfigError
from overspec.data import digests
from overspec.data.base import DatasetLayoutError
from overspec.data.biometric.attack_list import ProtocolListError, read_protocol
from overspec.data.catalog import get_dataset, load_dataset, parse_entry, shipped_classnames
from overspec.data.images import open_rgb, to_rgb
from overspec.models import ModelSpec, load_model
from overspec.models.base import ModelLoadError
from tests.data import test_general_formats as gf
from tests.models._reference_clip import split_state
from tests.reliability.test_bad_inputs import (
    GOOD_ROW,
    assert_cli_refuses,
    assert_one_line,
    entry_of,
    make_csv_dataset,
    micro_state,  # noqa: F401 - a fixture
    run_cli,
    write_config,
    write_ijb_meta_files,
    write_protocol_csv,
)

# ----------------------------------------------------------------------------------------------------------------
# Run configs: YAML that explodes, repeats itself or is not text; names that become paths.

#: 342 bytes that expand to 9**9 strings (the "billion laughs").
ALIAS_BOMB = "\n".join(
    [f'a: &a [{", ".join(["lol"] * 9)}]']
    + [f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]" for prev, name in zip("abcdefgh", "bcdefghi")]
) + "\n"


def _write(tmp_path: Path, text: str | bytes, name: str = "study.yaml") -> Path:
    """Write ``text`` as the file ``name`` in ``tmp_path``."""
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _base_settings(tmp_path: Path) -> str:
    """YAML lines keeping a run's outputs, cache and data inside ``tmp_path``."""
    return yaml.safe_dump({"output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
                           "data_root": str(tmp_path / "data"), "progress": False})


@pytest.mark.parametrize(("text", "named"), [
    (ALIAS_BOMB, ["aliases expanded"]),
    ("models: [tiny-s]\nbatch_size: 8\nbatch_size: 16\n", ["duplicated key 'batch_size'", "line 3"]),
    ("models: [tiny-s]\nprotocols: {linear_probe: {kshot: [1], kshot: [4]}}\n", ["duplicated key 'kshot'"]),
    (b"models: [tiny-s]\nname: caf\xe9\n", ["not UTF-8"]),
    ("", ["empty"]),
    ("# only a comment\n", ["empty"]),
    ("models: []\n", ["models", "no models"]),
    ("datasets: [x]\n", ["models", "no models"]),
    ("models: [tiny-s]\nseed: -1\n", ["seed", "-1"]),
    (f"models: [tiny-s]\nseed: {MAX_SEED + 1}\n", ["seed", str(MAX_SEED + 1)]),
    ("models: [tiny-s, tiny-s]\n", ["models", "'tiny-s'", "2 models"]),
    ("models: [tiny-s, {name: tiny-s, architecture: micro-clip}]\n", ["'tiny-s'", "2 models"]),
    ("models: [tiny-s]\nname: '..'\n", ["name", "'..'"]),
    ("models: [tiny-s]\nname: a/b\n", ["name", "'a/b'"]),
    ("models: [tiny-s]\nname: -rf\n", ["name", "'-rf'"]),
    ("models: [{name: ../../x, architecture: micro-clip}]\n", ["model name", "'../../x'"]),
    ("models: [{name: '..', architecture: micro-clip}]\n", ["model name", "'..'"]),
], ids=["alias-bomb", "duplicated-key", "duplicated-nested-key", "not-utf8", "empty", "comment-only",
        "models-empty", "models-unset", "seed-negative", "seed-too-large", "duplicated-preset",
        "inline-named-like-preset", "run-name-dotdot", "run-name-slash", "run-name-dash", "model-name-escapes",
        "model-name-dotdot"])
def test_bad_run_config_files(tmp_path, capsys, text, named):
    complete = isinstance(text, str) and text.strip() and not text.startswith("#")
    config = _write(tmp_path, text + _base_settings(tmp_path) if complete else text)
    with pytest.raises(ConfigError) as info:
        load_run_config(config)
    message = assert_one_line(info.value, str(config), *named)
    assert len(message) < 700, f"unbounded message of {len(message)} characters"
    assert_cli_refuses(capsys, tmp_path, ["run", str(config)], str(config), *named)
    assert_cli_refuses(capsys, tmp_path, ["run", str(config), "--dry-run"], str(config), *named)


@pytest.mark.parametrize(("key", "value"), [
    ("batch_size", "x" * 100_000),
    ("datasets", {"x": ["y" * 10_000] * 1000}),
    ("models", [[["deep"] * 100] * 100]),
    ("name", "n" * 100_000 + "/"),
])
def test_huge_values_are_quoted_briefly(tmp_path, key, value):
    config = _write(tmp_path, yaml.safe_dump({"models": ["tiny-s"], key: value}))
    with pytest.raises(ConfigError) as info:
        load_run_config(config)
    assert_one_line(info.value, key)
    assert len(str(info.value)) < 700


@pytest.mark.parametrize("kind", ["folder", "symlink-loop"])
def test_config_path_that_is_not_a_file(tmp_path, capsys, kind):
    config = tmp_path / "study.yaml"
    if kind == "folder":
        config.mkdir()
    else:
        os.symlink(tmp_path / "loop.yaml", config)
        os.symlink(config, tmp_path / "loop.yaml")
    with pytest.raises(ConfigError) as info:
        load_run_config(config)
    assert_one_line(info.value, str(config))
    assert_cli_refuses(capsys, tmp_path, ["run", str(config)], str(config))


def test_model_names_that_escape_are_refused_in_specs():
    for name in ("..", "../../x", "a/b", "", "-x", "a\0b"):
        with pytest.raises(ValueError, match="model name"):
            ModelSpec(name=name)


def test_relative_paths_are_resolved_from_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    config = _write(folder, yaml.safe_dump({
        "models": ["tiny-s", {"name": "mine", "architecture": "micro-clip", "weights": "w/mine.pt",
                              "adapter": "lora.safetensors"}],
        "data_root": "data", "output_dir": "../runs", "cache_dir": "/abs/cache", "dataset_files": ["mine.yaml"],
        "finetune": {"data": {"madation": "mad/protocol.csv"}}}))
    loaded = load_run_config(config, output_dir="cli-runs")
    assert loaded.data_root == str(folder / "data")
    assert loaded.cache_dir == "/abs/cache"
    assert loaded.output_dir == "cli-runs"  # command-line flags stay relative to the working folder
    assert loaded.dataset_files == (str(folder / "mine.yaml"),)
    assert loaded.finetune.data == {"madation": str(folder / "mad/protocol.csv")}
    assert loaded.models[1].weights == str(folder / "w/mine.pt")
    assert loaded.models[1].adapter == str(folder / "lora.safetensors")


def test_relative_dataset_file_is_named_resolved_in_the_error(tmp_path, capsys):
    folder = tmp_path / "configs"
    folder.mkdir()
    config = write_config(folder, models=["tiny-s"], dataset_files=["missing.yaml"], datasets=["x"])
    assert_cli_refuses(capsys, tmp_path, ["run", str(config)], str(folder / "missing.yaml"))


# ----------------------------------------------------------------------------------------------------------------
# Ctrl-C.


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    import overspec.runner

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(overspec.runner, "run_study", interrupted)
    config = write_config(tmp_path, models=["tiny-s"])
    code, lines = run_cli(capsys, ["run", str(config)])
    assert code == 130
    assert lines == ["overspec run: interrupted; run the same command to resume"]


# ----------------------------------------------------------------------------------------------------------------
# Decoding: every PIL mode becomes the 8-bit RGB a viewer shows; shapes whose resize needs gigabytes are refused.

GREY_LEVELS = [0, 128, 255]


def _palette_image(transparent: bool) -> Image.Image:
    """Three palette pixels (entries 0, 1, 1); entry 0 transparent when ``transparent``."""
    image = Image.new("P", (3, 1))
    image.putpalette([10, 20, 30, 200, 100, 50] + [0, 0, 0] * 254)
    image.putdata([0, 1, 1])
    if transparent:
        image.info["transparency"] = 0
    return image


def _with_alpha(mode: str) -> Image.Image:
    """Grey 100 fully transparent, half transparent and opaque: composited over white."""
    if mode == "PA":
        image = Image.new("PA", (3, 1))
        image.putpalette([100, 100, 100] * 256)
        image.putdata([(0, 0), (0, 128), (0, 255)])
        return image
    image = Image.new("LA", (3, 1))
    image.putdata([(100, 0), (100, 128), (100, 255)])
    return image if mode == "LA" else image.convert(mode)


def _as_rgb(levels: list) -> np.ndarray:
    """A 1-row RGB array from grey levels or ``(r, g, b)`` triples."""
    return np.array([[[v] * 3 if np.isscalar(v) else v for v in levels]], dtype=np.uint8)


ALPHA_OVER_WHITE = _as_rgb([255, 178, 100])  # 100 * a + 255 * (1 - a), a = 0, 128/255, 1

DECODE_CASES = {
    "I;16": (lambda: Image.fromarray(np.array([[0, 257 * 128, 65535]], np.uint16)), _as_rgb(GREY_LEVELS)),
    "I;16B": (lambda: Image.fromarray(np.array([[0, 257 * 128, 65535]], ">u2")), _as_rgb(GREY_LEVELS)),
    "I": (lambda: Image.fromarray(np.array([[0, 257 * 128, 65535]], np.int32)), _as_rgb(GREY_LEVELS)),
    "F-unit": (lambda: Image.fromarray(np.array([[0.0, 128 / 255, 1.0]], np.float32)), _as_rgb(GREY_LEVELS)),
    "F-bytes": (lambda: Image.fromarray(np.array([[0.0, 128.0, 255.0]], np.float32)), _as_rgb(GREY_LEVELS)),
    "LA": (lambda: _with_alpha("LA"), ALPHA_OVER_WHITE),
    "PA": (lambda: _with_alpha("PA"), ALPHA_OVER_WHITE),
    "RGBA": (lambda: _with_alpha("RGBA"), ALPHA_OVER_WHITE),
    "P": (lambda: _palette_image(False), _as_rgb([(10, 20, 30), (200, 100, 50), (200, 100, 50)])),
    "P-transparent": (lambda: _palette_image(True), _as_rgb([255, (200, 100, 50), (200, 100, 50)])),
    "CMYK": (lambda: Image.frombytes("CMYK", (3, 1), bytes([0, 0, 0, 0, 0, 0, 0, 255, 255, 0, 0, 0])),
             _as_rgb([255, 0, (0, 255, 255)])),
    "1": (lambda: Image.frombytes("1", (3, 1), bytes([0b01100000])), _as_rgb([0, 255, 255])),
    "L": (lambda: Image.fromarray(np.array([[0, 128, 255]], np.uint8)), _as_rgb(GREY_LEVELS)),
    "RGB": (lambda: Image.fromarray(_as_rgb([(1, 2, 3), 4, 5])), _as_rgb([(1, 2, 3), 4, 5])),
}


@pytest.mark.parametrize("case", list(DECODE_CASES))
def test_every_accepted_mode_decodes_as_expected(case):
    make, expected = DECODE_CASES[case]
    image = make()
    assert image.mode == case.split("-")[0]
    decoded = to_rgb(image)
    assert decoded.mode == "RGB"
    np.testing.assert_allclose(np.asarray(decoded, dtype=int), expected.astype(int), atol=1)


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", ".png"), ("I;16B", ".png"), ("LA", ".png"),
                                              ("P-transparent", ".png"), ("CMYK", ".tif"), ("F-unit", ".tif")])
def test_high_depth_files_decode_through_a_dataset(tmp_path, mode, suffix):
    """A 16-bit PNG used to decode as all white through the loaders (``convert("RGB")`` clips)."""
    entry = entry_of(make_csv_dataset(tmp_path / "data", f"depth-{abs(hash(mode)) % 10**6}"))
    root = tmp_path / "data" / entry.name
    make, expected = DECODE_CASES[mode]
    make().save(root / f"0{suffix}")
    (root / "test.csv").write_text(f"path,label\n0{suffix},0\n1.png,1\n")
    split = load_dataset(entry, "test", tmp_path / "data")
    np.testing.assert_allclose(np.asarray(split.decoded(0), dtype=int), expected.astype(int), atol=1)


@pytest.mark.parametrize("size", [(1_000_000, 1), (1, 20_000), (30_000, 200)])
def test_extreme_aspect_ratio_is_refused_naming_the_file(tmp_path, size):
    entry = entry_of(make_csv_dataset(tmp_path / "data", f"strip-{size[0]}x{size[1]}"))
    root = tmp_path / "data" / entry.name
    Image.new("L", size).save(root / "1.png")
    assert (root / "1.png").stat().st_size < 200_000
    split = load_dataset(entry, "test", tmp_path / "data")
    with pytest.raises(ValueError, match="aspect ratio"):
        split[1]
    problem = split.decode_problem(1)
    assert_one_line(split.bad_image_error(1, problem), str(root / "1.png"), f"{size[0]}x{size[1]}", "aspect ratio")
    with pytest.raises(ValueError, match="aspect ratio"):
        open_rgb(root / "1.png")


def test_moderate_aspect_ratio_still_decodes():
    assert to_rgb(Image.new("L", (100 * 3, 3))).size == (300, 3)


# ----------------------------------------------------------------------------------------------------------------
# Split fingerprints follow the bytes of the images: an image rewritten under its name is not served stale features.


def _rewrite_same_size(path) -> None:
    """Change the bytes of ``path`` in place, keeping its size and modification time."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size


def _recolour(path, colour) -> None:
    """Repaint the image at ``path`` (same format and size) in ``colour``."""
    with Image.open(path) as image:
        fmt, size = image.format, image.size
    Image.new("RGB", size, colour).save(path, format=fmt)


def _csv_case(tmp_path):
    gf._write_csv_folder(tmp_path / "own", [("img/a.png", 1), ("b.png", 0)])
    return gf._csv_entry(), "train", tmp_path / "own" / "img" / "a.png"


def _imagefolder_case(tmp_path):
    entry = parse_entry({"name": "folders", "format": "imagefolder", "root": "f", "classnames": "loader",
                         "splits": {"train": "train"}, "templates": "cifar10", "layout": "<split>/<class>/*"},
                        origin="test")
    for label, name in enumerate(["ant", "bee"]):
        gf._write_image(tmp_path / "f" / "train" / name / "a.png", gf._color(label))
    return entry, "train", tmp_path / "f" / "train" / "bee" / "a.png"


def _imagenetv2_case(tmp_path):
    base = tmp_path / "imagenetv2" / "ImageNetV2-matched-frequency"
    for label in range(3):
        gf._write_image(base / str(label) / "0.jpeg", gf._color(label))
    return replace(get_dataset("imagenetv2"), expected_count={}), "test", base / "1" / "0.jpeg"


def _torchvision_arrays_case(tmp_path):
    gf._write_cifar10(tmp_path)
    entry = parse_entry({"name": "cifar-local", "format": "torchvision", "root": ".", "classnames": "loader",
                         "splits": {"test": "test"}, "templates": "cifar10", "layout": "cifar-10-batches-py",
                         "tasks": ["zero_shot"],
                         "options": {"class": "CIFAR10", "verify_checksums": False}}, origin="test")
    return entry, "test", tmp_path / "cifar-10-batches-py" / "test_batch"


def _torchvision_files_case(tmp_path):
    names = shipped_classnames("food101")
    folders = [name.replace(" ", "_") for name in names]
    base = tmp_path / "food101" / "food-101"
    test = {folder: [f"{folder}/{500 + i}"] for i, folder in enumerate(folders)}
    for rel in (r for rels in test.values() for r in rels):
        gf._write_image(base / "images" / f"{rel}.jpg", gf._color(folders.index(rel.split("/")[0])))
    (base / "meta").mkdir()
    (base / "meta" / "train.json").write_text(json.dumps({}))
    (base / "meta" / "test.json").write_text(json.dumps(test))
    return "food101", "test", base / "images" / folders[3] / "503.jpg"


def _wds_case(tmp_path):
    gf._write_wds(tmp_path / "tiny", [[2, 0, 1], [1, 1]])
    return gf._wds_entry(), "test", tmp_path / "tiny" / "test" / "1.tar"


SPLIT_CASES = {"csv": _csv_case, "imagefolder": _imagefolder_case, "imagenetv2": _imagenetv2_case,
               "torchvision-arrays": _torchvision_arrays_case, "torchvision-files": _torchvision_files_case,
               "wds": _wds_case}


@pytest.mark.parametrize("case", list(SPLIT_CASES))
@pytest.mark.parametrize("edit", ["same-size-and-mtime", "recoloured"])
def test_rewriting_an_image_in_place_changes_the_split_fingerprint(tmp_path, case, edit):
    entry, split_name, image = SPLIT_CASES[case](tmp_path)
    before = load_dataset(entry, split_name, tmp_path)
    first = before.fingerprint
    assert load_dataset(entry, split_name, tmp_path).fingerprint == first
    if edit == "recoloured" and image.suffix not in (".tar", "") and image.name != "test_batch":
        _recolour(image, (1, 2, 3))
    else:
        _rewrite_same_size(image)
    after = load_dataset(entry, split_name, tmp_path)
    assert after.identity == before.identity
    assert after.fingerprint != first


def test_file_digests_are_remembered_across_runs_and_follow_edits(tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "_RACY_NS", -1)  # every file counts as settled, so it is remembered at once
    cache = tmp_path / "digests"
    monkeypatch.setattr(digests, "_state", {"folder": cache})
    entry, split_name, image = _csv_case(tmp_path)
    first = load_dataset(entry, split_name, tmp_path).fingerprint
    assert len(list(cache.glob("*.json"))) == 1
    monkeypatch.setattr(digests, "_MEMO", {})  # a new process: only the remembered table is left
    assert load_dataset(entry, split_name, tmp_path).fingerprint == first
    Image.new("RGB", (9, 9), (5, 6, 7)).save(image)
    assert load_dataset(entry, split_name, tmp_path).fingerprint != first


def test_recently_changed_files_are_not_remembered(tmp_path):
    """Two edits within one clock tick keep size, mtime and ctime alike: such files are hashed every time."""
    path = tmp_path / "x.bin"
    path.write_bytes(b"one")
    first = digests.files_digest([path])
    stamp = os.stat(path)
    path.write_bytes(b"two")
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert digests.files_digest([path]) != first


# ----------------------------------------------------------------------------------------------------------------
# Protocol lists and csv datasets: repeated rows, overlapping splits, paths leaving the root, encodings.


def _rows(*specs: tuple[str, str, str]) -> list[dict]:
    """Protocol rows from ``(path, label, split)``."""
    return [{**GOOD_ROW, "path": p, "label": label, "split": split, "video_id": p,
             "attack_type": "print" if label == "attack" else ""} for p, label, split in specs]


def test_repeated_attack_rows_are_refused_naming_the_lines(tmp_path):
    """30 copies of one attack row moved a D-EER from 35 % to 66 %."""
    rows = _rows(("a.png", "bona_fide", "test"), ("b.png", "attack", "test"))
    path = write_protocol_csv(tmp_path, rows + [rows[1]] * 30)
    with pytest.raises(ProtocolListError) as info:
        read_protocol(path, check_files=False)
    assert_one_line(info.value, str(path), "line 4", "'b.png'", "repeats line 3")


def test_sample_in_train_and_test_is_refused_naming_both_lines(tmp_path):
    path = write_protocol_csv(tmp_path, _rows(("a.png", "bona_fide", "train"), ("b.png", "attack", "train"),
                                              ("c.png", "bona_fide", "test"), ("a.png", "bona_fide", "test")))
    with pytest.raises(ProtocolListError) as info:
        read_protocol(path, check_files=False)
    assert_one_line(info.value, str(path), "line 5", "'a.png'", "'test'", "'train'", "line 2")


@pytest.mark.parametrize("bad", ["../../outside.png", "x/../../../outside.png", "/etc/passwd"])
def test_protocol_paths_leaving_the_data_root_are_refused(tmp_path, bad):
    """The list lives in ``data/lists``: ``../a.png`` stays in the data root, these leave it."""
    root = tmp_path / "data"
    (root / "lists").mkdir(parents=True)
    rows = _rows(("../a.png", "bona_fide", "test"), (bad, "attack", "test"))
    path = write_protocol_csv(root / "lists", rows)
    with pytest.raises(ProtocolListError) as info:
        read_protocol(path, check_files=False, within=root)
    assert_one_line(info.value, str(path), "line 3", "'path'")


def test_protocol_paths_inside_the_data_root_are_kept(tmp_path):
    root = tmp_path / "data"
    (root / "lists").mkdir(parents=True)
    path = write_protocol_csv(root / "lists", _rows(("../a.png", "bona_fide", "test"), ("b.png", "attack", "test")))
    assert [s.path for s in read_protocol(path, check_files=False, within=root).samples] == ["../a.png", "b.png"]


def test_protocol_csv_with_a_byte_order_mark_is_read(tmp_path):
    path = write_protocol_csv(tmp_path, _rows(("a.png", "bona_fide", "test"), ("b.png", "attack", "test")))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert [s.path for s in read_protocol(path, check_files=False).samples] == ["a.png", "b.png"]


def test_protocol_csv_that_is_not_utf8_names_the_file(tmp_path):
    path = write_protocol_csv(tmp_path, _rows(("a.png", "bona_fide", "test")))
    path.write_bytes(path.read_bytes().replace(b"a.png", b"caf\xe9.png"))
    with pytest.raises(ProtocolListError) as info:
        read_protocol(path, check_files=False)
    assert_one_line(info.value, str(path), "UTF-8")


def test_missing_train_split_names_the_protocol_file(tmp_path):
    path = write_protocol_csv(tmp_path, _rows(("a.png", "bona_fide", "test"), ("b.png", "attack", "test")))
    protocol = read_protocol(path, check_files=False)
    with pytest.raises(ProtocolListError) as info:
        protocol.split("train")
    assert isinstance(info.value, KeyError)  # callers that catch a missing split by KeyError still do
    assert_one_line(info.value, str(path), "no 'train' split", "test")


@pytest.mark.parametrize(("present", "absent"), [("attack", "bona fide"), ("bona_fide", "attack")])
def test_benchmark_test_split_needs_both_labels(tmp_path, present, absent):
    path = write_protocol_csv(tmp_path, _rows(("a.png", "bona_fide", "train"), ("b.png", "attack", "train"),
                                              ("c.png", present, "test")))
    with pytest.raises(ProtocolListError) as info:
        read_protocol(path, check_files=False).require_scorable()
    assert_one_line(info.value, str(path), f"no {absent} samples")


@pytest.mark.parametrize("bad", ["../outside.png", "sub/../../outside.png", "/etc/hostname"])
def test_csv_dataset_paths_leaving_the_root_are_refused(tmp_path, bad):
    entry = entry_of(make_csv_dataset(tmp_path / "data", "escape"))
    table = tmp_path / "data" / "escape" / "test.csv"
    table.write_text(f"path,label\n0.png,0\n{bad},1\n")
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset(entry, "test", tmp_path / "data")
    assert_one_line(info.value, str(table), "line 3", repr(bad))


def test_csv_dataset_with_a_byte_order_mark_is_read(tmp_path):
    entry = entry_of(make_csv_dataset(tmp_path / "data", "bom"))
    table = tmp_path / "data" / "bom" / "test.csv"
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    assert len(load_dataset(entry, "test", tmp_path / "data")) == 3


def test_csv_dataset_that_is_not_utf8_names_the_file(tmp_path, capsys):
    entry_path = make_csv_dataset(tmp_path / "data", "latin")
    table = tmp_path / "data" / "latin" / "test.csv"
    table.write_bytes(table.read_bytes() + b"caf\xe9.png,0\n")
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset(entry_of(entry_path), "test", tmp_path / "data")
    assert_one_line(info.value, str(table), "UTF-8")


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints: integer weights, files that are not state dicts, misnamed or damaged files, transposed embeddings.


def _as_dtype(key: str, dtype: torch.dtype):
    """A writer saving the state dict with tensor ``key`` cast to ``dtype``."""
    return lambda state, path: torch.save({k: v.to(dtype) if k == key else v for k, v in state.items()}, path)


def _all_as_int8_safetensors(state, path):
    """Every tensor stored as int8 in a safetensors file."""
    save_file({k: v.to(torch.int8).contiguous() for k, v in state.items()}, str(path))


def _truncated_safetensors(state, path):
    """A safetensors file cut in half."""
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CHECKPOINT_CASES = {
    "int32-param": ("w.pt", _as_dtype("visual.proj", torch.int32), ["visual.proj", "int32", "float32"]),
    "int8-everything": ("w.safetensors", _all_as_int8_safetensors, ["int8", "integer weights"]),
    "empty-pt": ("w.pt", lambda state, path: path.write_bytes(b""), ["empty"]),
    "list-pt": ("w.pt", lambda state, path: torch.save([1, 2, 3], path), ["holds a list", "not a state dict"]),
    "safetensors-in-pt": ("w.pt", lambda state, path: save_file({k: v.contiguous() for k, v in state.items()},
                                                               str(path)), ["safetensors file", "w.safetensors"]),
    "truncated-safetensors": ("w.safetensors", _truncated_safetensors, ["not a readable safetensors file"]),
    "bad-header-safetensors": ("w.safetensors", lambda state, path: path.write_bytes(b"\xff" * 8 + b"{oops"),
                               ["not a readable safetensors file"]),
    "transposed-positional-embedding": (
        "w.pt", lambda state, path: torch.save({k: v.T.contiguous() if k == "visual.positional_embedding" else v
                                                for k, v in state.items()}, path),
        ["visual.positional_embedding", "transposed"]),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_bad_open_clip_checkpoints_are_refused_naming_the_file(tmp_path, micro_state, case):
    name, write, named = CHECKPOINT_CASES[case]
    path = tmp_path / name
    write(micro_state, path)
    with pytest.raises((ValueError, ModelLoadError)) as info:
        load_model(ModelSpec(name="m", architecture="micro-clip", weights=str(path)), cache_dir=tmp_path)
    assert_one_line(info.value, str(path), *named)


def test_integer_weights_in_a_run_exit_2_without_results(tmp_path, capsys, micro_state):
    weights = tmp_path / "weights.pt"
    _as_dtype("visual.proj", torch.int8)(micro_state, weights)
    name = f"intckpt-{abs(hash(str(tmp_path))) % 10**8}"
    entry = make_csv_dataset(tmp_path / "data", name)
    config = write_config(tmp_path, datasets=[name], dataset_files=[str(entry)], protocols={"linear_probe": {"enabled": False}},
                          models=[{"name": "int8", "architecture": "micro-clip", "weights": str(weights)}])
    assert_cli_refuses(capsys, tmp_path, ["run", str(config), "--no-report"], str(weights), "visual.proj", "int8")


def test_published_checkpoint_with_integer_weights(tmp_path, micro_state):
    state = split_state(micro_state)
    key = "visual.transformer.resblocks.0.attn.q_proj.weight"
    state[key] = state[key].to(torch.int32)
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    spec = ModelSpec(name="pub", source="published", architecture="micro-clip", quick_gelu=True, weights=str(path))
    with pytest.raises((ValueError, ModelLoadError)) as info:
        load_model(spec, cache_dir=tmp_path)
    assert_one_line(info.value, str(path), key, "int32")


# ----------------------------------------------------------------------------------------------------------------
# The file system: read-only folders, a full disk, a folder where a cache file belongs, an unwritable export path.
# Each is one line naming the path, exit status 2, and no temporary or half-written file left behind.


@pytest.fixture
def micro_run(tmp_path, micro_state):
    """A run config evaluating a micro CLIP zero-shot on a 3-image csv dataset (a few seconds)."""
    weights = tmp_path / "weights.pt"
    torch.save(micro_state, weights)
    name = f"micro-{abs(hash(str(tmp_path))) % 10**8}"
    entry = make_csv_dataset(tmp_path / "data", name)
    return write_config(tmp_path, datasets=[name], dataset_files=[str(entry)], protocols={"linear_probe": {"enabled": False}},
                        models=[{"name": "micro", "architecture": "micro-clip", "weights": str(weights)}])


def temporaries(folder: Path) -> list[str]:
    """The temporary files and folders left anywhere under ``folder``."""
    return sorted(str(p) for p in folder.rglob("*") if ".tmp" in p.name) if folder.exists() else []


def _refuse_mkdir_under(monkeypatch, folder) -> None:
    """Make creating any folder under ``folder`` fail as on a read-only file system."""
    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(folder)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


@pytest.mark.parametrize("where", ["runs", "cache"])
def test_read_only_run_folder_or_cache(tmp_path, capsys, monkeypatch, micro_run, where):
    _refuse_mkdir_under(monkeypatch, tmp_path / where)
    code, lines = run_cli(capsys, ["run", str(micro_run), "--no-report"])
    assert code == 2, lines
    assert len(lines) == 1 and "Permission denied" in lines[0] and str(tmp_path / where) in lines[0], lines
    assert not temporaries(tmp_path)


def _fail_midway(real):
    """``real`` writing a few bytes of its output and then failing as on a full disk."""
    def write(file, *args, **kwargs):
        file.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def test_full_disk_while_storing_features_leaves_no_temporary(tmp_path, capsys, monkeypatch, micro_run):
    monkeypatch.setattr(np, "save", _fail_midway(np.save))
    code, lines = run_cli(capsys, ["run", str(micro_run), "--no-report"])
    assert code == 2, lines
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(tmp_path / "cache") in lines[0], lines
    assert not temporaries(tmp_path / "cache"), temporaries(tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.npy"))


def test_full_disk_while_writing_predictions_leaves_no_temporary(tmp_path, capsys, monkeypatch, micro_run):
    """Features are cached by a first run; the second fails writing the predictions file of a unit."""
    assert run_cli(capsys, ["run", str(micro_run), "--no-report"])[0] == 0
    shutil.rmtree(tmp_path / "runs")
    monkeypatch.setattr(np.lib.format, "write_array", _fail_midway(np.lib.format.write_array))
    code, lines = run_cli(capsys, ["run", str(micro_run), "--no-report"])
    assert code == 2, lines
    assert len(lines) == 1 and "No space left on device" in lines[0], lines
    assert not temporaries(tmp_path), temporaries(tmp_path)
    assert not list((tmp_path / "runs").rglob("*.npz"))


def test_cache_entry_replaced_by_a_folder(tmp_path, capsys, micro_run):
    assert run_cli(capsys, ["run", str(micro_run), "--no-report"])[0] == 0
    entry = next((tmp_path / "cache" / "features").rglob("*.npy"))
    entry.unlink()
    entry.mkdir()
    shutil.rmtree(tmp_path / "runs")
    code, lines = run_cli(capsys, ["run", str(micro_run), "--no-report"])
    assert code == 2, lines
    assert len(lines) == 1 and str(entry) in lines[0], lines
    assert not temporaries(tmp_path)


def test_export_to_an_unwritable_path(tmp_path, capsys, micro_state):
    weights = tmp_path / "weights.pt"
    torch.save(micro_state, weights)
    preset = tmp_path / "micro.yaml"
    preset.write_text(yaml.safe_dump({"name": "micro", "architecture": "micro-clip", "weights": str(weights)}))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    output = blocker / "model.onnx"
    code, lines = run_cli(capsys, ["export", str(preset), "--output", str(output), "--cache-dir", str(tmp_path)])
    assert code == 2, lines
    assert len(lines) == 1 and str(blocker) in lines[0], lines
    assert not temporaries(tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# An explicit empty list means none, not all.


def test_empty_biometrics_means_none_in_world_mode(tmp_path, capsys):
    from overspec.runner import plan_study

    config = _write(tmp_path, "world: true\nmodels: [tiny-s]\nbiometrics: []\ndatasets: [world-colours]\n"
                    + _base_settings(tmp_path))
    text, _ = plan_study(load_run_config(config))
    assert re.search(r"\+ 0 biometric\)", text), text


def test_hf_folder_with_integer_weights(tmp_path):
    from safetensors.torch import load_file

    from tests.models.test_other_sources import _tiny_hf_clip

    _tiny_hf_clip(tmp_path)
    path = next(tmp_path.glob("*.safetensors"))
    tensors = load_file(str(path))
    key = next(k for k in sorted(tensors) if k.startswith("vision_model.") and k.endswith("weight"))
    tensors[key] = tensors[key].to(torch.int32)
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises((ValueError, ModelLoadError)) as info:
        load_model(ModelSpec(name="hf", source="hf", weights=str(tmp_path)), cache_dir=tmp_path)
    assert_one_line(info.value, str(path), key, "I32")


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/hostname"])
def test_pairs_csv_paths_leaving_the_image_root_are_refused(tmp_path, bad):
    from overspec.data.formats.bin_pairs import read_pairs_csv

    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    path = tmp_path / "pairs.csv"
    path.write_text(f"path1,path2,issame\na.png,a.png,1\na.png,{bad},0\n")
    with pytest.raises(DatasetLayoutError) as info:
        read_pairs_csv(path)
    assert_one_line(info.value, str(path), "line 3", "'path2'", repr(bad))


def test_pairs_csv_that_is_not_utf8_names_the_file(tmp_path):
    from overspec.data.formats.bin_pairs import read_pairs_csv

    path = tmp_path / "pairs.csv"
    path.write_bytes(b"path1,path2,issame\ncaf\xe9.png,a.png,1\n")
    with pytest.raises(DatasetLayoutError) as info:
        read_pairs_csv(path)
    assert_one_line(info.value, str(path), "UTF-8")


def test_ijb_image_names_leaving_the_image_folder_are_refused(tmp_path):
    from overspec.data.formats.ijb import read_ijb_meta

    meta = write_ijb_meta_files(tmp_path / "ijb", "1 2 0\n")
    (meta / "ijbc_face_tid_mid.txt").write_text("a.jpg 1 10\n../../b.jpg 2 20\n")
    with pytest.raises(DatasetLayoutError) as info:
        read_ijb_meta(tmp_path / "ijb")
    assert_one_line(info.value, str(meta / "ijbc_face_tid_mid.txt"), "line 2", "'../../b.jpg'")
