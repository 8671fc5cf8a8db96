"""The forgetting monitor (general zero-shot beside the biometric validation) and the exported-step rules."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from overspec.cli.main import main
from overspec.data.catalog import dataset_registry, load_dataset, parse_entry, register_dataset
from overspec.errors import InputError
from overspec.features.store import FeatureStore
from overspec.features.text import build_classifier
from overspec.finetune import finetune
from overspec.finetune import run as run_module
from overspec.finetune.monitor import TrainingMonitor, kept_path, stratified_indices
from overspec.finetune.recipes import MonitorSettings, config_hash, load_recipe
from overspec.finetune.run import TrainingData
from overspec.finetune.selection import Choice, SelectionRule, choose_step, parse_rule, validation_records
from overspec.finetune.trainer import AttackValidator, latest_checkpoint
from overspec.models import ModelSpec, load_model
from overspec.models.lora import inject_lora, lora_state_dict
from overspec.models.registry import register_preset_file
from overspec.registry import Registry
from tests.finetune._toy import attack_split, toy_config

GENERAL = "toy-monitor-general"


# ------------------------------------------------------------------------------------------ rules on hand-made logs

def _records(*rows):
    """Records from (step, biometric or None, general or None) rows; metric 'accuracy' (higher is better)."""
    out = {}
    for step, bio, general in rows:
        record = {"step": step}
        if bio is not None:
            record["validation"] = {"accuracy": bio}
        if general is not None:
            record["monitor"] = {"acc1": general}
        out[step] = record
    return out


@pytest.mark.parametrize("text, rule", [("last", SelectionRule("last")), ("best", SelectionRule("best")),
                                        ("keep:0.99", SelectionRule("keep", 0.99)),
                                        (" keep:1 ", SelectionRule("keep", 1.0))])
def test_rules_parse(text, rule):
    assert parse_rule(text) == rule
    assert parse_rule(str(rule)) == rule


@pytest.mark.parametrize("text, message", [("keep:1.5", r"must lie in \(0, 1\], got 1.5"), ("keep:0", "must lie in"),
                                           ("keep:-0.2", "must lie in"), ("keep:nan", "must lie in"),
                                           ("keep:x", "'x' is not a number"), ("keep", "unknown rule"),
                                           ("first", "unknown rule 'first'"), ("best:1", "unknown rule")])
def test_bad_rules_are_refused_naming_the_key(text, message):
    with pytest.raises(InputError, match=message) as info:
        parse_rule(text, where="monitor.select")
    assert str(info.value).startswith("monitor.select")


def test_last_is_the_final_step_whatever_the_metrics():
    records = _records((0, None, 0.8), (2, 0.9, 0.8), (4, 0.6, 0.5))
    choice = choose_step(records, SelectionRule("last"), 4)
    assert (choice.step, choice.biometric, choice.general, choice.base_general) == (4, 0.6, 0.5, 0.8)


def test_best_takes_the_best_biometric_metric_with_its_direction():
    records = _records((0, None, 0.8), (2, 0.7, 0.8), (4, 0.9, 0.5), (6, 0.8, 0.8))
    assert choose_step(records, SelectionRule("best"), 6).step == 4
    eers = {s: {**r, "validation": {"eer": r["validation"]["accuracy"]}} for s, r in records.items() if s}
    assert choose_step(eers, SelectionRule("best"), 6).step == 2  # EER: lower is better


def test_best_ties_go_to_the_higher_general_accuracy_then_the_earlier_step():
    assert choose_step(_records((2, 0.9, 0.5), (4, 0.9, 0.7), (6, 0.9, 0.6)), SelectionRule("best"), 6).step == 4
    assert choose_step(_records((2, 0.9, 0.7), (4, 0.9, 0.7), (6, 0.9, 0.7)), SelectionRule("best"), 6).step == 2


def test_keep_takes_the_best_biometric_step_among_those_keeping_the_base():
    records = _records((0, None, 0.80), (2, 0.70, 0.80), (4, 0.95, 0.70), (6, 0.85, 0.795), (8, 0.90, 0.7919))
    choice = choose_step(records, SelectionRule("keep", 0.99), 8)  # floor 0.792: steps 2 and 6 qualify
    assert (choice.step, choice.biometric, choice.general, choice.base_general) == (6, 0.85, 0.795, 0.80)
    assert "2 of 4 validated steps" in choice.reason
    assert choose_step(records, SelectionRule("keep", 0.85), 8).step == 4  # floor 0.68: every step qualifies
    exactly = _records((0, None, 0.5), (2, 0.6, 0.5), (4, 0.7, 0.49))
    assert choose_step(exactly, SelectionRule("keep", 1.0), 4).step == 2  # equal to the base qualifies


def test_keep_ties_go_to_the_higher_general_accuracy_then_the_earlier_step():
    records = _records((0, None, 0.8), (2, 0.9, 0.80), (4, 0.9, 0.85), (6, 0.9, 0.85))
    assert choose_step(records, SelectionRule("keep", 0.99), 6).step == 4


def test_keep_never_exports_step_0_and_falls_back_to_the_least_forgetting_step(caplog):
    records = _records((0, 0.99, 0.9), (2, 0.8, 0.6), (4, 0.9, 0.7), (6, 0.95, 0.7))
    choice = choose_step(records, SelectionRule("keep", 0.99), 6)  # none keeps 0.891; 4 and 6 forget least
    assert choice.step == 6 and choice.general == 0.7 and choice.biometric == 0.95  # the tie: the better biometric
    tied = _records((0, None, 0.9), (2, 0.8, 0.6), (4, 0.9, 0.7), (6, 0.9, 0.7))
    assert choose_step(tied, SelectionRule("keep", 0.99), 6).step == 4  # then the earlier step
    assert "no validated step keeps" in choice.reason and "fell back" in caplog.text
    assert choose_step(records, SelectionRule("best"), 6).step == 6  # step 0 is no candidate for best either


def test_rules_needing_measurements_refuse_logs_without_them():
    with pytest.raises(InputError, match="no validated step has a biometric metric"):
        choose_step(_records((0, None, 0.8), (4, None, 0.7)), SelectionRule("best"), 4)
    with pytest.raises(InputError, match="did not measure step 0"):
        choose_step(_records((2, 0.9, 0.8), (4, 0.8, 0.7)), SelectionRule("keep", 0.9), 4)
    with pytest.raises(InputError, match="did not measure"):
        choose_step(_records((0, None, 0.8), (2, 0.9, None)), SelectionRule("keep", 0.9), 2)


def test_validation_records_skip_loss_lines(tmp_path):
    log = tmp_path / "train_log.jsonl"
    records = [{"step": 0, "monitor": {"acc1": 0.5}}, {"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0},
               {"step": 2, "validation": {"eer": 0.1}}]
    log.write_text("\n".join(json.dumps(r) for r in records))
    assert validation_records(log) == {0: {"step": 0, "monitor": {"acc1": 0.5}},
                                       2: {"step": 2, "validation": {"eer": 0.1}}}


# ------------------------------------------------------------------------------------------ settings and probe set

def test_stratified_indices_spread_over_classes_and_depend_on_the_seed_only():
    labels = np.repeat(np.arange(4), [10, 10, 10, 3])
    picked = stratified_indices(labels, 14, seed=3)
    assert len(picked) == 14 and len(set(picked)) == 14 and np.all(np.diff(picked) > 0)
    assert np.bincount(labels[picked]).tolist() == [4, 4, 3, 3]
    assert np.array_equal(picked, stratified_indices(labels, 14, seed=3))
    assert not np.array_equal(picked, stratified_indices(labels, 14, seed=4))
    assert np.bincount(labels[stratified_indices(labels, 30, seed=0)]).tolist() == [9, 9, 9, 3]  # small class runs out
    assert np.array_equal(stratified_indices(labels, 99, seed=0), np.arange(33))


def test_monitor_settings_are_validated_at_the_boundary():
    with pytest.raises(ValueError, match=r"monitor.*monitor.select: .*'keep:1.5'"):
        load_recipe("madation", overrides=("monitor.select=keep:1.5", "monitor.dataset=world-shapes"))
    with pytest.raises(ValueError, match="set monitor.dataset"):
        MonitorSettings(select="keep:0.9")
    with pytest.raises(ValueError, match="monitor.images must be >= 1"):
        MonitorSettings(images=0)
    with pytest.raises(ValueError, match="did you mean 'select'"):
        load_recipe("madation", overrides=("monitor.selct=best",))


def test_select_rule_is_part_of_the_run_hash_and_world_profiles_monitor():
    hashes = {config_hash(toy_config("madation", **{"monitor.select": rule, "monitor.dataset": "world-shapes"}))
              for rule in ("last", "best", "keep:0.99", "keep:0.9")}
    assert len(hashes) == 4
    for recipe in ("froundation", "madation", "foundpad"):
        world = load_recipe(recipe, profile="world").monitor
        assert (world.dataset, world.split, world.select) == ("world-shapes", "test", "last")
        assert load_recipe(recipe).monitor.dataset == ""  # off outside the world profile


def test_postfix_shows_the_biometric_metric_and_the_general_accuracy():
    record = {"step": 4, "validation": {"eer": 0.125, "method": "bob"}, "monitor": {"acc1": 0.5, "set": "x/test"}}
    assert TrainingMonitor.postfix(record) == {"eer": "0.1250", "general": "0.5000"}
    assert TrainingMonitor.postfix({"step": 0, "monitor": {"acc1": 0.25}}) == {"general": "0.2500"}


# ------------------------------------------------------------------------------------------ end to end on the toy

@pytest.fixture
def general_root(tmp_path):
    """A 3-class csv dataset (colour names over coloured noise) registered as a catalog entry, then removed."""
    root = tmp_path / "general-data"
    folder = root / "toy-general"
    (folder / "test").mkdir(parents=True)
    rng = np.random.default_rng(0)
    colours = np.array([[220, 30, 30], [30, 200, 30], [30, 30, 220]])
    rows = ["path,label"]
    for i in range(18):
        label = i % 3
        pixels = np.clip(colours[label] + rng.normal(0, 60, (16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "test" / f"{i}.png")
        rows.append(f"test/{i}.png,{label}")
    (folder / "test.csv").write_text("\n".join(rows) + "\n")
    (folder / "classnames.txt").write_text("red\ngreen\nblue\n")
    (folder / "templates.txt").write_text("a photo of something {c}.\n{c}\n")
    register_dataset(parse_entry({"name": GENERAL, "format": "csv", "root": "toy-general", "splits": {"test": "test"},
                                  "classnames": "file", "templates": "file", "layout": "csv", "tasks": ["zero_shot"]},
                                 origin="test"),
                     overwrite=True)
    yield root
    dataset_registry().unregister(GENERAL)


def _spec(checkpoint) -> ModelSpec:
    return ModelSpec(name="micro", architecture="micro-clip", weights=str(checkpoint))


def _data():
    return TrainingData(attack_split(), AttackValidator(attack_split(12, seed=1, split="dev")), {}, "toy-attack")


def _config(select="best", steps=6, **extra):
    return toy_config("madation", steps=steps, val_every=2, checkpoint_every=2,
                      **{"monitor.dataset": GENERAL, "monitor.images": 12, "monitor.select": select, **extra})


def _log(folder):
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def _monitored(folder):
    """The log's monitor records without their timings (which differ from run to run)."""
    out = []
    for record in _log(folder):
        if "monitor" in record:
            out.append({**record, "monitor": {k: v for k, v in record["monitor"].items() if k != "seconds"}})
    return out


