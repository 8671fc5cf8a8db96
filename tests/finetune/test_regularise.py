"""Regularised fine-tuning: the distillation and L2-SP terms, their config, their effect and their caching."""

import json

import numpy as np
import pytest
import torch

from overspec.data.base import content_fingerprint
from overspec.finetune import finetune
from overspec.finetune.recipes import config_hash
from overspec.finetune.regularise import (Regulariser, RegulariseSettings, adapters_off, anchored_drift,
                                          distill_loss, regulariser_for)
from overspec.finetune.run import TrainingData
from overspec.finetune.trainer import AttackValidator, Trainer, _Objective, embed
from overspec.models import ModelSpec, load_model
from overspec.models.lora import LoraConfig, LoraDelta, inject_lora, lora_parameters, lora_state_dict, merge_lora
from tests.finetune._toy import attack_split, identity_split, toy_config


def _spec(checkpoint) -> ModelSpec:
    return ModelSpec(name="micro", architecture="micro-clip", weights=str(checkpoint))


def _adapted(checkpoint, cache, rank: int = 2, seed: int = 0):
    """The micro model with LoRA on q, v and out, every ``B`` drawn at random (a trained-looking adapter)."""
    torch.manual_seed(seed)
    encoder = load_model(_spec(checkpoint), cache_dir=cache)
    inject_lora(encoder.module, LoraConfig(rank=rank, alpha=4.0, targets=("q", "v", "out")))
    with torch.no_grad():
        for delta in (m for m in encoder.module.modules() if isinstance(m, LoraDelta)):
            delta.B.normal_(0, 0.05)
    return encoder


def _images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_distillation_is_the_mean_squared_distance_of_the_normalised_embeddings():
    features = torch.tensor([[3.0, 4.0], [0.0, 2.0], [-1.0, 0.0]])
    base = torch.tensor([[1.0, 0.0], [0.0, 5.0], [1.0, 0.0]])
    # (0.6, 0.8) vs (1, 0): 0.4² + 0.8² = 0.8; same direction: 0; opposite unit vectors: 2² = 4
    assert distill_loss(features, base).item() == pytest.approx((0.8 + 0.0 + 4.0) / 3, abs=1e-6)
    assert distill_loss(7 * features, 0.1 * base).item() == pytest.approx((0.8 + 4.0) / 3, abs=1e-6)
    cosines = torch.nn.functional.cosine_similarity(features, base, dim=1)
    assert distill_loss(features, base).item() == pytest.approx(float(torch.mean(2 - 2 * cosines)), abs=1e-6)


def test_l2sp_of_lora_equals_the_merged_weights_distance_from_the_base(tmp_path, micro_checkpoint):
    encoder = _adapted(micro_checkpoint, tmp_path, rank=3)
    regulariser = Regulariser(RegulariseSettings(l2sp=2.5), encoder.module, encoder.image_fn,
                              lora_parameters(encoder.module))
    before = {k: v.detach().clone() for k, v in encoder.module.state_dict().items() if "lora" not in k}
    drift = regulariser.weight_drift().item()
    terms = regulariser(_images(2), torch.ones(2, 4))
    merge_lora(encoder.module, keep_base=False)
    after = {k: v.detach() for k, v in encoder.module.state_dict().items() if "lora" not in k}
    explicit = sum(float(((after[k].double() - before[k].double()) ** 2).sum()) for k in before)
    assert explicit > 0 and drift == pytest.approx(explicit, rel=1e-4)
    assert terms.item() == pytest.approx(2.5 * explicit, rel=1e-4)
    assert regulariser.last["l2sp"].item() == pytest.approx(2.5 * explicit, rel=1e-4)


