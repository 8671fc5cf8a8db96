import json
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from overspec.finetune import finetune
from overspec.finetune.run import TrainingData, model_preset_dict
from overspec.finetune.trainer import AttackValidator, Trainer, embed, latest_checkpoint
from overspec.models import ModelSpec, PreprocessSpec, load_model
from overspec.models.lora import LoraConfig, inject_lora, lora_parameters, lora_state_dict
from overspec.models.registry import register_preset_file
from overspec.registry import Registry
from overspec.results.costs import safetensors_parameter_count
from tests.finetune._toy import attack_split, identity_split, toy_config


def _spec(checkpoint) -> ModelSpec:
    return ModelSpec(name="micro", architecture="micro-clip", weights=str(checkpoint))


def train_toy_fr(checkpoint: str, out_dir: Path, steps: int = 5) -> tuple[list[float], dict]:
    """Train micro-clip with a CosFace head for a few steps (also run by each DDP worker); no dropout."""
    torch.manual_seed(0)
    encoder = load_model(_spec(checkpoint), cache_dir=out_dir)
    config = toy_config("froundation", steps=steps)
    inject_lora(encoder.module, LoraConfig(rank=2, alpha=4.0))
    trainer = Trainer(config, encoder, identity_split(), out_dir, adapter_parameters=lora_parameters(encoder.module),
                      progress=False)
    result = trainer.fit(resume=False)
    return result.losses, {k: v.clone() for k, v in lora_state_dict(encoder.module).items()}


def _attack_data():
    return TrainingData(attack_split(), AttackValidator(attack_split(12, seed=1, split="dev")), {}, "toy-attack")


def _identity_data():
    return TrainingData(identity_split(), None, {}, "toy-ids")


