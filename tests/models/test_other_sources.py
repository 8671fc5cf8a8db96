import json

import pytest
import torch
from PIL import Image

from overspec.models import ModelLoadError, ModelSpec, load_model


def _tiny_hf_clip(folder):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "cat</w>": 3, "dog</w>": 4, "photo</w>": 5,
             "of</w>": 6, "c": 7, "a": 8, "t": 9, "d": 10, "o": 11, "g": 12}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"image_size": 16, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=8,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 16, "width": 16}, "size": {"shortest_edge": 16}, "image_mean": [0.5, 0.5, 0.5],
         "image_std": [0.25, 0.25, 0.25], "resample": 2}))


def test_hf_clip_from_local_folder(tmp_path):
    _tiny_hf_clip(tmp_path)
    encoder = load_model(ModelSpec(name="hf", source="hf", weights=str(tmp_path)), cache_dir=tmp_path)
    assert encoder.info["preprocess"]["interpolation"] == "bilinear"
    assert encoder.info["preprocess"]["std"] == (0.25, 0.25, 0.25)
    pixels = encoder.preprocess(Image.new("RGB", (30, 20), (10, 20, 30)))[None]
    assert encoder.encode_image(pixels).shape == (1, 8)
    assert encoder.encode_text(["a photo of a cat", "a dog"]).shape == (2, 8)
    assert encoder.text_fingerprint and encoder.fingerprint != encoder.text_fingerprint


def test_hf_missing_folder_is_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="source 'hf' needs 'weights' to be a local transformers folder"):
        load_model(ModelSpec(name="hf", source="hf", weights=str(tmp_path / "absent")), cache_dir=tmp_path)


def test_timm_image_only_encoder_loads_local_weights_strictly(tmp_path):
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=0)
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, tmp_path / "r18.pth")
    encoder = load_model(ModelSpec(name="r18", source="timm", architecture="resnet18", weights=str(tmp_path / "r18.pth"),
                                   text=False), cache_dir=tmp_path)
    assert not encoder.has_text
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(encoder.encode_image(x), reference.eval()(x))
    broken = {k: v for k, v in reference.state_dict().items() if not k.startswith("layer4")}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ModelLoadError, match=r"broken.pth does not match 'resnet18': missing keys \['layer4"):
        load_model(ModelSpec(name="b", source="timm", architecture="resnet18", weights=str(tmp_path / "broken.pth")),
                   cache_dir=tmp_path)


def test_hf_folder_without_tokenizer_is_refused_for_zero_shot_but_serves_images(tmp_path):
    _tiny_hf_clip(tmp_path)
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match=rf"^model 'hf': {tmp_path} has no tokenizer files .*text: false"):
        load_model(ModelSpec(name="hf", source="hf", weights=str(tmp_path)), cache_dir=tmp_path)
    encoder = load_model(ModelSpec(name="hf", source="hf", weights=str(tmp_path), text=False), cache_dir=tmp_path)
    assert not encoder.has_text
    pixels = encoder.preprocess(Image.new("RGB", (30, 20), (10, 20, 30)))[None]
    assert encoder.encode_image(pixels).shape == (1, 8)


def test_timm_weights_of_another_architecture_are_one_line_naming_the_file(tmp_path):
    import timm

    torch.save(timm.create_model("test_resnet", pretrained=False, num_classes=0).state_dict(), tmp_path / "t.pth")
    with pytest.raises(ModelLoadError, match=r"^model 'r18': \S+t\.pth holds weights of another architecture than "
                                             r"'resnet18': \d+ shape mismatches \[\S+ \(\d+,\) vs \(\d+,\)") as info:
        load_model(ModelSpec(name="r18", source="timm", architecture="resnet18", weights=str(tmp_path / "t.pth"),
                             text=False), cache_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_a_run_lists_a_hf_folder_without_tokenizer_before_any_work(tmp_path):
    from overspec.models.sources.files import spec_problems

    (tmp_path / "config.json").write_text("{}")
    assert spec_problems(ModelSpec(name="hf", source="hf", weights=str(tmp_path)), tmp_path) == [
        f"{tmp_path} has no tokenizer files, so zero-shot is not possible (text: false for image only)"]
    assert spec_problems(ModelSpec(name="hf", source="hf", weights=str(tmp_path), text=False), tmp_path) == []
    (tmp_path / "tokenizer.json").write_text("{}")
    assert spec_problems(ModelSpec(name="hf", source="hf", weights=str(tmp_path)), tmp_path) == []