def test_l2sp_of_a_full_fine_tune_is_the_distance_from_the_starting_weights(tmp_path, micro_checkpoint):
    encoder = load_model(_spec(micro_checkpoint), cache_dir=tmp_path)
    trainable = [p for name, p in encoder.module.named_parameters() if name.startswith("visual.transformer")]
    start = [p.detach().clone() for p in trainable]
    regulariser = Regulariser(RegulariseSettings(l2sp=1.0), encoder.module, encoder.image_fn, trainable)
    assert regulariser.weight_drift().item() == 0.0
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in trainable:
            param.add_(0.01 * torch.randn(param.shape, generator=generator))
    expected = sum(float(((p.detach().double() - s.double()) ** 2).sum()) for p, s in zip(trainable, start))
    assert regulariser.weight_drift().item() == pytest.approx(expected, rel=1e-5)
    assert anchored_drift([]).item() == 0.0
    with pytest.raises(ValueError, match="regularise.distill needs LoRA adapters"):
        Regulariser(RegulariseSettings(distill=1.0), encoder.module, encoder.image_fn, trainable)


def test_the_distillation_target_is_the_base_model_and_the_adapted_state_comes_back(tmp_path, micro_checkpoint):
    base = load_model(_spec(micro_checkpoint), cache_dir=tmp_path)
    base.module.eval()
    encoder = _adapted(micro_checkpoint, tmp_path)
    encoder.module.train()
    images = _images()
    with torch.no_grad():
        adapted = encoder.image_fn(images)
        with adapters_off(encoder.module):
            target = encoder.image_fn(images)
            assert not encoder.module.training
        expected = base.image_fn(images)
    torch.testing.assert_close(target, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(adapted, expected, atol=1e-4)
    assert encoder.module.training
    assert all(m.strength == 1.0 for m in encoder.module.modules() if isinstance(m, LoraDelta))


def test_gradients_of_the_terms_reach_only_the_trainable_parameters(tmp_path, micro_checkpoint):
    encoder = _adapted(micro_checkpoint, tmp_path)
    for param in encoder.module.parameters():
        param.requires_grad_(False)
    trainable = lora_parameters(encoder.module)
    for param in trainable:
        param.requires_grad_(True)
    regulariser = Regulariser(RegulariseSettings(distill=1.0, l2sp=1.0), encoder.module, encoder.image_fn, trainable)
    images = _images()
    total = regulariser(images, encoder.image_fn(images))
    total.backward()
    ids = {id(p) for p in trainable}
    assert all(p.grad is None for p in encoder.module.parameters() if id(p) not in ids)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    assert set(regulariser.last) == {"distill", "l2sp"} and all(v.requires_grad is False
                                                                   for v in regulariser.last.values())


def test_settings_are_validated_and_name_the_key():
    assert not RegulariseSettings().active and RegulariseSettings(l2sp=0.1).active
    for key, value in (("distill", -1.0), ("l2sp", float("nan")), ("l2sp", float("inf")), ("distill", True)):
        with pytest.raises(ValueError, match=rf"regularise\.{key} must be a finite number >= 0"):
            RegulariseSettings(**{key: value})
    with pytest.raises(ValueError, match=r"regularise\.distill must be a finite number >= 0, got -0.5"):
        toy_config("madation", **{"regularise.distill": -0.5})
    with pytest.raises(ValueError, match=r"regularise.*unknown key 'distil'.*did you mean 'distill'"):
        toy_config("madation", **{"regularise.distil": 1})
    with pytest.raises(ValueError, match=r"regularise\.l2sp: expected float"):
        toy_config("madation", **{"regularise.l2sp": "lots"})
    assert toy_config("madation", **{"regularise.l2sp": 2}).regularise == RegulariseSettings(l2sp=2.0)


def test_the_config_hash_changes_with_the_weights_and_not_without_them():
    plain = toy_config("madation")
    zeros = toy_config("madation", **{"regularise.distill": 0, "regularise.l2sp": 0.0})
    without_section = {k: v for k, v in plain.to_dict().items() if k != "regularise"}
    assert config_hash(plain) == config_hash(zeros) == content_fingerprint(json.dumps(without_section,
                                                                                      sort_keys=True))
    hashes = {config_hash(toy_config("madation", **{f"regularise.{k}": v}))
              for k, v in (("distill", 1), ("distill", 2), ("l2sp", 1))}
    assert len(hashes) == 3 and config_hash(plain) not in hashes
    assert plain.to_dict()["regularise"] == {"distill": 0.0, "l2sp": 0.0}


def _attack_data():
    return TrainingData(attack_split(), AttackValidator(attack_split(12, seed=1, split="dev")), {}, "toy-attack")


def test_a_cached_fine_tune_is_not_reused_for_another_regularisation(tmp_path, micro_checkpoint):
    out = tmp_path / "out"
    plain = toy_config("madation", steps=2)
    finetune(plain, _spec(micro_checkpoint), _attack_data(), out, cache_dir=tmp_path)
    first = json.loads((out / "finetune.json").read_text())
    regularised = toy_config("madation", steps=2, **{"regularise.l2sp": 1.0})
    finetune(regularised, _spec(micro_checkpoint), _attack_data(), out, cache_dir=tmp_path)
    second = json.loads((out / "finetune.json").read_text())
    assert second["config_hash"] != first["config_hash"]
    assert second["config"]["regularise"] == {"distill": 0.0, "l2sp": 1.0}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss_l2sp" in r] == [1, 2]


def _train(checkpoint, out_dir, config, split=None):
    torch.manual_seed(0)
    encoder = load_model(_spec(checkpoint), cache_dir=out_dir)
    inject_lora(encoder.module, config.lora)
    trainer = Trainer(config, encoder, split if split is not None else identity_split(), out_dir,
                      adapter_parameters=lora_parameters(encoder.module), progress=False)
    result = trainer.fit(resume=False)
    return encoder, trainer, result


def test_zero_weights_train_exactly_as_the_plain_objective(tmp_path, micro_checkpoint, monkeypatch):
    config = toy_config("froundation", steps=4, **{"lora.dropout": 0.3, "regularise.distill": 0.0})
    encoder, trainer, result = _train(micro_checkpoint, tmp_path / "zero", config)
    assert trainer.objective.regulariser is None

    def plain(self, images, labels):  # the objective before regularisation existed
        return self.head.loss(self._image_fn(images), labels)

    monkeypatch.setattr(_Objective, "forward", plain)
    encoder2, _, result2 = _train(micro_checkpoint, tmp_path / "plain", config)
    assert result.losses == result2.losses
    a, b = lora_state_dict(encoder.module), lora_state_dict(encoder2.module)
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "zero" / "train_log.jsonl").read_text().splitlines()]
    assert not any(key.startswith("loss_") for record in log for key in record)


