"""The run's fine-tunes side by side: same bytes as one after the other, errors named, timings booked."""

from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import pytest
import torch

from overspec.config.model import ModelSpec
from overspec.config.run import FinetuneRunConfig, RunConfig
from overspec import workers
from overspec.finetune import schedule
from overspec.progress import stage_clock
from overspec.safeload import SafeLoadError

RECIPES = ("froundation", "madation", "foundpad")
TINY_STEPS = ("steps=3", "batch_size=8", "val_every=0", "checkpoint_every=0", "dev_fraction=0.5",
              "train_transform.resize=18", "train_transform.crop=16")  # the micro models take 16 px


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    """A data root holding the general world and a tiny biometric world (every task's training data, and the
    general data a recipe may watch while it trains)."""
    from overspec.world.biometric import WorldSizes, ensure_biometric_world
    from overspec.world.general import ensure_world

    root = tmp_path_factory.mktemp("bio")
    sizes = WorldSizes(pairs=40, ijb_subjects=6, mad_subjects=(6, 6), mad_morph_pairs=(6, 6), pad_subjects=(2, 1, 2),
                       pad_frames=2, fr_identities=3, fr_images=3)
    ensure_biometric_world(ensure_world(root, 0) / "biometric", seed=0, sizes=sizes)
    return root


def _bases(tmp_path: Path, config_file: Path, names: tuple[str, ...] = ("micro-a", "micro-b")) -> list[ModelSpec]:
    """Micro CLIPs of different random weights, one checkpoint each."""
    specs = []
    for seed, name in enumerate(names):
        torch.manual_seed(seed)
        path = tmp_path / f"{name}.pt"
        torch.save(open_clip.create_model("micro-clip", pretrained=None).state_dict(), path)
        specs.append(ModelSpec(name=name, config_file=str(config_file), weights=str(path)))
    return specs


def _config(cache: Path, recipes: tuple[str, ...] = RECIPES, **values) -> RunConfig:
    return RunConfig(name="ft", world=True, cache_dir=str(cache), threads=1, progress=False,
                     finetune=FinetuneRunConfig(recipes=recipes, profile="world", overrides=TINY_STEPS), **values)


def _assert_same_tensors(one: Path, two: Path) -> None:
    """Same metadata, same tensor names and bit-identical tensors (the files' bytes may differ: safetensors writes
    its metadata in the order of a Rust hash map, which changes from process to process)."""
    from safetensors import safe_open

    with safe_open(str(one), "pt") as a, safe_open(str(two), "pt") as b:
        assert a.metadata() == b.metadata() and sorted(a.keys()) == sorted(b.keys())
        for key in a.keys():
            left, right = a.get_tensor(key), b.get_tensor(key)
            assert left.dtype == right.dtype and torch.equal(left.view(torch.uint8), right.view(torch.uint8)), key