def _zero_shot_acc1(encoder, images, cache):
    """Top-1 by hand: feature-store features against a classifier built straight from the text tower."""
    features = np.array(FeatureStore(cache, progress=False).image_features(encoder, images).x)
    with torch.no_grad():
        classifier = build_classifier(encoder.encode_text, list(images.classnames), list(images.templates)).numpy()
    predicted = np.argmax(features / np.linalg.norm(features, axis=1, keepdims=True) @ classifier, axis=1)
    return float(np.mean(predicted == images.labels))


def test_monitor_logs_general_zero_shot_and_exports_the_selected_state_bit_for_bit(tmp_path, micro_checkpoint,
                                                                                   general_root, monkeypatch):
    picked = {}

    def pick_step_2(records, rule, final_step):
        picked["choice"] = choose_step(records, rule, final_step)  # the rule runs; step 2 forced to test the export
        return Choice(2, str(rule), "forced by the test", records[2]["validation"]["eer"],
                      records[2]["monitor"]["acc1"])

    monkeypatch.setattr(run_module, "choose_step", pick_step_2)
    out = tmp_path / "out"
    model_yaml = finetune(_config(), _spec(micro_checkpoint), _data(), out, cache_dir=tmp_path / "cache",
                          monitor_root=general_root)
    log = _log(out)
    monitored = [r for r in log if "monitor" in r]
    assert [r["step"] for r in monitored] == [0, 2, 4, 6]
    assert all("validation" in r and set(r["kept"]) == {"sha256", "size"} for r in monitored[1:])
    assert monitored[0]["monitor"]["set"] == f"{GENERAL}/test" and monitored[0]["monitor"]["images"] == 12
    assert picked["choice"].step in (2, 4, 6) and picked["choice"].rule == "best"

    kept = {step: load_file(str(kept_path(out, step))) for step in (2, 4, 6)}
    assert not torch.equal(kept[2]["adapter.1"], kept[6]["adapter.1"])  # the steps differ, so the check means something
    fresh = load_model(_spec(micro_checkpoint), cache_dir=tmp_path / "cache")
    inject_lora(fresh.module, _config().lora)
    exported = load_file(str(out / "adapter.safetensors"))
    for i, key in enumerate(lora_state_dict(fresh.module)):
        (match,) = [name for name in exported if name.endswith(key)]
        assert torch.equal(exported[match], kept[2][f"adapter.{i}"])
    head = load_file(str(out / "head.safetensors"))
    assert torch.equal(head["weight"], kept[2]["head.linear.weight"].float())
    assert torch.equal(head["bias"], kept[2]["head.linear.bias"].float())

    record = json.loads((out / "finetune.json").read_text())
    assert record["selection"]["step"] == 2 and record["selection"]["reason"] == "forced by the test"
    assert "exported step 2, select best: forced by the test" in yaml.safe_load(model_yaml.read_text())["description"]

    images = load_dataset(GENERAL, "test", general_root)
    images = images.subset(stratified_indices(images.labels, 12, seed=0))
    base = load_model(_spec(micro_checkpoint), cache_dir=tmp_path / "cache")
    assert monitored[0]["monitor"]["acc1"] == _zero_shot_acc1(base, images, tmp_path / "check")
    finetuned = load_model(register_preset_file(model_yaml, Registry("model")), cache_dir=tmp_path / "cache")
    assert monitored[1]["monitor"]["acc1"] == _zero_shot_acc1(finetuned, images, tmp_path / "check")


