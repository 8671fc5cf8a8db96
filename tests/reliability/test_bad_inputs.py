"""The bad-input catalogue of issue 6: each bad input is a one-line error naming the file or key at fault.

Where the input reaches the command line, ``overspec`` must also exit with status 2, print exactly one line on
stderr and leave no ``results.jsonl`` or other output file behind.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from overspec import metrics
from overspec.cli.main import main
from overspec.config.run import load_run_config
from overspec.config.typed import ConfigError
from overspec.runner import validated_settings
from overspec.data.base import DatasetLayoutError
from overspec.data.biometric.attack_list import COLUMNS, ProtocolListError, read_protocol
from overspec.data.catalog import load_dataset, parse_entry
from overspec.data.formats.ijb import read_ijb_meta
from overspec.models import ModelSpec, load_model
from overspec.models.adapters import image_weights_fingerprint
from overspec.models.base import ModelLoadError
from overspec.models.heads import load_binary_head
from overspec.models.lora import LoraConfig, inject_lora, save_lora_adapter
from tests.models._reference_clip import split_state



def assert_one_line(error: BaseException, *named: str) -> str:
    """Return the message of ``error`` after checking it is one line and mentions every string in ``named``."""
    message = str(error)
    assert "\n" not in message.strip(), f"message spans several lines: {message!r}"
    for part in named:
        assert part in message, f"message does not name {part!r}: {message!r}"
    return message


def assert_names(error: BaseException, *named: str) -> None:
    """Check that the message of ``error`` mentions every string in ``named`` (line count checked elsewhere)."""
    for part in named:
        assert part in str(error), f"message does not name {part!r}: {error}"


# ----------------------------------------------------------------------------------------------------------------
# The command line.


def run_cli(capsys, argv: list[str]) -> tuple[int, list[str]]:
    """Run ``overspec ARGV`` in-process; return the exit status and the error lines printed on stderr."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def write_config(tmp_path: Path, **settings) -> Path:
    """A run config writing under ``tmp_path`` (no world, data root in ``tmp_path``) with ``settings`` on top."""
    data = {"name": "bad", "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
            "data_root": str(tmp_path / "data"), "progress": False, **settings}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_cli_refuses(capsys, tmp_path: Path, argv: list[str], *named: str, one_line: bool = True) -> list[str]:
    """Exit status 2, the error line names ``named``, no results or output files are written."""
    code, lines = run_cli(capsys, argv)
    assert code == 2, f"exit status {code}, stderr {lines}"
    assert lines and lines[0].startswith(f"overspec {argv[0]}: error: ")
    for part in named:
        assert part in " ".join(lines), f"stderr does not name {part!r}: {lines}"
    assert not list(tmp_path.rglob("results.jsonl"))
    assert not files_under(tmp_path / "runs"), files_under(tmp_path / "runs")
    if one_line:
        assert len(lines) == 1, f"{len(lines)} stderr lines: {lines}"
    return lines


# ----------------------------------------------------------------------------------------------------------------
# Datasets: a tiny user dataset in the csv format.


def make_csv_dataset(data_root: Path, name: str, *, classes=("cat", "dog", "bird"), classnames: str = "file",
                     split_file: bool = True) -> Path:
    """Write a 3-image csv-format dataset under ``data_root/name`` and its catalog entry; return the entry path."""
    root = data_root / name
    root.mkdir(parents=True)
    (root / "classnames.txt").write_text("\n".join(classes) + "\n")
    (root / "templates.txt").write_text("a photo of a {c}.\n")
    rows = ["path,label"]
    for i in range(3):
        Image.new("RGB", (16, 16), (80 * i, 20, 200 - 60 * i)).save(root / f"{i}.png")
        rows.append(f"{i}.png,{i % len(classes)}")
    if split_file:
        (root / "test.csv").write_text("\n".join(rows) + "\n")
    entry = {"name": name, "format": "csv", "root": name, "splits": {"test": "test"}, "classnames": classnames,
             "templates": "file", "layout": "classnames.txt, templates.txt, test.csv", "tasks": ["zero_shot"]}
    path = data_root.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(entry))
    return path


