import json
from dataclasses import asdict

import pytest
import yaml

from overspec.config import ConfigError
from overspec.config.run import RunConfig, default_config, load_run_config, resolved_dict
from overspec.config.model import ModelSpec
from overspec.runner import validated_settings


def test_unknown_key_names_file_and_nearest_key(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("models: [tiny-s]\ndatasetz: [cifar10]\n")
    with pytest.raises(ConfigError, match=r"study.yaml: unknown key 'datasetz'; did you mean 'datasets'"):
        load_run_config(path)


def test_nested_unknown_key_and_out_of_range_value(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("models: [tiny-s]\nprotocols: {linear_probe: {val_fracton: 0.1}}\n")
    with pytest.raises(ConfigError, match=r"s.yaml: protocols.linear_probe: unknown key 'val_fracton'; did you mean "
                                          r"'val_fraction'"):
        validated_settings(load_run_config(path), where=str(path))
    path.write_text("models: [tiny-s]\nprotocols: {linear_probe: {val_fraction: 1.5}}\n")
    with pytest.raises(ConfigError, match=r"val_fraction must be in \(0, 1\)"):
        validated_settings(load_run_config(path), where=str(path))
    path.write_text("linear_probe: {val_fraction: 0.5}\n")
    with pytest.raises(ConfigError, match=r"'linear_probe' is now a protocol setting; write protocols: "):
        load_run_config(path)
    path.write_text("batch_size: zero\n")
    with pytest.raises(ConfigError, match=r"s.yaml.batch_size: expected int, got 'zero'"):
        load_run_config(path)


def test_inline_model_specs_and_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "models:\n  - tiny-s\n  - {name: mine, source: timm, architecture: resnet18, preprocess: {size: 112}}\n"
        "datasets: [cifar10]\nprotocols: {linear_probe: {kshot: [1, 4]}}\n"
    )
    config = load_run_config(path, device="cuda:1")
    assert config.name == "s" and config.device == "cuda:1"
    assert config.models[0] == "tiny-s"
    assert isinstance(config.models[1], ModelSpec) and config.models[1].preprocess.size == 112
    assert validated_settings(config)["linear_probe"].kshot == (1, 4)


def test_default_config_is_the_embedded_world():
    config = default_config()
    assert config.world and config.models == ("tiny-s", "tiny-m")
    assert isinstance(config, RunConfig)
    with pytest.raises(ConfigError, match=r"protocols\.linear_probe: kshot values must be among"):
        validated_settings(default_config(protocols={"linear_probe": {"kshot": [3]}}))


@pytest.mark.parametrize(("finetune", "message"), [
    ('{recipes: [madation], profile: world, overrides: ["lora.rank=0"]}', r"'madation'.*lora rank must be"),
    ('{recipes: [madation], overrides: ["lora.rnak=2"]}', r"unknown key 'rnak'; did you mean 'rank'"),
    ("{recipes: [madatoin]}", r"unknown recipe 'madatoin'; did you mean 'madation'"),
    ("{recipes: [foundpad], profile: wrld}", r"'foundpad' \(profile 'wrld'.*no profile 'wrld'"),
])
def test_fine_tune_settings_are_checked_before_the_run_starts(tmp_path, finetune, message):
    path = tmp_path / "s.yaml"
    path.write_text(f"world: true\nmodels: [tiny-s]\nfinetune: {finetune}\n")
    with pytest.raises(ConfigError, match=r"s.yaml: finetune: recipe .*" + message) as info:
        validated_settings(load_run_config(path), where=str(path))
    assert "\n" not in str(info.value)


def test_a_partial_preprocess_is_saved_with_only_its_named_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("models:\n  - {name: m, architecture: micro-clip, preprocess: {channel_order: BGR}}\n"
                    "  - {name: n, architecture: micro-clip, preprocess: {size: 32, mean: [0.5, 0.5, 0.5], "
                    "std: [0.5, 0.5, 0.5], interpolation: bilinear, resize_mode: squash, channel_order: RGB}}\n"
                    "  - tiny-s\n")
    config = load_run_config(path)
    saved = resolved_dict(config)["models"]
    assert saved[0]["preprocess"] == {"channel_order": "BGR"}
    assert saved[1]["preprocess"] == asdict(config.models[1].preprocess) and saved[2] == "tiny-s"
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(json.loads(json.dumps(resolved_dict(config), default=str))))
    assert load_run_config(again).models[0].preprocess.given == {"channel_order"}
