import math

import open_clip
import pytest
import torch

from overspec.models import ModelSpec, load_model
from overspec.models.adapters import image_weights_fingerprint
from overspec.models.base import ModelLoadError
from overspec.models.lora import (
    LoraConfig,
    LoraDelta,
    LoraError,
    inject_lora,
    load_lora_state_dict,
    lora_base_fingerprint,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    save_lora_adapter,
    set_lora_strength,
    unmerge_lora,
)
from tests.models._reference_clip import TINY_HEADS, reference_image_embedding, register_tiny_openai, split_state


@pytest.fixture(scope="module")
def arch(tmp_path_factory) -> str:
    return register_tiny_openai(tmp_path_factory.mktemp("cfg"))


@pytest.fixture
def model(arch):
    torch.manual_seed(0)
    return open_clip.create_model(arch, pretrained=None).eval()


@pytest.fixture
def images():
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _randomise(model, seed=2, std=0.3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in lora_parameters(model):
            param.copy_(torch.randn(param.shape, generator=generator) * std)


def _reference_lora(model) -> dict:
    """Adapters of the fused model as (A, B) per released split projection name."""
    names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "proj"}
    out = {}
    for key, module in model.named_modules():
        if isinstance(module, LoraDelta) and ".attn.lora." in key:
            prefix, target = key.rsplit(".lora.", 1)
            out[f"{prefix}.{names[target]}"] = (module.A.detach(), module.B.detach())
    return out


def test_config_scaling_and_validation():
    assert LoraConfig(rank=16, alpha=32).scaling == 2.0
    assert LoraConfig(rank=16, alpha=32, rslora=True).scaling == 8.0
    assert LoraConfig(rank=2, alpha=4, rslora=True).scaling == pytest.approx(2.8284271, rel=1e-6)
    config = LoraConfig(rank=4, alpha=8, dropout=0.1, targets=["q", "k", "mlp"], rslora=True)
    assert config.targets == ("q", "k", "mlp")
    assert LoraConfig.from_json(config.to_json()) == config
    for bad in ({"rank": 0}, {"alpha": -1}, {"dropout": 1.0}, {"targets": ("q", "x")}, {"targets": ()},
                {"targets": ("q", "q")}, {"rank": 2.5}):
        with pytest.raises(LoraError):
            LoraConfig(**bad)


def test_fresh_adapter_changes_nothing_and_keeps_base_keys(model, images):
    before_keys = list(model.state_dict())
    with torch.no_grad():
        expected = model.encode_image(images)
    adapted = inject_lora(model, LoraConfig(rank=4, alpha=4, targets=("q", "v")))
    assert len(adapted) == 2  # one fused attention per visual block
    state = model.state_dict()
    assert [k for k in state if ".lora." not in k] == before_keys
    lora_keys = sorted(lora_state_dict(model))
    assert lora_keys == sorted(f"visual.transformer.resblocks.{i}.attn.lora.{t}.{p}"
                               for i in range(2) for t in ("q", "v") for p in "AB")
    for name, tensor in lora_state_dict(model).items():
        if name.endswith(".B"):
            assert torch.count_nonzero(tensor) == 0
        else:
            assert tensor.abs().max() <= 1 / math.sqrt(32) and tensor.abs().max() > 0  # Kaiming-uniform a=sqrt(5)
    with torch.no_grad():  # the base ran torch's native fast path, the adapted model the generic one
        assert (model.encode_image(images) - expected).abs().max() < 1e-6


def test_only_adapters_train_and_text_tower_is_untouched(model):
    inject_lora(model, LoraConfig(rank=2, targets=("q", "k", "v", "out", "mlp")))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in lora_state_dict(model)}
    assert len(lora_parameters(model)) == 2 * 2 * 6  # blocks x (q,k,v,out,fc,proj) x (A,B)
    assert not any(n.startswith("transformer.") for n in trainable)
    with pytest.raises(LoraError, match="already has LoRA"):
        inject_lora(model, LoraConfig())