def entry_of(path: Path):
    return parse_entry(yaml.safe_load(path.read_text()), origin=str(path))


def test_missing_dataset_root_names_the_folder(tmp_path):
    entry = entry_of(make_csv_dataset(tmp_path / "data", "gone"))
    missing_root = tmp_path / "elsewhere"
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset(entry, "test", missing_root)
    assert_names(info.value, str(missing_root / "gone"), "'gone'")


def test_missing_split_file_names_the_file(tmp_path):
    entry = entry_of(make_csv_dataset(tmp_path / "data", "nosplit", split_file=False))
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset(entry, "test", tmp_path / "data")
    assert_names(info.value, str(tmp_path / "data" / "nosplit" / "test.csv"))


def test_dataset_layout_errors_are_one_line(tmp_path):
    entry = entry_of(make_csv_dataset(tmp_path / "data", "gone1"))
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset(entry, "test", tmp_path / "elsewhere")
    assert_one_line(info.value, "gone1")


def test_class_list_shorter_than_the_labels(tmp_path):
    """A shipped 10-name list on data with 3 classes would silently misname classes."""
    entry = entry_of(make_csv_dataset(tmp_path / "data", "wrongnames", classnames="cifar10"))
    with pytest.raises(ValueError) as info:
        load_dataset(entry, "test", tmp_path / "data")
    assert_one_line(info.value, "'wrongnames'", "3 classes", "10")


def _dataset_cli_case(tmp_path: Path, name: str, **kwargs) -> Path:
    entry = make_csv_dataset(tmp_path / "data", name, **kwargs)
    return write_config(tmp_path, datasets=[name], dataset_files=[str(entry)], models=["tiny-s"])


@pytest.mark.parametrize("case", ["missing_root", "missing_split", "class_count"])
def test_dataset_problems_exit_2_without_results(tmp_path, capsys, case):
    name = f"cli-{case.replace('_', '-')}-{abs(hash(str(tmp_path))) % 10**8}"
    config = _dataset_cli_case(tmp_path, name, split_file=case != "missing_split",
                               classnames="cifar10" if case == "class_count" else "file")
    if case == "missing_root":
        (tmp_path / "data" / name / "test.csv").rename(tmp_path / "moved.csv")
        for path in sorted((tmp_path / "data" / name).iterdir()):
            path.unlink()
        (tmp_path / "data" / name).rmdir()
    assert_cli_refuses(capsys, tmp_path, ["run", str(config)], name, one_line=False)


def test_dataset_problem_is_one_stderr_line(tmp_path, capsys):
    name = f"cli-one-line-{abs(hash(str(tmp_path))) % 10**8}"
    config = _dataset_cli_case(tmp_path, name, split_file=False)
    assert_cli_refuses(capsys, tmp_path, ["run", str(config)], name)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints, adapters and heads.


@pytest.fixture(scope="module")
def micro_state(tmp_path_factory) -> dict[str, torch.Tensor]:
    from tests.conftest import MICRO_CFG

    path = tmp_path_factory.mktemp("cfg") / "micro-clip.json"
    path.write_text(json.dumps(MICRO_CFG))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    return dict(open_clip.create_model("micro-clip", pretrained=None).state_dict())


def _with_bad_keys(state: dict, kind: str, drop: str) -> tuple[dict, str]:
    """``state`` without ``drop`` (kind missing) or with an extra key (kind unexpected); returns the key at fault."""
    state = dict(state)
    if kind == "missing":
        del state[drop]
        return state, drop
    state["visual.not_a_layer.weight"] = torch.zeros(2)
    return state, "visual.not_a_layer.weight"


@pytest.mark.parametrize("kind", ["missing", "unexpected"])
def test_open_clip_local_weights_with_wrong_keys(tmp_path, micro_state, kind):
    state, key = _with_bad_keys(micro_state, kind, "visual.proj")
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSpec(name="m", architecture="micro-clip", weights=str(path)), cache_dir=tmp_path)
    assert_one_line(info.value, str(path), key, kind.capitalize())