@pytest.mark.parametrize("recipe", ["madation", "foundpad", "froundation"])  # flip; crop, gamma, shift, jitter; RA
def test_resume_from_a_checkpoint_is_bit_identical(tmp_path, micro_checkpoint, recipe):
    config = toy_config(recipe, steps=6, checkpoint_every=3, **{"lora.dropout": 0.3})  # dropout uses torch RNG
    data = _identity_data if recipe == "froundation" else _attack_data
    straight = finetune(config, _spec(micro_checkpoint), data(), tmp_path / "a", cache_dir=tmp_path)
    interrupted = tmp_path / "b"
    finetune(config, _spec(micro_checkpoint), data(), interrupted, cache_dir=tmp_path)
    for name in ("model.yaml", "finetune.json", "adapter.safetensors", "head.safetensors"):
        (interrupted / name).unlink(missing_ok=True)
    shutil.rmtree(interrupted / "checkpoints" / "step-0000006")
    assert latest_checkpoint(interrupted).name == "step-0000003"
    resumed = finetune(config, _spec(micro_checkpoint), data(), interrupted, cache_dir=tmp_path)
    assert json.loads((interrupted / "finetune.json").read_text())["resumed_from"] == 3
    a, b = load_file(str(straight.parent / "adapter.safetensors")), load_file(str(resumed.parent / "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if k.endswith(".B"))  # training moved the adapters
    log = [json.loads(line) for line in (interrupted / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    if recipe == "froundation":
        return
    ha, hb = load_file(str(straight.parent / "head.safetensors")), load_file(str(resumed.parent / "head.safetensors"))
    assert all(torch.equal(ha[k], hb[k]) for k in ha)
    with pytest.raises(ValueError, match="different run"):
        finetune(toy_config("madation", steps=7, checkpoint_every=3), _spec(micro_checkpoint), _attack_data(),
                 interrupted, cache_dir=tmp_path)


def test_checkpoints_hold_no_pickles(tmp_path, micro_checkpoint):
    finetune(toy_config("madation", steps=2, checkpoint_every=2), _spec(micro_checkpoint), _attack_data(),
             tmp_path / "out", cache_dir=tmp_path)
    folder = tmp_path / "out" / "checkpoints" / "step-0000002"
    assert sorted(p.name for p in folder.iterdir()) == ["optimizer.safetensors", "rng.safetensors", "state.json",
                                                        "trainable.safetensors"]
    for path in folder.iterdir():
        with pytest.raises((pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError)):
            pickle.loads(path.read_bytes())
    assert not list((tmp_path / "out" / "checkpoints").glob("*.tmp"))


def test_finetuned_model_yaml_loads_through_the_registry_and_matches_training(tmp_path, micro_checkpoint):
    config = toy_config("madation", steps=4, val_every=2)
    model_yaml = finetune(config, _spec(micro_checkpoint), _attack_data(), tmp_path / "out", cache_dir=tmp_path,
                          name="micro-mad")
    spec = register_preset_file(model_yaml, Registry("model"))
    assert (spec.name, spec.base, spec.specialisation, spec.architecture) == ("micro-mad", "micro", "mad", "micro-clip")
    assert spec.preprocess == config.train_transform.eval_spec()  # the recipe's evaluation preprocessing: BGR, 0.5
    assert spec.preprocess.channel_order == "BGR" and spec.preprocess.size == 16
    loaded = load_model(spec, cache_dir=tmp_path)
    assert loaded.info["adapter_kind"] == "lora" and loaded.head is not None
    base = load_model(_spec(micro_checkpoint), cache_dir=tmp_path)
    split = attack_split(8, seed=2)
    tuned_emb, base_emb = embed(loaded, split).numpy(), embed(base, split).numpy()
    assert not np.allclose(tuned_emb, base_emb, atol=1e-4)
    record = json.loads((tmp_path / "out" / "finetune.json").read_text())
    scores = loaded.head.scores(tuned_emb)
    assert record["validation"]["eer"] >= 0.0 and scores.shape == (8,)
    stored_adapter = safetensors_parameter_count(tmp_path / "out" / "adapter.safetensors")
    stored_head = safetensors_parameter_count(tmp_path / "out" / "head.safetensors")
    assert record["trainable_parameters"] == {"adapter": stored_adapter, "head": stored_head}
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "validation" in r] == [2, 4]
    again = finetune(config, _spec(micro_checkpoint), _attack_data(), tmp_path / "out", cache_dir=tmp_path,
                     name="micro-mad")
    assert again == model_yaml and json.loads((tmp_path / "out" / "finetune.json").read_text()) == record


def test_a_recipe_sized_for_another_input_is_refused_naming_the_key(tmp_path, micro_checkpoint):
    config = toy_config("madation", **{"train_transform.resize": 32})
    with pytest.raises(ValueError, match=r"gives 32 px images but model 'micro' takes 16 px.*train_transform.resize"):
        finetune(config, _spec(micro_checkpoint), _attack_data(), tmp_path / "out", cache_dir=tmp_path)


def test_fr_training_reduces_the_margin_loss_and_is_deterministic(tmp_path, micro_checkpoint):
    losses, adapter = train_toy_fr(str(micro_checkpoint), tmp_path / "one", steps=8)
    again, adapter2 = train_toy_fr(str(micro_checkpoint), tmp_path / "two", steps=8)
    assert losses == again and all(torch.equal(adapter[k], adapter2[k]) for k in adapter)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, micro_config_file,
                                                                          micro_checkpoint):
    out = tmp_path / "ddp"
    out.mkdir()
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(micro_config_file), str(micro_checkpoint),
                                      str(out)), nprocs=2, start_method="spawn")
    single_losses, single_adapter = train_toy_fr(str(micro_checkpoint), tmp_path / "single")
    ddp_losses = json.loads((out / "losses.json").read_text())
    ddp_adapter = np.load(out / "adapter.npz")
    # per-rank micro-batches are the exact halves of the single batch: only float summation order differs
    np.testing.assert_allclose(ddp_losses, single_losses, rtol=1e-5, atol=1e-6)
    for key, value in single_adapter.items():
        np.testing.assert_allclose(ddp_adapter[key], value.numpy(), rtol=1e-4, atol=1e-6)


def _worker(rank, world, init_file, config_file, checkpoint, out_dir):
    from tests.finetune._ddp_worker import train

    train(rank, world, init_file, config_file, checkpoint, out_dir)


def test_training_writes_jsonl_and_tensorboard_logs_with_the_same_losses(tmp_path, micro_checkpoint):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses, _ = train_toy_fr(str(micro_checkpoint), tmp_path / "logs", steps=4)
    logged = [json.loads(line) for line in (tmp_path / "logs" / "train_log.jsonl").read_text().splitlines()]
    board = EventAccumulator(str(tmp_path / "logs" / "tensorboard"))
    board.Reload()
    assert "loss" in board.Tags()["scalars"]
    events = {e.step: e.value for e in board.Scalars("loss")}
    for record in logged:
        if "loss" in record:
            assert events[record["step"]] == pytest.approx(record["loss"], rel=1e-6)
    assert len(events) >= 1 and len(losses) == 4


def test_a_fine_tune_of_a_base_with_a_partial_preprocess_keeps_it_partial(tmp_path):
    base = ModelSpec(name="micro", architecture="micro-clip", weights="/m.pt",
                     preprocess=PreprocessSpec.from_config(channel_order="BGR"))
    preset = model_preset_dict(base, "micro-fr", "fr", tmp_path / "adapter.safetensors", None, "toy")
    assert preset["preprocess"] == {"channel_order": "BGR"}
    complete = model_preset_dict(replace(base, preprocess=PreprocessSpec(size=32)), "micro-fr", "fr",
                                 tmp_path / "adapter.safetensors", None, "toy")
    assert complete["preprocess"]["size"] == 32 and len(complete["preprocess"]) == 6