@pytest.mark.parametrize("targets", [("q", "v"), ("q", "k", "v", "out")])
def test_fused_attention_equals_split_reference(model, images, targets):
    base_split = split_state(model.state_dict())
    config = LoraConfig(rank=3, alpha=6, targets=targets, rslora=True)
    inject_lora(model, config)
    _randomise(model)
    with torch.no_grad():
        got = model.encode_image(images)
    want = reference_image_embedding(base_split, images, heads=TINY_HEADS, lora=_reference_lora(model),
                                     scaling=config.scaling)
    assert (got.double() - want).abs().max() < 1e-5
    base = reference_image_embedding(base_split, images, heads=TINY_HEADS)
    assert (got.double() - base).abs().max() > 1e-2  # the adapters do change the output


def test_strength_interpolates_between_base_and_finetune(model, images):
    base_split = split_state(model.state_dict())
    config = LoraConfig(rank=2, alpha=2)
    inject_lora(model, config)
    _randomise(model)
    for lam in (0.0, 0.5, 1.0):
        set_lora_strength(model, lam)
        with torch.no_grad():
            got = model.encode_image(images).double()
        want = reference_image_embedding(base_split, images, heads=TINY_HEADS, lora=_reference_lora(model),
                                         scaling=config.scaling * lam)
        assert (got - want).abs().max() < 1e-5


def test_merge_is_exact_idempotent_and_unmerge_restores_base(model, images):
    base = {k: v.clone() for k, v in model.state_dict().items()}
    inject_lora(model, LoraConfig(rank=2, alpha=4, targets=("q", "v", "out", "mlp")))
    _randomise(model)
    with torch.no_grad():
        unmerged = model.encode_image(images)
    assert merge_lora(model) == 2 * 3  # 2 blocks x (attention, fc, proj)
    merged_weights = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        assert (model.encode_image(images) - unmerged).abs().max() < 1e-5
    q_rows = model.visual.transformer.resblocks[0].attn.in_proj_weight[:32]
    delta = model.visual.transformer.resblocks[0].attn.lora["q"]
    expected_q = base["visual.transformer.resblocks.0.attn.in_proj_weight"][:32] + 2.0 * delta.B @ delta.A
    assert torch.allclose(q_rows, expected_q, atol=1e-6)
    assert merge_lora(model) == 0  # second merge: no double add
    assert all(torch.equal(v, merged_weights[k]) for k, v in model.state_dict().items())
    with pytest.raises(LoraError, match="unmerge"):
        set_lora_strength(model, 0.5)
    assert unmerge_lora(model) == 6 and unmerge_lora(model) == 0
    for key, value in base.items():
        assert torch.equal(model.state_dict()[key], value), key  # bit-exact: the base was kept
    merge_lora(model, keep_base=False)
    unmerge_lora(model)  # subtracts the delta again: equal within float tolerance
    for key, value in base.items():
        assert torch.allclose(model.state_dict()[key], value, atol=1e-6), key


def test_unmerge_after_the_adapter_changed_is_an_error(model):
    inject_lora(model, LoraConfig(rank=2))
    _randomise(model)
    merge_lora(model)
    with torch.no_grad():
        lora_parameters(model)[1].add_(1.0)
    with pytest.raises(LoraError, match="changed after merging"):
        unmerge_lora(model)


def test_dropout_path_matches_fused_path_and_trains_only_lora(model, images):
    inject_lora(model, LoraConfig(rank=2, alpha=2, dropout=1e-9, targets=("q", "v", "out")))
    _randomise(model)
    with torch.no_grad():
        fused = model.encode_image(images)
    model.train()
    assert model.visual.transformer.resblocks[0].attn.lora["q"].dropout_active
    split = model.encode_image(images)
    assert (split - fused).abs().max() < 1e-5
    split.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_parameters(model))
    assert all(p.grad is None for n, p in model.named_parameters() if ".lora." not in n)


