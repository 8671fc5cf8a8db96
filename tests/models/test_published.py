import math
import re
from dataclasses import asdict, replace

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from overspec.config.typed import from_dict
from overspec.models import ModelSpec, load_model, model_presets
from overspec.models.base import ModelLoadError
from overspec.models.published import (
    LORA_PRESETS,
    PREPROCESS_PROFILES,
    _profile_for,
    convert_published_state_dict,
    infer_lora_rank,
    load_published_head,
    read_published_checkpoint,
    resolve_lora_scaling,
)
from overspec.safeload import UnsafeFileError
from tests.models._reference_clip import TINY_HEADS, reference_image_embedding, register_tiny_openai, split_state

ATTN = "visual.transformer.resblocks.{}.attn"


class Payload:
    """Any class outside torch's weights-only allow-list stands for a pickle that would run code."""


@pytest.fixture(scope="module")
def arch(tmp_path_factory) -> str:
    return register_tiny_openai(tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def released(arch):
    """(base open_clip state, released-format state with random rank-4 LoRA on q and v)."""
    torch.manual_seed(0)
    base = open_clip.create_model(arch, pretrained=None).state_dict()
    state = split_state(base)
    generator = torch.Generator().manual_seed(3)
    for i in range(2):
        for proj in ("q_proj", "v_proj"):
            state[f"{ATTN.format(i)}.{proj}.w_lora_A"] = torch.randn(4, 32, generator=generator) * 0.2
            state[f"{ATTN.format(i)}.{proj}.w_lora_B"] = torch.randn(32, 4, generator=generator) * 0.2
    return base, state


def _spec(arch, weights, **kw) -> ModelSpec:
    return ModelSpec(name="pub", source="published", architecture=arch, weights=str(weights), **kw)


def _save(tmp_path, state, name="backbone.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_merged_fused_weights_match_a_hand_computation(tmp_path, arch, released):
    base, state = released
    encoder = load_model(_spec(arch, _save(tmp_path, state), options={"lora_alpha": 8}), cache_dir=tmp_path)
    scaling = 8 / math.sqrt(4)  # rsLoRA by default
    got = encoder.module.state_dict()
    for i in range(2):
        a = ATTN.format(i)
        q = state[f"{a}.q_proj.weight"].double() + scaling * (state[f"{a}.q_proj.w_lora_B"].double()
                                                               @ state[f"{a}.q_proj.w_lora_A"].double())
        v = state[f"{a}.v_proj.weight"].double() + scaling * (state[f"{a}.v_proj.w_lora_B"].double()
                                                               @ state[f"{a}.v_proj.w_lora_A"].double())
        want = torch.cat([q, state[f"{a}.k_proj.weight"].double(), v])
        assert (got[f"{a}.in_proj_weight"].double() - want).abs().max() < 1e-6
        assert torch.equal(got[f"{a}.in_proj_bias"], base[f"{a}.in_proj_bias"])
        assert torch.equal(got[f"{a}.out_proj.weight"], state[f"{a}.proj.weight"])
        assert not torch.allclose(got[f"{a}.in_proj_weight"], base[f"{a}.in_proj_weight"])
    assert torch.equal(got["token_embedding.weight"], base["token_embedding.weight"])
    info = encoder.info["lora"]
    assert info["rank"] == 4 and info["adapted"] == ["q_proj", "v_proj"] and info["scaling"] == scaling
    assert encoder.info["source"] == "published"


def test_forward_matches_split_attention_reference(tmp_path, arch, released):
    _, state = released
    encoder = load_model(_spec(arch, _save(tmp_path, state), options={"lora_scaling": 1.5}), cache_dir=tmp_path)
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    lora = {f"{ATTN.format(i)}.{p}": (state[f"{ATTN.format(i)}.{p}.w_lora_A"], state[f"{ATTN.format(i)}.{p}.w_lora_B"])
            for i in range(2) for p in ("q_proj", "v_proj")}
    want = reference_image_embedding(state, images, heads=TINY_HEADS, lora=lora, scaling=1.5)
    with torch.no_grad():
        got = encoder.encode_image(images).double()
    assert (got - want).abs().max() < 1e-5
    assert (got - reference_image_embedding(state, images, heads=TINY_HEADS)).abs().max() > 1e-2


def test_module_prefix_and_strength(tmp_path, arch, released):
    base, state = released
    plain = load_model(_spec(arch, _save(tmp_path, state), options={"lora_alpha": 8}), cache_dir=tmp_path)
    prefixed_path = _save(tmp_path, {f"module.{k}": v for k, v in state.items()}, "ddp.pth")
    prefixed = load_model(_spec(arch, prefixed_path, options={"lora_alpha": 8}), cache_dir=tmp_path)
    assert prefixed.fingerprint == plain.fingerprint
    off = load_model(_spec(arch, prefixed_path, options={"lora_alpha": 8, "lora_strength": 0.0}), cache_dir=tmp_path)
    key = f"{ATTN.format(1)}.in_proj_weight"
    assert torch.equal(off.module.state_dict()[key], base[key])


def test_rank_inference_and_inconsistent_ranks(released):
    _, state = released
    assert infer_lora_rank(state) == 4
    assert infer_lora_rank({k: v for k, v in state.items() if "lora" not in k}) is None
    bad = dict(state)
    bad[f"{ATTN.format(1)}.v_proj.w_lora_A"] = torch.zeros(3, 32)
    with pytest.raises(ModelLoadError, match=r"inconsistent LoRA ranks.*rank 3: \['visual.transformer.resblocks.1"
                                             r".attn.v_proj.w_lora_A'\].*rank 4"):
        infer_lora_rank(bad)


def test_lora_factor_that_does_not_fit_its_weight(arch, released):
    base, state = released
    bad = dict(state)
    bad[f"{ATTN.format(0)}.q_proj.w_lora_A"] = torch.zeros(4, 16)
    with pytest.raises(ModelLoadError, match=r"resblocks.0.attn.q_proj: w_lora_A \(4, 16\)"):
        convert_published_state_dict(bad, base, scaling=1.0)
    lonely = {k: v for k, v in state.items() if k != f"{ATTN.format(0)}.v_proj.w_lora_B"}
    with pytest.raises(ModelLoadError, match="v_proj: has w_lora_A without its partner"):
        convert_published_state_dict(lonely, base, scaling=1.0)


def test_missing_and_unexpected_keys_are_listed(tmp_path, arch, released):
    _, state = released
    bad = {k: v for k, v in state.items() if k != f"{ATTN.format(1)}.k_proj.bias"}
    bad["visual.extra_thing"] = torch.zeros(1)
    with pytest.raises(ModelLoadError, match=r"missing keys \[visual.transformer.resblocks.1.attn.k_proj.bias\], "
                                             r"unexpected keys \[visual.extra_thing\]"):
        load_model(_spec(arch, _save(tmp_path, bad), options={"lora_alpha": 8}), cache_dir=tmp_path)
    base, _ = released
    with pytest.raises(ModelLoadError, match="use source open_clip"):
        load_model(_spec(arch, _save(tmp_path, base, "fused.pth")), cache_dir=tmp_path)


def test_scaling_must_be_given_and_presets_must_fit(tmp_path, arch, released):
    _, state = released
    path = _save(tmp_path, state)
    with pytest.raises(ModelLoadError, match="alpha and scaling are not stored"):
        load_model(_spec(arch, path), cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="'madation-b16' is for rank 2, but the checkpoint has rank 4"):
        load_model(_spec(arch, path, options={"lora_preset": "madation-b16"}), cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="conflict"):
        resolve_lora_scaling({"lora_preset": "foundpad", "lora_alpha": 8}, 8)
    with pytest.raises(ModelLoadError, match="unknown options"):
        resolve_lora_scaling({"lora_alfa": 8}, 8)
    assert resolve_lora_scaling({"lora_alpha": 8, "lora_rule": "standard"}, 4)[0] == 2.0
    assert resolve_lora_scaling({"lora_preset": "froundation"}, 16)[0] == 8.0
    assert resolve_lora_scaling({"lora_preset": "madation-l14"}, 2)[0] == pytest.approx(5.657, abs=1e-3)
    assert resolve_lora_scaling({"lora_preset": "foundpad"}, 8)[0] == pytest.approx(2.828, abs=1e-3)


def test_preprocessing_profile_from_the_preset(tmp_path, arch, released):
    base, state = released
    rank2 = {k: (v[:2] if k.endswith("w_lora_A") else v[:, :2] if k.endswith("w_lora_B") else v)
             for k, v in state.items()}
    encoder = load_model(_spec(arch, _save(tmp_path, rank2), options={"lora_preset": "madation-b16"}),
                         cache_dir=tmp_path)
    assert encoder.info["preprocess"] == {"size": 16, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                                          "interpolation": "bilinear", "resize_mode": "squash",
                                          "channel_order": "BGR"}  # the profile at the architecture's image size
    red = Image.new("RGB", (112, 80), (255, 0, 0))
    tensor = encoder.preprocess(red)
    assert tensor.shape == (3, 16, 16)  # squashed, not centre-cropped
    assert torch.allclose(tensor[2], torch.ones(16, 16)) and torch.allclose(tensor[0], -torch.ones(16, 16))
    fr = load_model(_spec(arch, _save(tmp_path, state), options={"lora_alpha": 8,
                                                                 "preprocess_profile": "foundpad"}), cache_dir=tmp_path)
    assert fr.info["preprocess"]["mean"] == (0.485, 0.456, 0.406)
    assert fr.fingerprint != load_model(_spec(arch, tmp_path / "backbone.pth", options={"lora_alpha": 8}),
                                        cache_dir=tmp_path).fingerprint


def test_released_header_becomes_a_binary_head(tmp_path, arch, released):
    _, state = released
    generator = torch.Generator().manual_seed(7)
    weight, bias = torch.randn(2, 16, generator=generator), torch.randn(2, generator=generator)
    header = _save(tmp_path, {"module.linear.weight": weight, "module.linear.bias": bias}, "40_header.pth")
    encoder = load_model(_spec(arch, _save(tmp_path, state), head=str(header), options={"lora_alpha": 8}),
                         cache_dir=tmp_path)
    embeddings = np.random.default_rng(0).normal(size=(5, 16))
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    logits = unit @ weight.double().numpy().T + bias.double().numpy()
    expected = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    assert np.allclose(encoder.head.scores(embeddings), expected, atol=1e-6)
    wrong = _save(tmp_path, {"linear.weight": weight, "bias": bias}, "bad_header.pth")
    with pytest.raises(ModelLoadError, match=r"got \['bias', 'linear.weight'\]"):
        load_published_head(wrong)
    wide = _save(tmp_path, {"linear.weight": torch.zeros(2, 8), "linear.bias": bias}, "wide_header.pth")
    with pytest.raises(ModelLoadError, match="expects 8-d embeddings, the image tower gives 16"):
        load_model(_spec(arch, tmp_path / "backbone.pth", head=str(wide), options={"lora_alpha": 8}),
                   cache_dir=tmp_path)


def test_pickle_payload_is_refused(tmp_path, released):
    _, state = released
    path = _save(tmp_path, {**state, "evil": Payload()}, "evil.pth")
    with pytest.raises(UnsafeFileError, match="evil.pth"):
        read_published_checkpoint(path)


def test_gelu_architecture_and_missing_file_are_clear_errors(tmp_path, arch, released, micro_config_file):
    _, state = released
    with pytest.raises(ModelLoadError, match="uses GELU"):
        load_model(_spec("micro-clip", _save(tmp_path, state), options={"lora_alpha": 8}), cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match=r"weights file not found: .*nowhere.pth \(not bundled.*ownCloud"):
        load_model(_spec(arch, tmp_path / "nowhere.pth", reference="ownCloud links"), cache_dir=tmp_path)


def test_published_presets_are_consistent():
    presets = model_presets()
    names = [n for n in presets.names() if n.startswith(("froundation-", "madation-", "foundpad-"))]
    assert len(names) == 10
    for name in names:
        spec = presets.get(name)
        preset = LORA_PRESETS[spec.options["lora_preset"]]
        assert spec.source == "published" and spec.architecture.endswith("-quickgelu") and spec.quick_gelu
        assert spec.preprocess == PREPROCESS_PROFILES[preset.profile], name
        assert spec.base in ("openai-vit-b-16", "openai-vit-l-14") and spec.reference and spec.weights
        assert spec.specialisation == {"froundation": "fr", "madation": "mad", "foundpad": "pad"}[name.split("-")[0]]
        assert (spec.head is not None) == (spec.specialisation != "fr")
        assert ("b-16" in name) == ("ViT-B-16" in spec.architecture)
    assert presets.get("madation-vit-l-14").options["lora_preset"] == "madation-l14"
    assert LORA_PRESETS["froundation"].scaling == 8.0


# ----------------------------------------------------------------------------------------------------------------
# Released checkpoints that would load silently wrong: partial LoRA, merged weights, another base model.


@pytest.fixture
def base_preset(tmp_path, arch, released):
    """The released state's base registered as an open_clip preset with a local weights file; yields its name."""
    base, _ = released
    name = f"base-{tmp_path.name}"
    spec = ModelSpec(name=name, architecture=arch, quick_gelu=True, weights=str(_save(tmp_path, base, "base.pt")))
    model_presets().register(name, spec)
    yield name
    model_presets().unregister(name)


def test_a_projection_without_lora_while_other_blocks_have_it_is_named(tmp_path, arch, released):
    _, state = released
    partial = {k: v for k, v in state.items() if not k.startswith(f"{ATTN.format(1)}.v_proj.w_lora_")}
    with pytest.raises(ModelLoadError, match=r"backbone\.pth: LoRA missing on \[visual\.transformer\.resblocks\.1"
                                             r"\.attn\.v_proj\] .*adapt q_proj, v_proj"):
        load_model(_spec(arch, _save(tmp_path, partial), options={"lora_alpha": 8}), cache_dir=tmp_path)


def test_a_missing_w_lora_b_names_the_key(tmp_path, arch, released):
    _, state = released
    key = f"{ATTN.format(0)}.q_proj.w_lora_B"
    lonely = {k: v for k, v in state.items() if k != key}
    with pytest.raises(ModelLoadError, match=rf"backbone\.pth: .*missing key {re.escape(key)}$"):
        load_model(_spec(arch, _save(tmp_path, lonely), options={"lora_alpha": 8}), cache_dir=tmp_path)


def test_a_checkpoint_on_its_base_loads(tmp_path, arch, released, base_preset):
    _, state = released
    encoder = load_model(_spec(arch, _save(tmp_path, state), base=base_preset, options={"lora_alpha": 8}),
                         cache_dir=tmp_path)
    assert encoder.info["lora"]["rank"] == 4


def test_an_already_merged_checkpoint_is_refused(tmp_path, arch, released, base_preset):
    _, state = released
    merged = dict(state)
    for i in range(2):
        for proj in ("q_proj", "v_proj"):
            p = f"{ATTN.format(i)}.{proj}"
            merged[f"{p}.weight"] = state[f"{p}.weight"] + 2.0 * state[f"{p}.w_lora_B"] @ state[f"{p}.w_lora_A"]
    with pytest.raises(ModelLoadError, match=r"merged\.pth: already merged: \[visual\.transformer\.resblocks\.0\.attn"
                                             r"\.q_proj\.weight, .*resblocks\.1\.attn\.v_proj\.weight\] differ from "
                                             rf"base model '{base_preset}'.*twice"):
        load_model(_spec(arch, _save(tmp_path, merged, "merged.pth"), base=base_preset, options={"lora_alpha": 8}),
                   cache_dir=tmp_path)


def test_a_checkpoint_of_another_base_is_refused(tmp_path, arch, released, base_preset):
    torch.manual_seed(11)
    other = split_state(open_clip.create_model(arch, pretrained=None).state_dict())
    _, state = released
    other.update({k: v for k, v in state.items() if "w_lora_" in k})
    with pytest.raises(ModelLoadError, match=r"other\.pth: \d+ frozen visual weights differ from base model "
                                             rf"'{base_preset}' .*visual\.conv1\.weight"):
        load_model(_spec(arch, _save(tmp_path, other, "other.pth"), base=base_preset, options={"lora_alpha": 8}),
                   cache_dir=tmp_path)


def test_a_base_that_is_not_at_hand_is_skipped(tmp_path, arch, released):
    _, state = released
    encoder = load_model(_spec(arch, _save(tmp_path, state), base="no-such-preset", options={"lora_alpha": 8}),
                         cache_dir=tmp_path)
    assert encoder.info["source"] == "published"


def test_the_profile_takes_the_architecture_image_size():
    spec = ModelSpec(name="l336", source="published", architecture="ViT-L-14-336-quickgelu", quick_gelu=True,
                     options={"lora_preset": "froundation"})
    assert _profile_for(spec, spec.architecture) == replace(PREPROCESS_PROFILES["froundation"], size=336)


def test_a_partial_preprocess_overrides_only_the_keys_it_names(tmp_path, arch, released):
    _, state = released
    data = {"name": "pub", "source": "published", "architecture": arch, "weights": str(_save(tmp_path, state)),
            "options": {"lora_alpha": 8, "preprocess_profile": "foundpad"}, "preprocess": {"channel_order": "BGR"}}
    encoder = load_model(from_dict(ModelSpec, data, where="test"), cache_dir=tmp_path)
    want = replace(PREPROCESS_PROFILES["foundpad"], size=16, channel_order="BGR")
    assert encoder.info["preprocess"] == asdict(want)


def test_a_lone_w_lora_a_is_named_even_when_compared_with_the_base(tmp_path, arch, released, base_preset):
    _, state = released
    key = f"{ATTN.format(1)}.v_proj.w_lora_B"
    lonely = {k: v for k, v in state.items() if k != key}
    with pytest.raises(ModelLoadError, match=rf"missing key {re.escape(key)}$"):
        load_model(_spec(arch, _save(tmp_path, lonely), base=base_preset, options={"lora_alpha": 8}),
                   cache_dir=tmp_path)
