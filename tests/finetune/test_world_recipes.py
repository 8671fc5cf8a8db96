"""Full world-profile runs of the three recipes on the tiny CLIPs (slow): each must beat its base model."""

import json

import numpy as np
import pytest
import torch

from overspec import metrics
from overspec.data.biometric.attack_list import CLASSNAMES, TEMPLATES
from overspec.finetune import finetune, load_recipe
from overspec.finetune.run import training_data
from overspec.finetune.trainer import embed
from overspec.models import load_model
from overspec.models.registry import register_preset_file
from overspec.protocols.attack_detection import probe_scores, zero_shot_scores
from overspec.registry import Registry


def _eer(scores, labels):
    return metrics.eer(scores[labels == 1], scores[labels == 0]).value


def _zero_shot_classifier(encoder, task):
    columns = []
    with torch.no_grad():
        for name in CLASSNAMES[task]:  # (attack, bona fide): column 1 = bona fide
            text = torch.nn.functional.normalize(encoder.encode_text([t.format(c=name) for t in TEMPLATES]), dim=-1)
            columns.append(torch.nn.functional.normalize(text.mean(0), dim=0))
    return torch.stack(columns, dim=1).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("base", ["tiny-s", "tiny-m"])
@pytest.mark.parametrize("recipe", ["froundation", "madation", "foundpad"])
def test_world_recipe_improves_its_biometric_metric(tmp_path_factory, recipe, base):
    from overspec.config.run import default_cache_dir

    cache = default_cache_dir()
    config = load_recipe(recipe, profile="world")
    data = training_data(config.task, "world", cache_dir=cache, config=config)
    model_yaml = finetune(config, base, data, tmp_path_factory.mktemp(f"{recipe}-{base}"), cache_dir=cache)
    record = json.loads((model_yaml.parent / "finetune.json").read_text())
    assert record["train_seconds"] < 180
    tuned = load_model(register_preset_file(model_yaml, Registry("model")), cache_dir=cache)
    original = load_model(base, cache_dir=cache)
    if config.task == "fr":
        assert data.validator(tuned, None, "cpu")["accuracy"] > data.validator(original, None, "cpu")["accuracy"]
        return
    test, train = data.held_out["test"], data.train
    own = _eer(tuned.head.scores(embed(tuned, test).numpy()), test.labels)
    base_test = embed(original, test).numpy()
    zero_shot = _eer(zero_shot_scores(base_test, _zero_shot_classifier(original, config.task)), test.labels)
    probe = _eer(probe_scores(embed(original, train).numpy(), train.labels, base_test), test.labels)
    print(f"{recipe} {base}: own head EER {own:.4f}, base zero-shot {zero_shot:.4f}, base probe {probe:.4f}")
    assert own < zero_shot
    assert np.isfinite(probe)