def test_lora_state_dict_round_trip_and_strict_errors(model, arch, images):
    config = LoraConfig(rank=2, alpha=2)
    inject_lora(model, config)
    _randomise(model)
    state = {k: v.clone() for k, v in lora_state_dict(model).items()}
    with torch.no_grad():
        expected = model.encode_image(images)
    torch.manual_seed(0)
    other = open_clip.create_model(arch, pretrained=None).eval()
    inject_lora(other, config)
    load_lora_state_dict(other, state)
    with torch.no_grad():
        assert torch.allclose(other.encode_image(images), expected, atol=1e-6)

    broken = dict(state)
    missing = broken.pop("visual.transformer.resblocks.1.attn.lora.v.B")
    broken["visual.transformer.resblocks.1.attn.lora.k.A"] = missing
    with pytest.raises(LoraError, match=r"missing \['visual.transformer.resblocks.1.attn.lora.v.B'\].*"
                                        r"unexpected \['visual.transformer.resblocks.1.attn.lora.k.A'\]"):
        load_lora_state_dict(other, broken)
    wrong_rank = {**state, "visual.transformer.resblocks.0.attn.lora.q.A": torch.zeros(3, 32)}
    with pytest.raises(LoraError, match=r"resblocks.0.attn.lora.q: A \(3, 32\) and B \(32, 2\)"):
        load_lora_state_dict(other, wrong_rank)
    wrong_width = {**state, "visual.transformer.resblocks.0.attn.lora.q.A": torch.zeros(2, 16),
                   "visual.transformer.resblocks.0.attn.lora.q.B": torch.zeros(16, 2)}
    with pytest.raises(LoraError, match="do not fit the base weight"):
        load_lora_state_dict(other, wrong_width)


def test_hf_clip_vision_model_gets_adapters_on_q_and_v():
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=16, patch_size=8)
    torch.manual_seed(0)
    hf = transformers.CLIPVisionModel(config).eval()
    reference = transformers.CLIPVisionModel(config).eval()
    reference.load_state_dict(hf.state_dict())
    pixels = torch.randn(2, 3, 16, 16)
    keys = list(hf.state_dict())
    lora = LoraConfig(rank=2, alpha=4)
    adapted = inject_lora(hf, lora)
    assert len(adapted) == 4 and [k for k in hf.state_dict() if ".lora." not in k] == keys
    with torch.no_grad():
        assert torch.equal(hf(pixel_values=pixels).pooler_output, reference(pixel_values=pixels).pooler_output)
    _randomise(hf)
    with torch.no_grad():
        layers = getattr(hf, "vision_model", hf).encoder.layers
        ref_layers = getattr(reference, "vision_model", reference).encoder.layers
        for layer, ref_layer in zip(layers, ref_layers):
            for name in ("q_proj", "v_proj"):
                delta = getattr(layer.self_attn, name).lora["main"]
                getattr(ref_layer.self_attn, name).weight.add_(lora.scaling * delta.B @ delta.A)
        got = hf(pixel_values=pixels).pooler_output
        want = reference(pixel_values=pixels).pooler_output
    assert (got - want).abs().max() < 1e-5 and (got - hf(pixel_values=pixels).pooler_output).abs().max() == 0


def test_adapter_file_round_trip_through_load_model(tmp_path, arch, images):
    torch.manual_seed(0)
    base_path = tmp_path / "base.pt"
    torch.save(open_clip.create_model(arch, pretrained=None).state_dict(), base_path)
    spec = ModelSpec(name="tiny", source="open_clip", architecture=arch, weights=str(base_path), quick_gelu=True)
    encoder = load_model(spec, cache_dir=tmp_path)
    base_fp = image_weights_fingerprint(encoder)
    config = LoraConfig(rank=2, alpha=4, targets=("q", "v", "mlp"), rslora=True)
    inject_lora(encoder.module, config)
    _randomise(encoder.module)
    assert lora_base_fingerprint(encoder) == base_fp
    with torch.no_grad():
        expected = encoder.encode_image(images)
    merge_lora(encoder.module)  # saving works merged too: the base fingerprint is taken unmerged
    path = save_lora_adapter(tmp_path / "adapter.safetensors", encoder, encoder.module, config)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    adapted = load_model(ModelSpec(**{**spec.__dict__, "adapter": str(path)}), cache_dir=tmp_path)
    with torch.no_grad():
        assert torch.allclose(adapted.encode_image(images), expected, atol=1e-5)
    assert adapted.fingerprint != load_model(spec, cache_dir=tmp_path).fingerprint
    assert adapted.info["adapter_kind"] == "lora"

    torch.manual_seed(1)
    other_path = tmp_path / "other.pt"
    torch.save(open_clip.create_model(arch, pretrained=None).state_dict(), other_path)
    wrong_base = ModelSpec(**{**spec.__dict__, "weights": str(other_path), "adapter": str(path)})
    with pytest.raises(ModelLoadError, match="was made for a base"):
        load_model(wrong_base, cache_dir=tmp_path)
