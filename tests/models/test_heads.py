import numpy as np
import pytest
import torch

from overspec.models import ModelLoadError
from overspec.models.heads import BinaryHead, load_binary_head, save_binary_head


def test_head_round_trip_and_scores_match_hand_computation(tmp_path):
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    head = BinaryHead(weight, torch.tensor([0.0, 0.5]))
    loaded = load_binary_head(save_binary_head(tmp_path / "h.safetensors", head))
    x = np.array([[3.0, 4.0]])  # normalised: (0.6, 0.8) -> logits (0.6, 2.1)
    expected = np.exp(2.1) / (np.exp(0.6) + np.exp(2.1))
    np.testing.assert_allclose(loaded.scores(x), [expected], rtol=1e-6)
    raw = BinaryHead(weight, torch.tensor([0.0, 0.5]), normalise_input=False)
    np.testing.assert_allclose(load_binary_head(save_binary_head(tmp_path / "r.safetensors", raw)).scores(x),
                               [np.exp(8.5) / (np.exp(3.0) + np.exp(8.5))], rtol=1e-6)


def test_bad_heads_are_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="weight \\(2, D\\)"):
        BinaryHead(torch.zeros(3, 4), torch.zeros(2))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2, 2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ModelLoadError, match="x.safetensors: expected a binary head"):
        load_binary_head(tmp_path / "x.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ModelLoadError, match="junk.safetensors: not a readable safetensors head"):
        load_binary_head(tmp_path / "junk.safetensors")


def test_a_head_of_the_wrong_width_is_refused_when_the_model_loads(tmp_path, micro_checkpoint, micro_config_file):
    import pytest

    from overspec.models import ModelSpec, load_model
    from overspec.models.base import ModelLoadError

    def spec(width: int) -> ModelSpec:
        head = BinaryHead(torch.ones(2, width), torch.zeros(2))
        path = save_binary_head(tmp_path / f"head{width}.safetensors", head)
        return ModelSpec(name="m", config_file=str(micro_config_file), weights=str(micro_checkpoint), head=str(path))

    assert load_model(spec(16), cache_dir=tmp_path).head.dim == 16  # micro-clip embeds into 16 dimensions
    with pytest.raises(ModelLoadError, match=r"model 'm': head .*head12.safetensors takes embeddings of width 12, "
                                             r"but the model's are 16 wide"):
        load_model(spec(12), cache_dir=tmp_path)
