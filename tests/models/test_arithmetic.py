"""Weight-space combinations: LoRA strength λ, WiSE-FT interpolation, sums of adapters; refusals and identity."""

import dataclasses

import pytest
import torch

from overspec.config.model import CombineTerm
from overspec.models import ModelLoadError, ModelSpec, load_model
from overspec.models.adapters import save_weights_adapter
from overspec.models.identity import model_identity
from overspec.models.lora import LoraConfig, inject_lora, lora_parameters, save_lora_adapter


@pytest.fixture
def base_spec(micro_checkpoint) -> ModelSpec:
    return ModelSpec(name="base", architecture="micro-clip", weights=str(micro_checkpoint))


def _lora_variant(tmp_path, base_spec, name: str, seed: int) -> ModelSpec:
    """A LoRA fine-tune of the base with random adapter tensors (q, v, mlp), saved as an adapter file."""
    encoder = load_model(base_spec, cache_dir=tmp_path)
    config = LoraConfig(rank=2, alpha=4.0, targets=("q", "v", "mlp"))
    inject_lora(encoder.module, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in lora_parameters(encoder.module):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    path = save_lora_adapter(tmp_path / f"{name}.safetensors", encoder, encoder.module, config)
    return dataclasses.replace(base_spec, name=name, adapter=str(path), base="base", specialisation="fr")


def _image_weights(encoder) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in encoder.image_state().items()}


def test_lora_strength_lambda_is_the_base_plus_lambda_times_the_change(tmp_path, base_spec):
    variant = _lora_variant(tmp_path, base_spec, "fr", seed=1)
    base, tuned = _image_weights(load_model(base_spec, cache_dir=tmp_path)), _image_weights(
        load_model(variant, cache_dir=tmp_path))
    for lam in (0.0, 0.3, 1.0):
        spec = dataclasses.replace(base_spec, name=f"fr@{lam}", combine=(CombineTerm(variant, lam),))
        mixed = load_model(spec, cache_dir=tmp_path)
        for key, value in mixed.image_state().items():
            torch.testing.assert_close(value, base[key] + lam * (tuned[key] - base[key]), rtol=0, atol=1e-6)
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert any(".attn.in_proj_weight" in k for k in changed) and any("c_fc" in k for k in changed)


def test_wise_ft_interpolates_a_full_fine_tune(tmp_path, base_spec, micro_checkpoint):
    state = torch.load(micro_checkpoint, weights_only=True)
    tuned_state = {k: v + 0.1 * torch.randn_like(v) if k.startswith("visual.") and v.is_floating_point() else v
                   for k, v in state.items()}
    torch.save(tuned_state, tmp_path / "full.pt")
    full = dataclasses.replace(base_spec, name="full", weights=str(tmp_path / "full.pt"))
    spec = dataclasses.replace(base_spec, name="wise", combine=(CombineTerm(full, 0.5),))
    mixed = load_model(spec, cache_dir=tmp_path)
    expected = 0.5 * (state["visual.proj"] + tuned_state["visual.proj"])
    torch.testing.assert_close(mixed.module.visual.proj.detach(), expected, rtol=0, atol=1e-6)


def test_two_adapters_add_their_changes_and_get_their_own_fingerprint(tmp_path, base_spec):
    fr, pad = _lora_variant(tmp_path, base_spec, "fr", 1), _lora_variant(tmp_path, base_spec, "pad", 2)
    base, w_fr, w_pad = (_image_weights(load_model(s, cache_dir=tmp_path)) for s in (base_spec, fr, pad))
    spec = dataclasses.replace(base_spec, name="fr+pad", combine=(CombineTerm(fr, 1.0), CombineTerm(pad, 0.5)))
    merged = load_model(spec, cache_dir=tmp_path)
    for key, value in merged.image_state().items():
        torch.testing.assert_close(value, base[key] + (w_fr[key] - base[key]) + 0.5 * (w_pad[key] - base[key]),
                                   rtol=0, atol=1e-6)
    fingerprints = {load_model(s, cache_dir=tmp_path).fingerprint for s in (base_spec, fr, pad)} | {merged.fingerprint}
    assert len(fingerprints) == 4
    assert merged.text_fingerprint == load_model(base_spec, cache_dir=tmp_path).text_fingerprint
    assert merged.info["combination"] == [["fr", 1.0], ["pad", 0.5]]


def test_a_term_with_another_text_tower_or_shape_is_refused(tmp_path, base_spec, micro_checkpoint):
    state = torch.load(micro_checkpoint, weights_only=True)
    state["token_embedding.weight"] += 1.0
    torch.save(state, tmp_path / "text.pt")
    text_changed = dataclasses.replace(base_spec, name="text", weights=str(tmp_path / "text.pt"))
    with pytest.raises(ModelLoadError, match="combine term 'text' changed the text tower"):
        load_model(dataclasses.replace(base_spec, name="c", combine=(CombineTerm(text_changed, 0.5),)),
                   cache_dir=tmp_path)
    base = load_model(base_spec, cache_dir=tmp_path)
    adapter = save_weights_adapter(tmp_path / "w.safetensors", base, {"visual.proj": torch.ones_like(base.module.visual.proj)})
    ok = dataclasses.replace(base_spec, name="ok", adapter=str(adapter))
    assert load_model(dataclasses.replace(base_spec, name="c2", combine=(CombineTerm(ok, 1.0),)), cache_dir=tmp_path)


def test_a_non_finite_scale_is_refused():
    with pytest.raises(ValueError, match="finite"):
        CombineTerm("fr", float("nan"))


def test_identity_changes_with_a_term_scale_and_a_term_file(tmp_path, base_spec):
    variant = _lora_variant(tmp_path, base_spec, "fr", 1)
    half = dataclasses.replace(base_spec, name="m", combine=(CombineTerm(variant, 0.5),))
    quarter = dataclasses.replace(half, combine=(CombineTerm(variant, 0.25),))
    first = model_identity(half, tmp_path)
    assert first is not None and first != model_identity(quarter, tmp_path)
    _lora_variant(tmp_path, base_spec, "fr", 7)  # rewrites fr.safetensors with other tensors
    assert model_identity(half, tmp_path) != first
    unknown = dataclasses.replace(half, combine=(CombineTerm("not-a-preset", 0.5),))
    assert model_identity(unknown, tmp_path) is None