def _cores(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setattr(schedule.os, "cpu_count", lambda: n)


def _job(base: str, recipe: str = "madation") -> schedule.FinetuneJob:
    return schedule.FinetuneJob(ModelSpec(name=base), recipe, None, "world", None, Path(base) / recipe)


@pytest.mark.parametrize(("values", "jobs", "cores", "expected"), [
    ({}, [_job("a"), _job("b")], 2, 2),
    ({}, [_job("a", r) for r in RECIPES] + [_job("b", r) for r in RECIPES], 2, 2),  # one process per base
    ({}, [_job("a", r) for r in RECIPES] + [_job("b", r) for r in RECIPES], 16, 2),
    ({}, [_job(b) for b in "abcd"], 3, 3),  # no more processes than cores
    ({}, [_job("a", r) for r in RECIPES], 2, 1),  # one base: its fine-tunes run one after the other
    ({}, [_job("a")], 2, 1),
    ({}, [_job("a"), _job("b")], 1, 1),
    ({"threads": 2}, [_job("a"), _job("b")], 2, 1),  # two threads each need four cores
    ({"threads": 2}, [_job("a"), _job("b")], 4, 2),
    ({"threads": 0}, [_job("a"), _job("b")], 2, 1),  # torch's own thread count: not fixed, so not split
    ({"device": "cuda"}, [_job("a"), _job("b")], 2, 1),
])
def test_side_by_side_only_on_cpu_with_a_core_per_process(values, jobs, cores, expected):
    config = RunConfig(**{"threads": 1, **values})
    assert schedule.parallel_workers(config, jobs, cpu_count=cores) == expected


def test_jobs_are_taken_in_turn_from_each_base():
    jobs = [_job("a", r) for r in RECIPES] + [_job("b", r) for r in RECIPES[:2]]
    assert [(j.base.name, j.recipe) for j in schedule._interleaved(jobs)] == [
        ("a", "froundation"), ("b", "froundation"), ("a", "madation"), ("b", "madation"), ("a", "foundpad")]


@pytest.mark.slow
def test_fine_tunes_side_by_side_have_the_tensors_of_one_after_the_other(tmp_path, small_world, micro_config_file,
                                                                      monkeypatch):
    bases = _bases(tmp_path, micro_config_file)
    pools = []
    real_pool = workers.ProcessPoolExecutor
    monkeypatch.setattr(workers, "ProcessPoolExecutor", lambda *a, **k: pools.append(a) or real_pool(*a, **k))
    _cores(monkeypatch, 1)
    sequential = schedule.with_finetuned_variants(_config(tmp_path / "one"), bases, small_world)
    assert pools == []
    _cores(monkeypatch, 2)
    with stage_clock() as clock:
        parallel = schedule.with_finetuned_variants(_config(tmp_path / "two"), bases, small_world)
    assert pools == [(2,)]
    assert [s.name for s in parallel] == [s.name for s in sequential] == [
        "micro-a", "micro-a-fr", "micro-a-mad", "micro-a-pad", "micro-b", "micro-b-fr", "micro-b-mad", "micro-b-pad"]
    for one, two in zip(sequential, parallel):
        for name in ("adapter", "head"):
            path = getattr(one, name)
            assert (path is None) == (getattr(two, name) is None), (one.name, name)
            if path is not None:
                assert Path(getattr(two, name)).is_relative_to(tmp_path / "two")
                _assert_same_tensors(Path(path), Path(getattr(two, name)))
    stages = {row["stage"]: row for row in clock.table()}
    assert stages[schedule.PARALLEL_STAGE]["count"] == 1
    assert stages[schedule.PARALLEL_STAGE]["cpu_s"] > 1.0  # the workers' CPU (torch imported twice, 6 fine-tunes)
    assert all(stages[f"fine-tune {b.name} {r}"]["count"] == 1 for b in bases for r in RECIPES)  # verified here
    assert schedule.with_finetuned_variants(_config(tmp_path / "two"), bases, small_world) == parallel
    assert pools == [(2,)]  # the second time every fine-tune is reused, without starting processes


@pytest.mark.slow
def test_an_error_in_a_worker_names_the_base_and_recipe_and_keeps_its_class(tmp_path, small_world, micro_config_file,
                                                                          monkeypatch, caplog):
    good, bad = _bases(tmp_path, micro_config_file, ("micro-good", "micro-bad"))
    Path(bad.weights).write_bytes(b"not a checkpoint")
    _cores(monkeypatch, 2)
    with caplog.at_level(logging.INFO, logger=workers.__name__), pytest.raises(Exception) as info:
        schedule.with_finetuned_variants(_config(tmp_path / "c", recipes=("madation",)), [good, bad], small_world)
    assert str(info.value).startswith("fine-tune of micro-bad with madation: ")
    assert "refused to load" in str(info.value) and bad.weights in str(info.value)
    assert isinstance(info.value, SafeLoadError)  # an error the command line shows as one line, not as a bug
    assert "fine-tune of micro-good with madation done in" in caplog.text  # the other job ran to its end


def test_an_error_in_this_process_names_the_base_and_recipe(tmp_path, small_world, micro_config_file, monkeypatch):
    (bad,) = _bases(tmp_path, micro_config_file, ("micro-bad",))
    Path(bad.weights).write_bytes(b"not a checkpoint")
    _cores(monkeypatch, 1)
    with pytest.raises(SafeLoadError, match="^fine-tune of micro-bad with madation: .*refused to load"):
        schedule.with_finetuned_variants(_config(tmp_path / "c", recipes=("madation",)), [bad], small_world)


def _world_config(cache: Path, **values) -> RunConfig:
    return RunConfig(**{"name": "w", "models": ("tiny-s", "tiny-m"), "world": True, "cache_dir": str(cache),
                        "threads": 1, "progress": False, "finetune": FinetuneRunConfig(recipes=("madation",)),
                        **values})


@pytest.mark.parametrize(("values", "cores", "beside"), [
    ({}, 2, True),
    ({}, 1, False),  # no core to spare
    ({"finetune": FinetuneRunConfig()}, 2, False),  # no fine-tune needs the models before the evaluation
    ({"threads": 0}, 2, False),
    ({"device": "cuda"}, 2, False),
    ({"models": ("tiny-s", ModelSpec(name="mine", architecture="micro-clip", weights="mine.pt"))}, 2, False),
])
def test_the_world_is_generated_beside_the_models_only_for_produced_models(tmp_path, monkeypatch, values, cores,
                                                                            beside):
    _cores(monkeypatch, cores)
    bases = schedule._bases_to_make_beside_the_world(_world_config(tmp_path, **values), tmp_path / "data")
    assert [b.name for b in bases] == (["tiny-s", "tiny-m"] if beside else [])


def test_a_complete_world_is_not_generated_beside_the_models(tmp_path, monkeypatch):
    from overspec.world.biometric import MARKER

    _cores(monkeypatch, 2)
    (tmp_path / "data" / "world" / "biometric").mkdir(parents=True)
    (tmp_path / "data" / "world" / "biometric" / MARKER).write_text("{}")
    assert schedule._bases_to_make_beside_the_world(_world_config(tmp_path), tmp_path / "data") == []


@pytest.mark.slow
def test_the_world_generated_beside_the_models_is_the_world_generated_here(tmp_path, monkeypatch):
    from overspec.world import prepare
    from overspec.world.biometric import MARKER as BIOMETRIC_MARKER
    from overspec.world.general import MARKER

    _cores(monkeypatch, 2)
    made = []
    monkeypatch.setattr(schedule, "_produce_base_weights", lambda bases, cache: made.append([b.name for b in bases]))
    with stage_clock() as clock:
        beside = schedule.prepare_world(_world_config(tmp_path / "cache"), tmp_path / "beside")
    here = prepare(tmp_path / "here", 0)
    assert made == [["tiny-s", "tiny-m"]] and beside == tmp_path / "beside"
    markers = sorted(path.relative_to(here) for path in here.rglob(MARKER)) + \
        sorted(path.relative_to(here) for path in here.rglob(BIOMETRIC_MARKER))
    assert len(markers) >= 7  # six general datasets and the biometric world
    for marker in markers:  # each records its content hash
        assert (beside / marker).read_text() == (here / marker).read_text(), marker
    world = {row["stage"]: row for row in clock.table()}[schedule.WORLD_STAGE]
    assert world["count"] == 1 and world["cpu_s"] > 5.0  # the second process's CPU, booked when it was reaped