def test_monitor_writes_tensorboard_scalars(tmp_path, micro_checkpoint, general_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    finetune(_config("last", steps=2), _spec(micro_checkpoint), _data(), out, cache_dir=tmp_path / "cache",
             monitor_root=general_root)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"monitor/acc1", "validation/eer", "loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("monitor/acc1")] == [0, 2]
    assert not (out / "validated").exists()  # select: last keeps no states
    assert json.loads((out / "finetune.json").read_text())["selection"]["step"] == 2


class _RecordingBar:
    """A stand-in for tqdm that records the postfix of every step."""

    postfixes: list = []

    def __init__(self, *args, **kwargs):
        type(self).postfixes = []

    def update(self, n):
        pass

    def set_postfix(self, **fields):
        self.postfixes.append(fields)

    def close(self):
        pass


def test_progress_bar_shows_the_general_accuracy_beside_the_validation(tmp_path, micro_checkpoint, general_root,
                                                                       monkeypatch):
    from overspec.finetune import trainer

    monkeypatch.setattr(trainer, "tqdm", _RecordingBar)
    out = tmp_path / "out"
    finetune(_config("last", steps=4), _spec(micro_checkpoint), _data(), out, cache_dir=tmp_path / "cache",
             monitor_root=general_root, progress=True)
    general = {r["step"]: f"{r['monitor']['acc1']:.4f}" for r in _log(out) if "monitor" in r}
    eer = {r["step"]: f"{r['validation']['eer']:.4f}" for r in _log(out) if "validation" in r}
    shown = _RecordingBar.postfixes
    assert len(shown) == 4 and all(set(fields) >= {"loss", "general"} for fields in shown)
    assert [fields["general"] for fields in shown] == [general[0], general[0], general[2], general[2]]
    assert "eer" not in shown[0] and shown[2]["eer"] == eer[2]


def test_resumed_monitor_logs_hold_each_step_once_and_export_the_same_step(tmp_path, micro_checkpoint, general_root):
    config, cache = _config("best"), tmp_path / "cache"
    straight = finetune(config, _spec(micro_checkpoint), _data(), tmp_path / "a", cache_dir=cache,
                        monitor_root=general_root)
    resumed = tmp_path / "b"
    finetune(config, _spec(micro_checkpoint), _data(), resumed, cache_dir=cache, monitor_root=general_root)
    for name in ("model.yaml", "finetune.json", "adapter.safetensors", "head.safetensors"):
        (resumed / name).unlink()
    shutil.rmtree(resumed / "checkpoints" / "step-0000006")
    shutil.rmtree(resumed / "checkpoints" / "step-0000004")
    assert latest_checkpoint(resumed).name == "step-0000002"
    finetune(config, _spec(micro_checkpoint), _data(), resumed, cache_dir=cache, monitor_root=general_root)
    log = _log(resumed)
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in log if "monitor" in r] == [0, 2, 4, 6]
    assert json.loads((resumed / "finetune.json").read_text())["resumed_from"] == 2
    assert _monitored(resumed) == _monitored(tmp_path / "a")  # same numbers and kept-state checksums
    first, again = (json.loads((folder / "finetune.json").read_text()) for folder in (tmp_path / "a", resumed))
    assert first["selection"] == again["selection"]
    for name in ("adapter.safetensors", "head.safetensors"):
        x, y = load_file(str(straight.parent / name)), load_file(str(resumed / name))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)

    for name in ("model.yaml", "finetune.json"):
        (resumed / name).unlink()
    shutil.rmtree(resumed / "checkpoints")  # a fresh start over the old log: the base is measured once again
    finetune(config, _spec(micro_checkpoint), _data(), resumed, cache_dir=cache, monitor_root=general_root)
    assert [r["step"] for r in _log(resumed) if "monitor" in r] == [0, 2, 4, 6]


