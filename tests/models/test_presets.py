from overspec.models import model_presets
from overspec.models.registry import SOURCES


def test_every_preset_names_a_known_source_and_weights():
    presets = model_presets()
    assert {"tiny-s", "tiny-m", "openai-vit-b-16", "openai-vit-l-14"} <= set(presets.names())
    for name in presets.names():
        spec = presets.get(name)
        assert spec.name == name
        assert spec.source in SOURCES
        assert spec.weights, f"preset {name} names no weights"
        assert spec.description


def test_openai_presets_use_quickgelu_and_openai_normalisation():
    for name in ("openai-vit-b-16", "openai-vit-l-14"):
        spec = model_presets().get(name)
        assert spec.quick_gelu and spec.architecture.endswith("-quickgelu")
        assert spec.preprocess.mean == (0.48145466, 0.4578275, 0.40821073)
        assert spec.preprocess.interpolation == "bicubic" and spec.preprocess.size == 224
