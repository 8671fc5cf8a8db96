import pytest
import torch

from overspec.models import ModelLoadError, ModelSpec, load_model
from overspec.models.adapters import save_weights_adapter


def test_weights_adapter_applies_delta_and_changes_fingerprint(tmp_path, micro_checkpoint):
    spec = ModelSpec(name="base", architecture="micro-clip", weights=str(micro_checkpoint))
    base = load_model(spec, cache_dir=tmp_path)
    delta = torch.full_like(base.module.visual.proj, 0.5)
    path = save_weights_adapter(tmp_path / "a.safetensors", base, {"visual.proj": delta})
    adapted = load_model(ModelSpec(name="v", architecture="micro-clip", weights=str(micro_checkpoint),
                                   adapter=str(path)), cache_dir=tmp_path)
    assert torch.allclose(adapted.module.visual.proj, base.module.visual.proj + 0.5)
    assert adapted.fingerprint != base.fingerprint
    assert adapted.text_fingerprint == base.text_fingerprint


def test_adapter_on_a_different_base_is_refused(tmp_path, micro_checkpoint):
    base = load_model(ModelSpec(name="b", architecture="micro-clip", weights=str(micro_checkpoint)), cache_dir=tmp_path)
    path = save_weights_adapter(tmp_path / "a.safetensors", base, {"visual.proj": torch.zeros_like(base.module.visual.proj)})
    state = torch.load(micro_checkpoint, weights_only=True)
    state["visual.conv1.weight"] += 1
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(ModelLoadError, match="was made for a base with image weights"):
        load_model(ModelSpec(name="o", architecture="micro-clip", weights=str(other), adapter=str(path)),
                   cache_dir=tmp_path)