@pytest.mark.parametrize("kind", ["missing", "unexpected"])
def test_published_checkpoint_with_wrong_keys(tmp_path, micro_state, kind):
    state, key = _with_bad_keys(split_state(micro_state), kind, "visual.transformer.resblocks.0.attn.k_proj.bias")
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    spec = ModelSpec(name="pub", source="published", architecture="micro-clip", quick_gelu=True, weights=str(path))
    with pytest.raises(ModelLoadError) as info:
        load_model(spec, cache_dir=tmp_path)
    assert_one_line(info.value, str(path), key, f"{kind} keys")


def test_bad_checkpoint_in_a_run_exits_2_without_results(tmp_path, capsys, micro_state):
    state, key = _with_bad_keys(micro_state, "missing", "visual.proj")
    weights = tmp_path / "weights.pt"
    torch.save(state, weights)
    name = f"ckpt-{abs(hash(str(tmp_path))) % 10**8}"
    entry = make_csv_dataset(tmp_path / "data", name)
    model = {"name": "broken", "architecture": "micro-clip", "weights": str(weights)}
    config = write_config(tmp_path, datasets=[name], dataset_files=[str(entry)], models=[model],
                          protocols={"linear_probe": {"enabled": False}})
    assert_cli_refuses(capsys, tmp_path, ["run", str(config), "--no-report"], str(weights), key)


@pytest.fixture
def lora_adapter(tmp_path, micro_state) -> tuple[ModelSpec, Path]:
    """A micro-clip base checkpoint and a valid rank-2 LoRA adapter file made for it."""
    weights = tmp_path / "base.pt"
    torch.save(micro_state, weights)
    spec = ModelSpec(name="m", architecture="micro-clip", weights=str(weights))
    encoder = load_model(spec, cache_dir=tmp_path)
    config = LoraConfig(rank=2, alpha=4.0, targets=("q", "v"))
    inject_lora(encoder.module, config)
    path = save_lora_adapter(tmp_path / "adapter.safetensors", encoder, encoder.module, config)
    return spec, path