def test_keep_without_a_validation_set_is_refused_before_training(tmp_path, micro_checkpoint,
                                                                              general_root):
    data = TrainingData(attack_split(), None, {}, "toy-attack")
    with pytest.raises(InputError, match="no validation set"):
        finetune(_config("keep:0.99"), _spec(micro_checkpoint), data, tmp_path / "out", cache_dir=tmp_path,
                 monitor_root=general_root)
    assert not (tmp_path / "out" / "train_log.jsonl").exists()


def test_a_dataset_outside_the_world_needs_a_data_root(tmp_path, micro_checkpoint, general_root):
    with pytest.raises(InputError, match="--monitor-root"):
        finetune(_config(), _spec(micro_checkpoint), _data(), tmp_path / "out", cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------ command line

@pytest.mark.parametrize("rule, message", [("keep:1.5", r"must lie in \(0, 1\]"), ("keep:x", "'x' is not a number"),
                                           ("newest", "unknown rule 'newest'")])
def test_cli_refuses_a_bad_select_rule(rule, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["finetune", "madation", "--base", "tiny-s", "--select", rule])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --select" in err
    assert re.search(message, err)


def test_cli_select_sets_the_rule_of_the_run(tmp_path, micro_checkpoint, general_root, capsys):
    from tests.finetune.test_cli import _mad_protocol, _micro_preset

    base = _micro_preset(tmp_path, micro_checkpoint)
    out = tmp_path / "out"
    code = main(["finetune", "madation", "--base", str(base), "--data", str(_mad_protocol(tmp_path)), "--steps", "2",
                 "--set", "batch_size=4", "--set", "lora.rank=2", "--set", "train_transform.resize=16",
                     "--set", "val_every=1", "--set",
                 f"monitor.dataset={GENERAL}", "--set", "monitor.images=6", "--select", "keep:0.5", "--monitor-root",
                 str(general_root), "--output", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "finetune.json").read_text())
    assert f"exported step {record['selection']['step']} (keep:0.5)" in capsys.readouterr().out
    assert record["config"]["monitor"]["select"] == "keep:0.5" and record["selection"]["rule"] == "keep:0.5"
    assert record["selection"]["step"] in (1, 2) and record["selection"]["base_general"] is not None


def test_the_probe_feeds_general_images_the_base_preprocessing_whatever_the_trainer_is_fed(
        tmp_path, micro_checkpoint, general_root):
    from overspec.finetune.monitor import base_probe
    from overspec.models import PreprocessSpec
    from overspec.models.preprocess import with_preprocess

    base = load_model(_spec(micro_checkpoint), cache_dir=tmp_path / "cache")
    images = load_dataset(GENERAL, "test", general_root)
    probe = base_probe(images, base, tmp_path / "cache")
    fed = with_preprocess(base, PreprocessSpec(size=16, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear",
                                               resize_mode="squash", channel_order="BGR"))  # MADation's, say
    assert probe(fed, "cpu")["acc1"] == probe(base, "cpu")["acc1"] == _zero_shot_acc1(base, images, tmp_path / "c")
    fresh = base_probe(images, fed, tmp_path / "cache2")  # built from the fed encoder: its (biometric) preprocessing
    assert not torch.equal(fresh._features(fed, "cpu"), probe._features(fed, "cpu"))
