"""TorchScript archives (OpenAI's ``ViT-B-16.pt`` format) load without running their code; payloads are refused."""

from __future__ import annotations

import io
import logging
import pickle
import warnings
import zipfile
from pathlib import Path

import open_clip

import pytest
import torch

from overspec.models import ModelSpec, load_model
from overspec.models.base import ModelLoadError
from overspec.models.sources.open_clip import load_torchscript_weights
from overspec.safeload import UnsafeFileError, UnreadableFileError, load_torch_checkpoint
from overspec.torchscript import is_torchscript_archive, read_torchscript_state_dict
from tests.reliability.test_payloads import OBJECT_PAYLOADS, RAW_PAYLOADS


def _quiet_jit(call, *args, **kwargs):
    """Run a ``torch.jit`` function without its deprecation warnings (the test only writes archives with it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call(*args, **kwargs)


@pytest.fixture
def traced_micro_clip(tmp_path, micro_config_file) -> tuple[Path, dict[str, torch.Tensor]]:
    """A traced micro-clip saved as a TorchScript archive, and the state dict it was traced from."""
    torch.manual_seed(1)
    model = open_clip.create_model("micro-clip", pretrained=None).eval()
    image, text = torch.randn(1, 3, 16, 16), torch.randint(0, 100, (1, 16))
    traced = _quiet_jit(torch.jit.trace, model, (image, text), strict=False, check_trace=False)
    path = tmp_path / "ViT-micro.pt"
    _quiet_jit(torch.jit.save, traced, str(path))
    return path, model.state_dict()


class _OpenAILike(torch.nn.Module):
    """OpenAI CLIP's top-level names as stored in its archive: fp16 weights and the integer settings entries."""

    def __init__(self) -> None:
        super().__init__()
        self.positional_embedding = torch.nn.Parameter(torch.randn(4, 8).half())
        self.text_projection = torch.nn.Parameter(torch.randn(8, 4).half())
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6052))
        self.visual = torch.nn.Module()
        self.visual.conv1 = torch.nn.Conv2d(3, 8, 4, bias=False).half()
        self.register_buffer("input_resolution", torch.tensor(16))
        self.register_buffer("context_length", torch.tensor(4))
        self.register_buffer("vocab_size", torch.tensor(100))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual.conv1(x) * self.logit_scale.exp() + self.positional_embedding.sum()


def _with_data_pkl(archive: Path, pickled: bytes, out: Path) -> Path:
    """A copy of the TorchScript ``archive`` whose ``data.pkl`` is ``pickled`` (its ``code/`` folder kept)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(info.filename, pickled if info.filename.endswith("/data.pkl") else source.read(info))
    out.write_bytes(buffer.getvalue())
    return out


def test_a_traced_clip_archive_loads_through_overspec_with_its_parameters(traced_micro_clip, tmp_path):
    path, source_state = traced_micro_clip
    assert is_torchscript_archive(path)
    encoder = load_model(ModelSpec(name="openai-archive", architecture="micro-clip", weights=str(path)),
                         cache_dir=tmp_path)
    loaded = encoder.module.state_dict()
    assert sorted(loaded) == sorted(source_state)
    for key, value in source_state.items():
        assert torch.equal(loaded[key], value), key


def test_archive_keys_and_dtypes_are_those_of_the_scripted_module(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "openai-like.pt"
    _quiet_jit(torch.jit.save, _quiet_jit(torch.jit.script, _OpenAILike()), str(path))
    expected = _quiet_jit(torch.jit.load, str(path)).state_dict()
    state = load_torch_checkpoint(path)
    assert sorted(state) == sorted(expected)
    assert "visual.conv1.weight" in state and "input_resolution" in state
    for key, value in expected.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key


def test_a_plain_torch_save_checkpoint_is_not_taken_for_an_archive(micro_checkpoint):
    assert not is_torchscript_archive(micro_checkpoint)


def test_an_archive_of_another_architecture_names_the_file_and_keys(traced_micro_clip, tmp_path):
    path, _ = traced_micro_clip
    state = read_torchscript_state_dict(path)
    assert "visual.conv1.weight" in state
    wrong = open_clip.create_model("micro-clip", pretrained=None, embed_dim=8)
    with pytest.raises(ModelLoadError, match=r"ViT-micro\.pt.*text_projection"):
        load_torchscript_weights(wrong, path)


@pytest.mark.parametrize("payload", ["os.system GLOBAL protocol 2", "Python-2 __builtin__.eval", "OBJ opcode"])
def test_a_raw_payload_in_data_pkl_is_refused_and_runs_nothing(traced_micro_clip, tmp_path, payload):
    marker = tmp_path / "pwned"
    path = _with_data_pkl(traced_micro_clip[0], RAW_PAYLOADS[payload](marker), tmp_path / "evil.pt")
    with pytest.raises(UnsafeFileError, match="evil.pt"):
        load_model(ModelSpec(name="evil", architecture="micro-clip", weights=str(path)), cache_dir=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(("payload", "refused"), [("posix.system", "posix.system"),
                                                  ("builtins.eval", "builtins.eval"),
                                                  ("getattr(__import__)", "builtins.getattr")])
def test_a_payload_inside_a_module_state_is_refused_and_runs_nothing(traced_micro_clip, tmp_path, payload, refused):
    marker = tmp_path / "pwned"
    module_state = pickle.dumps({"weight": OBJECT_PAYLOADS[payload](marker)}, protocol=2)
    pickled = b"\x80\x02c__torch__\nM\n)\x81" + module_state[2:-1] + b"b."
    path = _with_data_pkl(traced_micro_clip[0], pickled, tmp_path / "evil.pt")
    with pytest.raises(UnsafeFileError, match=rf"evil\.pt.*{refused}"):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_a_tensor_reaching_past_its_storage_is_refused(traced_micro_clip, tmp_path):
    source = zipfile.ZipFile(traced_micro_clip[0])
    prefix = next(n for n in source.namelist() if n.endswith("/data.pkl"))[: -len("data.pkl")]
    storage = f"{prefix}data/0"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info)[:4] if info.filename == storage else source.read(info))
    path = tmp_path / "short.pt"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UnreadableFileError, match=r"short\.pt.*data/0"):
        read_torchscript_state_dict(path)


def test_an_archive_without_its_code_folder_is_recognised_by_its_torch_classes(traced_micro_clip, tmp_path):
    path, source_state = traced_micro_clip
    buffer = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            if "/code/" not in info.filename:
                target.writestr(info.filename, source.read(info))
    stripped = tmp_path / "no-code.pt"
    stripped.write_bytes(buffer.getvalue())
    assert is_torchscript_archive(stripped)
    state = load_torch_checkpoint(stripped)
    assert all(torch.equal(state[key], value) for key, value in source_state.items())


def test_loading_an_archive_does_not_announce_random_weights(traced_micro_clip, tmp_path, caplog):
    path, _ = traced_micro_clip
    with caplog.at_level(logging.WARNING):
        load_model(ModelSpec(name="openai-archive", architecture="micro-clip", weights=str(path)), cache_dir=tmp_path)
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
