import json
import sys

import open_clip
import pytest
import torch

from overspec.cli.main import main
from overspec.models import ModelSpec, load_model
from overspec.models.export import ExportError, export_onnx
from overspec.models.lora import LoraConfig, inject_lora, lora_parameters
from tests.models._reference_clip import TINY_OPENAI_CFG, register_tiny_openai


@pytest.fixture(scope="module")
def arch(tmp_path_factory) -> str:
    return register_tiny_openai(tmp_path_factory.mktemp("cfg"))


@pytest.fixture
def encoder(tmp_path, arch):
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pt"
    torch.save(open_clip.create_model(arch, pretrained=None).state_dict(), weights)
    return load_model(ModelSpec(name="tiny", architecture=arch, weights=str(weights), quick_gelu=True),
                      cache_dir=tmp_path)


def test_missing_onnx_packages_give_an_install_hint(tmp_path, encoder, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ExportError, match=r"install overspec\[export\]"):
        export_onnx(encoder, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_export_matches_pytorch_with_a_dynamic_batch(tmp_path, encoder):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    report = export_onnx(encoder, tmp_path / "m.onnx")
    assert set(report["max_abs_diff"]) == {"2", "3"} and report["max_abs_diff_overall"] < 1e-4
    assert report["input_shape"] == ["batch", 3, 16, 16] and report["lora_merged"] == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    images = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        expected = encoder.encode_image(images).numpy()
    got = session.run(["embedding"], {"image": images.numpy()})[0]
    assert got.shape == (5, TINY_OPENAI_CFG["embed_dim"]) and abs(got - expected).max() < 1e-4
    metadata = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(metadata["overspec.preprocess"])["size"] == 16
    assert metadata["overspec.fingerprint"] == encoder.fingerprint


def test_export_merges_lora_and_restores_the_encoder(tmp_path, encoder):
    ort = pytest.importorskip("onnxruntime")
    inject_lora(encoder.module, LoraConfig(rank=2, alpha=4, targets=("q", "v", "mlp")))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in lora_parameters(encoder.module):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    before = {k: v.clone() for k, v in encoder.module.state_dict().items()}
    report = export_onnx(encoder, tmp_path / "lora.onnx")
    assert report["lora_merged"] == 2 * 3 and report["max_abs_diff_overall"] < 1e-4
    after = encoder.module.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = encoder.encode_image(images).numpy()
    session = ort.InferenceSession(str(tmp_path / "lora.onnx"), providers=["CPUExecutionProvider"])
    assert abs(session.run(["embedding"], {"image": images.numpy()})[0] - expected).max() < 1e-4


def test_parity_failure_leaves_no_file(tmp_path, encoder):
    pytest.importorskip("onnxruntime")
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(encoder, tmp_path / "m.onnx", tolerance=-1.0)  # any difference fails
    assert not list(tmp_path.glob("m.onnx*"))


def test_cli_export_prints_parity(tmp_path, arch, capsys):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pt"
    torch.save(open_clip.create_model(arch, pretrained=None).state_dict(), weights)
    preset = tmp_path / "tiny.yaml"
    preset.write_text(f"name: tiny-export\nsource: open_clip\narchitecture: {arch}\nweights: {weights}\n"
                      "quick_gelu: true\ndescription: test\n")
    assert main(["export", str(preset), "--output", str(tmp_path / "cli.onnx"), "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "exported tiny-export" in out and "batch 2:" in out and "batch 3:" in out
    assert (tmp_path / "cli.onnx").is_file()