def _rewrite_adapter(path: Path, change) -> str:
    """Apply ``change(tensors)`` to the adapter's tensors (metadata kept); return the key changed."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    key = change(tensors)
    save_file(tensors, str(path), metadata=metadata)
    return key


def _b_of_other_rank(tensors: dict) -> str:
    key = next(k for k in sorted(tensors) if k.endswith(".B"))
    tensors[key] = torch.zeros(tensors[key].shape[0], 3)  # A has rank 2
    return key.removesuffix(".B")


def _pair_for_other_width(tensors: dict) -> str:
    a_key = next(k for k in sorted(tensors) if k.endswith(".A"))
    tensors[a_key] = torch.zeros(2, tensors[a_key].shape[1] + 5)  # consistent rank, wrong input width
    return a_key.removesuffix(".A")


@pytest.mark.parametrize("change", [_b_of_other_rank, _pair_for_other_width], ids=["A-vs-B", "pair-vs-base"])
def test_lora_adapter_with_inconsistent_shapes(tmp_path, lora_adapter, change):
    spec, path = lora_adapter
    key = _rewrite_adapter(path, change)
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSpec(**{**spec.__dict__, "adapter": str(path)}), cache_dir=tmp_path)
    assert_one_line(info.value, str(path), key)


def test_head_file_of_the_wrong_shape(tmp_path):
    path = tmp_path / "head.safetensors"
    save_file({"weight": torch.zeros(3, 16), "bias": torch.zeros(3)}, str(path), metadata={"kind": "binary_head"})
    with pytest.raises(ModelLoadError) as info:
        load_binary_head(path)
    assert_one_line(info.value, str(path), "(3, 16)")


def test_published_head_of_the_wrong_width(tmp_path, micro_state):
    backbone, header = tmp_path / "backbone.pth", tmp_path / "7_header.pth"
    torch.save(split_state(micro_state), backbone)
    torch.save({"linear.weight": torch.zeros(2, 5), "linear.bias": torch.zeros(2)}, header)
    spec = ModelSpec(name="pub", source="published", architecture="micro-clip", quick_gelu=True,
                     weights=str(backbone), head=str(header))
    with pytest.raises(ModelLoadError) as info:
        load_model(spec, cache_dir=tmp_path)
    assert_one_line(info.value, str(header), "5-d", "16")


def test_lora_base_fingerprint_check_names_the_adapter(tmp_path, lora_adapter, micro_state):
    """An adapter applied to another base is refused (the error names the adapter file)."""
    spec, path = lora_adapter
    other = {k: v + 1.0 if k == "visual.proj" else v for k, v in micro_state.items()}
    torch.save(other, tmp_path / "other.pt")
    other_spec = ModelSpec(name="m2", architecture="micro-clip", weights=str(tmp_path / "other.pt"),
                           adapter=str(path))
    with pytest.raises(ModelLoadError) as info:
        load_model(other_spec, cache_dir=tmp_path)
    assert_one_line(info.value, str(path))
    assert image_weights_fingerprint(load_model(spec, cache_dir=tmp_path)) in str(info.value)


# ----------------------------------------------------------------------------------------------------------------
# Metrics: NaN / infinite scores and empty score sets.

GOOD = [0.9, 0.8, 0.7]
BAD_VALUES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
SCORE_METRICS = {
    "eer": (lambda g, i: metrics.eer(g, i), ("genuine", "impostor")),
    "tar_at_far": (lambda g, i: metrics.tar_at_far(g, i, 0.1), ("genuine", "impostor")),
    "iso30107": (lambda g, i: metrics.iso30107(g, i, ["print"] * len(i), 0.5), ("bona_fide", "attack")),
    "bpcer_at_apcer": (lambda g, i: metrics.bpcer_at_apcer(g, i, 0.1), ("bona_fide", "attack")),
    "d_eer": (lambda g, i: metrics.d_eer(g, i), ("bona_fide", "attack")),
}


@pytest.mark.parametrize("value", list(BAD_VALUES))
@pytest.mark.parametrize("side", [0, 1], ids=["genuine-side", "impostor-side"])
@pytest.mark.parametrize("metric", list(SCORE_METRICS))
def test_non_finite_scores_are_rejected_naming_the_argument(metric, side, value):
    fn, names = SCORE_METRICS[metric]
    scores = [[0.9, BAD_VALUES[value], 0.4], [0.1, 0.2, 0.3]]
    if side:
        scores.reverse()
    with pytest.raises(ValueError) as info:
        fn(*scores)
    assert_one_line(info.value, names[side], "NaN or infinite")


@pytest.mark.parametrize("side", [0, 1], ids=["empty-genuine", "empty-impostor"])
@pytest.mark.parametrize("metric", list(SCORE_METRICS))
def test_empty_score_sets_are_rejected_naming_the_argument(metric, side):
    fn, names = SCORE_METRICS[metric]
    scores = [[], GOOD] if side == 0 else [GOOD, []]
    with pytest.raises(ValueError) as info:
        fn(*scores)
    assert_one_line(info.value, names[side], "empty")


def _pairs(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)), rng.normal(size=(n, 4))


@pytest.mark.parametrize("value", list(BAD_VALUES))
def test_verification_accuracy_rejects_non_finite_inputs(value):
    first, second = _pairs()
    second[2, 1] = BAD_VALUES[value]
    with pytest.raises(ValueError) as info:
        metrics.verification_kfold(first, second, [True, False] * 3, n_folds=2)
    assert_one_line(info.value, "embeddings2", "NaN or infinite")


@pytest.mark.parametrize(("issame", "missing"), [([False] * 6, "same (genuine)"), ([True] * 6, "impostor")])
def test_verification_accuracy_needs_both_pair_kinds(issame, missing):
    """All-same or all-different pairs give a trivial 100 % accuracy; the metric refuses them."""
    first, second = _pairs()
    with pytest.raises(ValueError) as info:
        metrics.verification_kfold(first, second, issame, n_folds=2)
    assert_one_line(info.value, "issame", missing)


# ----------------------------------------------------------------------------------------------------------------
# Protocol lists and IJB meta.


def write_protocol_csv(tmp_path: Path, rows: list[dict], columns=COLUMNS) -> Path:
    path = tmp_path / "protocol.csv"
    lines = [",".join(columns)] + [",".join(row.get(c, "") for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD_ROW = {"path": "a.png", "label": "bona_fide", "video_id": "v1", "subject_id": "s1", "split": "test", "source": "O"}


def test_protocol_csv_with_an_unknown_label(tmp_path):
    path = write_protocol_csv(tmp_path, [GOOD_ROW, {**GOOD_ROW, "path": "b.png", "label": "morph"}])
    with pytest.raises(ProtocolListError) as info:
        read_protocol(path, check_files=False)
    assert_one_line(info.value, str(path), "line 3", "'label'", "'morph'")


def test_protocol_csv_with_a_missing_column(tmp_path):
    path = write_protocol_csv(tmp_path, [GOOD_ROW], columns=tuple(c for c in COLUMNS if c != "split"))
    with pytest.raises(ProtocolListError) as info:
        read_protocol(path, check_files=False)
    assert_one_line(info.value, str(path), "'split'")


def write_ijb_meta_files(root: Path, pairs: str, gallery: str | None = None) -> Path:
    """A two-template IJB-C meta folder (templates 1 and 2) with the given pair lines and optional gallery CSV."""
    meta = root / "meta"
    meta.mkdir(parents=True)
    (meta / "ijbc_face_tid_mid.txt").write_text("a.jpg 1 10\nb.jpg 2 20\n")
    points = " ".join(["1.0"] * 10)
    (meta / "ijbc_name_5pts_score.txt").write_text(f"a.jpg {points} 0.9\nb.jpg {points} 0.8\n")
    (meta / "ijbc_template_pair_label.txt").write_text(pairs)
    if gallery is not None:
        (meta / "ijbc_1N_gallery_G1.csv").write_text(gallery)
    return meta


def test_ijb_pairs_naming_unknown_templates(tmp_path):
    meta = write_ijb_meta_files(tmp_path / "ijb", "1 2 0\n1 77 1\n")
    with pytest.raises(DatasetLayoutError) as info:
        read_ijb_meta(tmp_path / "ijb")
    assert_names(info.value, str(meta / "ijbc_template_pair_label.txt"), "line 2", "unknown template id 77")


def test_ijb_gallery_naming_unknown_templates(tmp_path):
    meta = write_ijb_meta_files(tmp_path / "ijb", "1 2 0\n", gallery="TEMPLATE_ID,SUBJECT_ID\n1,5\n42,6\n")
    with pytest.raises(DatasetLayoutError) as info:
        read_ijb_meta(tmp_path / "ijb")
    assert_names(info.value, str(meta / "ijbc_1N_gallery_G1.csv"), "42")


def test_ijb_meta_error_is_one_line(tmp_path):
    write_ijb_meta_files(tmp_path / "ijb", "1 77 1\n")
    with pytest.raises(DatasetLayoutError) as info:
        read_ijb_meta(tmp_path / "ijb")
    assert_one_line(info.value, "77")


# ----------------------------------------------------------------------------------------------------------------
# Configuration: unknown keys and out-of-range values, in the file and on the command line.


@pytest.mark.parametrize(("settings", "named"), [
    ({"batch_sise": 8}, ["unknown key 'batch_sise'", "did you mean 'batch_size'"]),
    ({"protocols": {"linear_probe": {"val_fracton": 0.3}}}, ["protocols.linear_probe", "unknown key 'val_fracton'",
                                                             "did you mean 'val_fraction'"]),
    ({"finetune": {"recipe": ["froundation"]}}, ["finetune", "unknown key 'recipe'", "did you mean 'recipes'"]),
    ({"batch_size": 0}, ["batch_size", "got 0"]),
    ({"num_workers": -1}, ["num_workers", "got -1"]),
    ({"protocols": {"linear_probe": {"val_fraction": 1.5}}}, ["val_fraction", "1.5"]),
    ({"protocols": {"attack": {"scoring": ["own_head", "vibes"]}}}, ["protocols.attack", "scoring", "'vibes'"]),
    ({"protocols": {"knn": {}}}, ["protocols", "unknown protocol 'knn'"]),
    ({"linear_probe": {"val_fraction": 0.3}}, ["'linear_probe' is now a protocol setting", "protocols:"]),
    ({"on_bad_image": "ignore"}, ["on_bad_image", "'ignore'"]),
    ({"device": "gpu"}, ["device", "'gpu'"]),
    ({"batch_size": "big"}, ["batch_size", "'big'"]),
], ids=["unknown-top", "unknown-nested", "unknown-finetune", "batch-size-0", "negative-workers", "val-fraction",
        "attack-scoring", "unknown-protocol", "moved-key", "bad-image-policy", "device", "batch-size-type"])
def test_bad_run_config_values(tmp_path, capsys, settings, named):
    config = write_config(tmp_path, **{"models": ["tiny-s"], **settings})
    with pytest.raises(ConfigError) as info:
        validated_settings(load_run_config(config), where=str(config))
    assert_one_line(info.value, str(config), *named)
    assert_cli_refuses(capsys, tmp_path, ["run", str(config)], str(config), *named)


@pytest.mark.parametrize(("flag", "named"), [
    (["--batch-size", "0"], ["batch_size", "got 0"]),
    (["--num-workers", "-2"], ["num_workers", "got -2"]),
    (["--device", "tpu"], ["device", "'tpu'"]),
    (["--on-bad-image", "retry"], ["on_bad_image", "'retry'"]),
])
def test_bad_values_from_command_line_flags(tmp_path, capsys, flag, named):
    config = write_config(tmp_path, models=["tiny-s"])
    assert_cli_refuses(capsys, tmp_path, ["run", str(config), *flag], *named)


@pytest.mark.parametrize(("override", "named"), [
    ("lora.rank=0", ["lora", "rank", "got 0"]),
    ("lora.alpha=-4", ["lora", "alpha", "got -4"]),
    ("lora.rnak=4", ["rnak", "did you mean 'rank'"]),
])
def test_bad_finetune_override_on_the_command_line(tmp_path, capsys, override, named):
    out = tmp_path / "runs" / "ft"
    assert_cli_refuses(capsys, tmp_path, ["finetune", "froundation", "--base", "tiny-s", "--output", str(out),
                                          "--cache-dir", str(tmp_path / "cache"), "--set", override], *named)
    assert not out.exists()


@pytest.mark.parametrize(("override", "named"), [
    ("lora.rank=0", ["lora", "rank", "got 0"]),
    ("lora.alpha=-4", ["lora", "alpha", "got -4"]),
])
def test_bad_finetune_override_in_a_run_config(tmp_path, capsys, override, named):
    config = write_config(tmp_path, models=["tiny-s"], finetune={"recipes": ["froundation"], "profile": "world",
                                                                 "overrides": [override]})
    assert_cli_refuses(capsys, tmp_path, ["run", str(config)], "froundation", *named)
    assert not (tmp_path / "cache" / "finetune").exists()


def test_unknown_model_preset_suggests_the_nearest(tmp_path, capsys):
    config = write_config(tmp_path, models=["tiny-z"])
    assert_cli_refuses(capsys, tmp_path, ["run", str(config)], "'tiny-z'", "tiny-s")


def test_unknown_key_in_a_model_spec_of_the_run_config(tmp_path, capsys):
    config = write_config(tmp_path, models=[{"name": "m", "architecure": "micro-clip"}])
    assert_cli_refuses(capsys, tmp_path, ["run", str(config)], str(config), "unknown key 'architecure'",
                       "did you mean 'architecture'")


def test_unknown_key_in_a_base_preset_file_for_finetune(tmp_path, capsys):
    preset = tmp_path / "base.yaml"
    preset.write_text(yaml.safe_dump({"name": "mine", "architecture": "micro-clip", "wieghts": "x.pt"}))
    out = tmp_path / "runs" / "ft"
    assert_cli_refuses(capsys, tmp_path, ["finetune", "froundation", "--base", str(preset), "--output", str(out),
                                          "--cache-dir", str(tmp_path / "cache")],
                       str(preset), "unknown key 'wieghts'", "did you mean 'weights'")
    assert not out.exists()