def _drift(checkpoint, cache, encoder, images) -> float:
    """Mean 1 − cos between the fine-tune's and the base's embeddings of held-out images."""
    base = load_model(_spec(checkpoint), cache_dir=cache)
    tuned, start = embed(encoder, images), embed(base, images)
    return float(1 - torch.nn.functional.cosine_similarity(tuned, start, dim=1).mean())


@pytest.mark.parametrize("term, weight", [("distill", 5.0), ("l2sp", 1.0)])
def test_a_positive_weight_keeps_the_fine_tune_closer_to_its_base(tmp_path, micro_checkpoint, term, weight):
    held_out = attack_split(16, seed=5, split="test")
    drifts, logs = {}, {}
    for label, value in (("plain", 0.0), ("regularised", weight)):
        config = toy_config("madation", steps=8, **{f"regularise.{term}": value})
        encoder, _, _ = _train(micro_checkpoint, tmp_path / label, config, attack_split())
        drifts[label] = _drift(micro_checkpoint, tmp_path, encoder, held_out)
        logs[label] = [json.loads(line) for line in (tmp_path / label / "train_log.jsonl").read_text().splitlines()]
    assert drifts["plain"] > 1e-4
    assert drifts["regularised"] < 0.5 * drifts["plain"], drifts
    logged = [r[f"loss_{term}"] for r in logs["regularised"] if "loss" in r]
    assert len(logged) == 8 and all(np.isfinite(logged)) and max(logged) > 0
    assert all(f"loss_{term}" not in r for r in logs["plain"])


def test_the_trainer_builds_a_regulariser_only_for_positive_weights(tmp_path, micro_checkpoint):
    encoder = _adapted(micro_checkpoint, tmp_path)
    params = lora_parameters(encoder.module)
    assert regulariser_for(RegulariseSettings(), encoder, params) is None
    regulariser = regulariser_for(RegulariseSettings(distill=0.5), encoder, params)
    assert isinstance(regulariser, Regulariser) and regulariser.anchored == []
    assert len(regulariser.deltas) == len(params) // 2
