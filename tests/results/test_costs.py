"""Per-model costs: parameter counts from safetensors headers, training records, evaluation seconds."""

import json

import pytest
import torch
from safetensors.torch import save_file

from overspec.config.model import CombineTerm, ModelSpec
from overspec.results.costs import model_cost, model_costs, safetensors_parameter_count, training_record
from overspec.results.units import save_unit_seconds, stored_unit_seconds


def _adapter(folder, shapes):
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"t{i}": torch.zeros(shape) for i, shape in enumerate(shapes)}
    save_file(tensors, str(folder / "adapter.safetensors"), metadata={"rank": "2"})
    return folder / "adapter.safetensors"


def test_parameter_count_reads_the_header_and_equals_numel(tmp_path):
    shapes = [(2, 16), (16, 2), (3,), ()]
    path = _adapter(tmp_path, shapes)
    assert safetensors_parameter_count(path) == 2 * 16 + 16 * 2 + 3 + 1


def test_fine_tune_cost_prefers_the_training_record(tmp_path):
    path = _adapter(tmp_path / "ft", [(4, 8), (8, 4)])
    (tmp_path / "ft" / "finetune.json").write_text(json.dumps(
        {"train_seconds": 12.3456, "steps": 100, "device": "cpu",
         "trainable_parameters": {"adapter": 64, "head": 130}}))
    spec = ModelSpec(name="s-fr", architecture="x", adapter=str(path), base="s", specialisation="fr")
    cost = model_cost(spec, 1000, [1.0, 2.5])
    assert (cost.kind, cost.trainable_parameters, cost.trainable_source) == ("fine-tune", 194, "adapter+head")
    assert (cost.train_seconds, cost.train_steps, cost.train_device) == (12.346, 100, "cpu")
    assert (cost.eval_seconds, cost.eval_units, cost.image_parameters) == (3.5, 2, 1000)


def test_fine_tune_without_record_counts_its_adapter_file(tmp_path):
    path = _adapter(tmp_path / "ft", [(4, 8), (8, 4)])
    spec = ModelSpec(name="s-fr", architecture="x", adapter=str(path), base="s", specialisation="fr")
    cost = model_cost(spec, None, [])
    assert (cost.trainable_parameters, cost.trainable_source, cost.train_seconds) == (64, "adapter file", None)


def test_unreadable_record_is_ignored_with_a_warning(tmp_path, caplog):
    path = _adapter(tmp_path / "ft", [(4, 8)])
    (tmp_path / "ft" / "finetune.json").write_text("{not json")
    spec = ModelSpec(name="s-fr", architecture="x", adapter=str(path), base="s")
    assert training_record(spec) is None and "unreadable training record" in caplog.text


def test_bases_and_combinations_train_nothing(tmp_path):
    base = ModelSpec(name="s", architecture="x")
    combo = ModelSpec(name="s-fr@0.5", architecture="x", base="s",
                      combine=(CombineTerm(model="s-fr", scale=0.5),))
    costs = model_costs([base, combo], {"s": 10, "s-fr@0.5": 10},
                        {"u1": ("s", 1.0), "u2": ("s-fr@0.5", 2.0), "u3": ("s", 0.5)})
    assert costs["s"]["kind"] == "base" and costs["s"]["trainable_parameters"] is None
    assert costs["s"]["eval_seconds"] == 1.5 and costs["s"]["eval_units"] == 2
    assert costs["s-fr@0.5"]["kind"] == "combination" and costs["s-fr@0.5"]["trainable_parameters"] is None


@pytest.mark.parametrize(("text", "expected"), [('{"seconds": 2.5}', 2.5), ('{"seconds": -1}', None),
                                                ('{"seconds": true}', None), ("[]", None), ("{", None)])
def test_stored_unit_seconds_accepts_only_a_non_negative_number(tmp_path, text, expected):
    path = tmp_path / "u.json"
    path.write_text(text)
    assert stored_unit_seconds(path) == expected


def test_unit_seconds_round_trip_and_absent_file(tmp_path):
    save_unit_seconds(tmp_path / "timings" / "u.json", 1.23456)
    assert stored_unit_seconds(tmp_path / "timings" / "u.json") == 1.235
    assert stored_unit_seconds(tmp_path / "missing.json") is None


def test_a_preprocessing_control_is_named_as_one():
    control = ModelSpec(name="s~s-fr-preprocess", architecture="x", options={"control_of": "s-fr"})
    assert model_cost(control, 10, [1.0]).kind == "preprocessing control"
