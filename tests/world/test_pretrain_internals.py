"""Training-loop details of the tiny CLIPs: the compact vocabulary, the vectorised shift and the cache key."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from overspec.world import pretrain


def test_shift_matches_a_per_image_crop_of_the_padded_batch() -> None:
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    shifted = pretrain._shift(images, torch.Generator().manual_seed(3))
    offsets = torch.randint(0, 2 * pretrain._MAX_SHIFT + 1, (6, 2), generator=torch.Generator().manual_seed(3))
    padded = F.pad(images.float(), (pretrain._MAX_SHIFT,) * 4, mode="replicate")
    expected = torch.stack([padded[i, :, y:y + 32, x:x + 32] for i, (y, x) in enumerate(offsets.tolist())])
    assert torch.equal(shifted, expected)


def test_compact_vocabulary_trains_only_used_rows_and_keeps_text_pooling() -> None:
    pretrain.register_tiny_configs()
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-s", pretrained=None).eval()
    tokens = open_clip.get_tokenizer("tiny-s")(["a red star", "the number 7", "two blue circles"])
    before = model.token_embedding.weight.detach().clone()
    with torch.no_grad():
        reference = model.encode_text(tokens)
    with pretrain._compact_vocabulary(model, tokens) as compact_tokens:
        assert model.token_embedding.num_embeddings == len(torch.unique(tokens))
        with torch.no_grad():
            assert torch.allclose(model.encode_text(compact_tokens), reference, atol=1e-6)
            model.token_embedding.weight.add_(1.0)
    after = model.token_embedding.weight
    used = torch.zeros(after.shape[0], dtype=torch.bool)
    used[torch.unique(tokens)] = True
    assert after.shape == before.shape
    assert torch.equal(after[~used], before[~used])
    assert torch.allclose(after[used], before[used] + 1.0)


def test_stale_models_are_retrained_not_reused(general_world: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    first = pretrain.pretrain_tiny_clip("tiny-s", general_world, tmp_path, seed=0, steps=2, batch_size=8)
    key = json.loads((first / "training.json").read_text())["key"]
    assert pretrain.pretrain_tiny_clip("tiny-s", general_world, tmp_path, seed=0, steps=2, batch_size=8) == first
    monkeypatch.setitem(pretrain.RECIPES, "tiny-s", replace(pretrain.RECIPES["tiny-s"], lr=1e-4))
    again = pretrain.pretrain_tiny_clip("tiny-s", general_world, tmp_path, seed=0, steps=2, batch_size=8)
    assert again == first and json.loads((again / "training.json").read_text())["key"] != key


def test_training_key_depends_on_config_recipe_seed_and_data(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = pretrain.RECIPES["tiny-s"]
    base = pretrain.training_key("tiny-s", recipe, 0, "abc")
    assert base == pretrain.training_key("tiny-s", recipe, 0, "abc")
    assert len({base, pretrain.training_key("tiny-s", recipe, 1, "abc"),
                pretrain.training_key("tiny-s", recipe, 0, "abd"),
                pretrain.training_key("tiny-s", replace(recipe, steps=recipe.steps + 1), 0, "abc"),
                pretrain.training_key("tiny-m", recipe, 0, "abc")}) == 5
    config = pretrain.tiny_clip_config("tiny-s")
    config["vision_cfg"]["width"] += 8
    monkeypatch.setattr(pretrain, "tiny_clip_config", lambda size: config)
    assert pretrain.training_key("tiny-s", recipe, 0, "abc") != base


def test_deterministic_context_restores_the_uninitialised_memory_fill() -> None:
    before = torch.utils.deterministic.fill_uninitialized_memory
    with pretrain._deterministic(0):
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory == before


def test_altered_weights_are_reported_and_retrained(general_world: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    folder = pretrain.pretrain_tiny_clip("tiny-s", general_world, tmp_path, seed=0, steps=2, batch_size=8)
    weights = folder / "open_clip_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-64] + bytes(64))  # same size, last 64 bytes of the last tensor zeroed
    again = pretrain.pretrain_tiny_clip("tiny-s", general_world, tmp_path, seed=0, steps=2, batch_size=8)
    assert "do not match the checksum" in caplog.text and str(weights) in caplog.text
    assert (again / "open_clip_model.safetensors").read_bytes() == original


def test_parallel_pretraining_gives_the_weights_of_sequential_pretraining(general_world: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrain.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(pretrain, "PARALLEL_MIN_STEPS", 0)
    pools = []
    real_pool = pretrain.ProcessPoolExecutor
    monkeypatch.setattr(pretrain, "ProcessPoolExecutor", lambda *a, **k: pools.append(a) or real_pool(*a, **k))
    short = {size: pretrain.TrainingRecipe(steps=3, batch_size=8, warmup=1) for size in pretrain.TINY_CLIPS}
    torch.set_num_threads(2)  # the caller's thread count must not matter: training always uses one thread
    parallel = pretrain.ensure_tiny_clips(tmp_path / "a", world_root=general_world, recipes=short, progress=False)
    assert torch.get_num_threads() == 2 and pools == [(2,)]
    for size in pretrain.TINY_CLIPS:
        sequential = pretrain.pretrain_tiny_clip(size, general_world, tmp_path / "b", seed=0, recipe=short[size])
        assert (parallel[size] / "open_clip_model.safetensors").read_bytes() == \
            (sequential / "open_clip_model.safetensors").read_bytes()
        metadata = json.loads((parallel[size] / "training.json").read_text())
        assert metadata["recipe"]["steps"] == 3


class _Killed(Exception):
    """Stands in for the run being killed part-way through a step."""


def _count_steps(monkeypatch: pytest.MonkeyPatch, kill_at: int | None = None) -> list[int]:
    """Count training steps (calls of the loss); with ``kill_at``, raise :class:`_Killed` inside that step."""
    calls: list[int] = []
    real_loss = pretrain._contrastive_loss

    def loss(*args: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == kill_at:
            raise _Killed
        return real_loss(*args)

    monkeypatch.setattr(pretrain, "_contrastive_loss", loss)
    return calls


_SHORT = pretrain.TrainingRecipe(steps=8, batch_size=8, warmup=2)


def test_an_interrupted_pretraining_continues_to_the_uninterrupted_weights(general_world: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrain, "CHECKPOINT_EVERY", 3)
    clean = pretrain.pretrain_tiny_clip("tiny-s", general_world, tmp_path / "clean", recipe=_SHORT)
    assert not (tmp_path / "clean" / ".tiny-s.resume.pt").exists()

    _count_steps(monkeypatch, kill_at=8)  # snapshots after steps 3 and 6, killed inside step 8
    with pytest.raises(_Killed):
        pretrain.pretrain_tiny_clip("tiny-s", general_world, tmp_path / "resumed", recipe=_SHORT)
    snapshot = tmp_path / "resumed" / ".tiny-s.resume.pt"
    assert len(torch.load(snapshot, weights_only=True)["losses"]) == 6
    assert not (tmp_path / "resumed" / "tiny-s").exists()

    steps = _count_steps(monkeypatch)
    resumed = pretrain.pretrain_tiny_clip("tiny-s", general_world, tmp_path / "resumed", recipe=_SHORT)
    assert len(steps) == 2  # steps 7 and 8 only
    assert (resumed / "open_clip_model.safetensors").read_bytes() == (clean / "open_clip_model.safetensors").read_bytes()
    metadata = [json.loads((folder / "training.json").read_text()) for folder in (clean, resumed)]
    assert metadata[0]["losses"] == metadata[1]["losses"] and len(metadata[1]["losses"]) == 8
    assert not snapshot.exists()


@pytest.mark.parametrize("damage", ["garbage", "other-recipe"])
def test_an_unusable_snapshot_is_reported_and_training_starts_over(general_world: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   damage: str) -> None:
    monkeypatch.setattr(pretrain, "CHECKPOINT_EVERY", 3)
    clean = pretrain.pretrain_tiny_clip("tiny-s", general_world, tmp_path / "clean", recipe=_SHORT)
    snapshot = tmp_path / "run" / ".tiny-s.resume.pt"
    if damage == "garbage":
        snapshot.parent.mkdir()
        snapshot.write_bytes(b"not a torch file")
    else:  # a run of another recipe was killed after its first snapshot
        _count_steps(monkeypatch, kill_at=5)
        with pytest.raises(_Killed):
            pretrain.pretrain_tiny_clip("tiny-s", general_world, tmp_path / "run", recipe=replace(_SHORT, lr=1e-4))
    steps = _count_steps(monkeypatch)
    again = pretrain.pretrain_tiny_clip("tiny-s", general_world, tmp_path / "run", recipe=_SHORT)
    assert len(steps) == 8
    assert str(snapshot) in caplog.text and "starting over" in caplog.text
    assert (again / "open_clip_model.safetensors").read_bytes() == (clean / "open_clip_model.safetensors").read_bytes()
    assert not snapshot.exists()


def test_pretraining_says_it_starts_at_random_without_open_clips_missing_weights_notice(
        general_world: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.set_num_threads(1)
    with caplog.at_level("INFO"):
        pretrain.pretrain_tiny_clip("tiny-s", general_world, tmp_path, seed=0, steps=1, batch_size=8)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "initialized randomly" in m or m.startswith("No pretrained weights")]
    assert "tiny-s: initialised at random for pretraining" in messages
