import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from overspec.config.typed import from_dict
from overspec.models import ModelLoadError, ModelSpec, PreprocessSpec, load_model


def test_local_checkpoint_loads_exact_weights(tmp_path, micro_checkpoint):
    spec = ModelSpec(name="m", architecture="micro-clip", weights=str(micro_checkpoint))
    encoder = load_model(spec, cache_dir=tmp_path)
    expected = torch.load(micro_checkpoint, weights_only=True)
    assert torch.equal(encoder.module.state_dict()["visual.conv1.weight"], expected["visual.conv1.weight"])
    image = encoder.preprocess(Image.new("RGB", (40, 30), (200, 10, 10)))
    assert image.shape == (3, 16, 16)
    assert encoder.encode_image(image[None]).shape == (1, 16)
    assert encoder.encode_text(["a photo of a cat", "a dog"]).shape == (2, 16)


def test_fingerprint_tracks_weights_and_preprocessing_but_not_name(tmp_path, micro_checkpoint):
    base = ModelSpec(name="a", architecture="micro-clip", weights=str(micro_checkpoint))
    same = load_model(ModelSpec(name="b", architecture="micro-clip", weights=str(micro_checkpoint)), cache_dir=tmp_path)
    first = load_model(base, cache_dir=tmp_path)
    assert first.fingerprint == same.fingerprint
    bgr = load_model(ModelSpec(name="a", architecture="micro-clip", weights=str(micro_checkpoint),
                               preprocess=PreprocessSpec(size=16, channel_order="BGR")), cache_dir=tmp_path)
    assert bgr.fingerprint != first.fingerprint
    assert bgr.text_fingerprint == first.text_fingerprint
    state = torch.load(micro_checkpoint, weights_only=True)
    state["visual.proj"] = state["visual.proj"] + 1e-3
    changed_path = tmp_path / "changed.pt"
    torch.save(state, changed_path)
    changed = load_model(ModelSpec(name="a", architecture="micro-clip", weights=str(changed_path)), cache_dir=tmp_path)
    assert changed.fingerprint != first.fingerprint
    assert changed.text_fingerprint == first.text_fingerprint


def test_bgr_preprocessing_swaps_channels(tmp_path, micro_checkpoint):
    rgb = load_model(ModelSpec(name="a", architecture="micro-clip", weights=str(micro_checkpoint),
                               preprocess=PreprocessSpec(size=16, mean=(0.5,) * 3, std=(0.5,) * 3)), cache_dir=tmp_path)
    bgr = load_model(ModelSpec(name="a", architecture="micro-clip", weights=str(micro_checkpoint),
                               preprocess=PreprocessSpec(size=16, mean=(0.5,) * 3, std=(0.5,) * 3,
                                                         channel_order="BGR")), cache_dir=tmp_path)
    image = Image.new("RGB", (16, 16), (255, 0, 0))
    assert torch.allclose(rgb.preprocess(image)[0], torch.ones(16, 16))
    assert torch.allclose(bgr.preprocess(image)[2], torch.ones(16, 16))
    assert torch.allclose(bgr.preprocess(image)[0], -torch.ones(16, 16))


def test_local_dir_and_custom_config_file(tmp_path, micro_checkpoint):
    from safetensors.torch import save_file

    from tests.conftest import MICRO_CFG

    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": MICRO_CFG, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
    state = torch.load(micro_checkpoint, weights_only=True)
    save_file(state, str(folder / "open_clip_model.safetensors"))
    encoder = load_model(ModelSpec(name="ld", weights=f"local-dir:{folder}"), cache_dir=tmp_path)
    assert torch.equal(encoder.module.state_dict()["visual.proj"], state["visual.proj"])
    assert encoder.info["preprocess"]["mean"] == (0.5, 0.5, 0.5)

    config = tmp_path / "my-arch.json"
    config.write_text(json.dumps(MICRO_CFG))
    custom = load_model(ModelSpec(name="cj", config_file=str(config), weights=str(micro_checkpoint)),
                        cache_dir=tmp_path)
    assert custom.fingerprint != encoder.fingerprint  # same weights, different preprocessing
    assert torch.equal(custom.module.state_dict()["visual.proj"], state["visual.proj"])


def test_missing_files_and_offline_tags_are_clear_errors(tmp_path, micro_config_file):
    with pytest.raises(ModelLoadError, match=r"model 'x': weights file not found: .*nope.pt"):
        load_model(ModelSpec(name="x", architecture="micro-clip", weights=str(tmp_path / "nope.pt")), cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="not an open_clip local-dir folder"):
        load_model(ModelSpec(name="x", weights=f"local-dir:{tmp_path}"), cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="unknown open_clip architecture 'ViT-Q-99'"):
        load_model(ModelSpec(name="x", architecture="ViT-Q-99"), cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match=r"pretrained tag 'openai' .* not in the local cache"):
        load_model(ModelSpec(name="x", architecture="ViT-B-16-quickgelu", weights="openai"), cache_dir=tmp_path)


def test_image_only_spec_has_no_text_tower(tmp_path, micro_checkpoint):
    encoder = load_model(ModelSpec(name="img", architecture="micro-clip", weights=str(micro_checkpoint), text=False),
                         cache_dir=tmp_path)
    assert not encoder.has_text and encoder.text_fingerprint is None
    with pytest.raises(TypeError, match="no text tower"):
        encoder.encode_text(["x"])


def test_tokenizers_are_built_once_per_model_config(tmp_path):
    from overspec.models.sources import open_clip as source

    folder = tmp_path / "clip"
    folder.mkdir()
    config = {"model_cfg": {"embed_dim": 32, "text_cfg": {"context_length": 16, "vocab_size": 49408}}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    first = source._tokenizer(f"local-dir:{folder}")
    assert source._tokenizer(f"local-dir:{folder}") is first and first.context_length == 16
    config["model_cfg"]["text_cfg"]["context_length"] = 24
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    changed = source._tokenizer(f"local-dir:{folder}")
    assert changed is not first and changed.context_length == 24


def test_a_partial_preprocess_from_a_config_keeps_the_weights_own_values(tmp_path, micro_checkpoint):
    data = {"name": "a", "architecture": "micro-clip", "weights": str(micro_checkpoint),
            "preprocess": {"channel_order": "BGR"}}
    own = load_model(ModelSpec(name="a", architecture="micro-clip", weights=str(micro_checkpoint)), cache_dir=tmp_path)
    partial = load_model(from_dict(ModelSpec, data, where="test"), cache_dir=tmp_path)
    assert partial.info["preprocess"] == {**own.info["preprocess"], "channel_order": "BGR"}
    assert partial.info["preprocess"]["size"] == 16
