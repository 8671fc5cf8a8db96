"""Fine-tuning that survives corrupt checkpoints, damaged outputs and two processes sharing one output folder."""

import json
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors import safe_open

from overspec.finetune import finetune
from overspec.finetune.run import TrainingData
from overspec.finetune.trainer import AttackValidator, checkpoint_problem, file_problem, file_record, latest_checkpoint
from overspec.models import ModelSpec
from tests.finetune._toy import attack_split, toy_config

STEPS, EVERY = 6, 2
OUTPUTS = ("model.yaml", "finetune.json", "adapter.safetensors", "head.safetensors")


def _config():
    return toy_config("madation", steps=STEPS, checkpoint_every=EVERY, **{"lora.dropout": 0.3})  # dropout: torch RNG


def _data() -> TrainingData:
    return TrainingData(attack_split(), AttackValidator(attack_split(12, seed=1, split="dev")), {}, "toy-attack")


def _spec(checkpoint: Path) -> ModelSpec:
    return ModelSpec(name="micro", architecture="micro-clip", weights=str(checkpoint))


def _run(spec: ModelSpec, out: Path) -> Path:
    return finetune(_config(), spec, _data(), out, cache_dir=out.parent / "cache")


def _record(out: Path) -> dict:
    return json.loads((out / "finetune.json").read_text())


@pytest.fixture(scope="module")
def weights(tmp_path_factory, micro_config_file) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "micro.pt"
    torch.save(open_clip.create_model("micro-clip", pretrained=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def straight(tmp_path_factory, weights) -> Path:
    """An uninterrupted run (checkpoints at steps 2, 4, 6): the result every recovery must reproduce."""
    out = tmp_path_factory.mktemp("straight") / "out"
    _run(_spec(weights), out)
    return out


def _safetensors_content(path: Path) -> tuple[dict, dict]:
    """Metadata and tensors (safetensors writes metadata keys in hash order, so bytes may differ between saves)."""
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}


def _assert_same_weights(out: Path, reference: Path) -> None:
    for name in ("adapter.safetensors", "head.safetensors"):
        meta, tensors = _safetensors_content(out / name)
        ref_meta, ref_tensors = _safetensors_content(reference / name)
        assert meta == ref_meta and tensors.keys() == ref_tensors.keys(), name
        assert all(torch.equal(tensors[k], ref_tensors[k]) for k in tensors), name


def _interrupted_copy(straight: Path, target: Path) -> Path:
    """``straight`` as a run killed during step 5: outputs and the step-6 checkpoint gone."""
    shutil.copytree(straight, target)
    for name in OUTPUTS:
        (target / name).unlink()
    shutil.rmtree(target / "checkpoints" / "step-0000006")
    return target


# ----------------------------------------------------------------------------- corrupt checkpoints


def _missing_file(folder: Path) -> None:
    (folder / "optimizer.safetensors").unlink()


def _missing_state(folder: Path) -> None:
    (folder / "state.json").unlink()


def _truncated(folder: Path) -> None:
    path = folder / "trainable.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _altered(folder: Path) -> None:
    path = folder / "rng.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, one tensor byte flipped
    path.write_bytes(bytes(data))


def _unreadable_json(folder: Path) -> None:
    (folder / "state.json").write_text('{"step": 4, "files": {')


def _broken_header(folder: Path) -> None:
    """Break the JSON header of a file and record the broken file's checksum (as a buggy writer would)."""
    path = folder / "trainable.safetensors"
    data = bytearray(path.read_bytes())
    data[8:9] = b"#"  # first byte of the header JSON
    path.write_bytes(bytes(data))
    state = json.loads((folder / "state.json").read_text())
    state["files"][path.name] = file_record(path)
    (folder / "state.json").write_text(json.dumps(state))


CORRUPTIONS = [(_missing_file, "optimizer.safetensors is missing"), (_missing_state, "state.json is missing"),
               (_truncated, "truncated"), (_altered, "sha256 (altered)"), (_unreadable_json, "unreadable state.json"),
               (_broken_header, "broken safetensors header")]


@pytest.mark.parametrize(("corrupt", "problem"), CORRUPTIONS, ids=[c.__name__.strip("_") for c, _ in CORRUPTIONS])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, weights, straight, corrupt, problem,
                                                                    caplog):
    out = _interrupted_copy(straight, tmp_path / "out")
    newest = out / "checkpoints" / "step-0000004"
    corrupt(newest)
    assert problem in checkpoint_problem(newest)
    with caplog.at_level(logging.WARNING, logger="overspec.finetune.trainer"):
        _run(_spec(weights), out)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(newest) in w and problem in w for w in warnings), warnings
    assert _record(out)["resumed_from"] == 2
    _assert_same_weights(out, straight)
    assert checkpoint_problem(newest) is None  # written again by the resumed run
    assert _record(out)["final_loss"] == _record(straight)["final_loss"]


def test_corrupt_checkpoints_are_removed_and_the_newest_valid_one_is_returned(tmp_path, straight):
    out = shutil.copytree(straight, tmp_path / "out")
    _altered(out / "checkpoints" / "step-0000006")
    _truncated(out / "checkpoints" / "step-0000004")
    (out / "checkpoints" / "step-0000005.123.tmp").mkdir()  # a killed writer's folder is never a candidate
    assert latest_checkpoint(out) == out / "checkpoints" / "step-0000002"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002", "step-0000005.123.tmp"]
    _missing_state(out / "checkpoints" / "step-0000002")
    assert latest_checkpoint(out) is None


def test_with_every_checkpoint_corrupt_training_restarts_from_scratch(tmp_path, weights, straight):
    out = _interrupted_copy(straight, tmp_path / "out")
    _altered(out / "checkpoints" / "step-0000002")
    _unreadable_json(out / "checkpoints" / "step-0000004")
    _run(_spec(weights), out)
    assert _record(out)["resumed_from"] == 0
    _assert_same_weights(out, straight)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, STEPS + 1))


def test_a_checkpoint_records_the_checksum_of_each_file(straight):
    folder = straight / "checkpoints" / "step-0000006"
    state = json.loads((folder / "state.json").read_text())
    assert sorted(state["files"]) == ["optimizer.safetensors", "rng.safetensors", "trainable.safetensors"]
    for name, record in state["files"].items():
        assert record == file_record(folder / name)
        assert file_problem(folder / name, record) is None


# ----------------------------------------------------------------------------- damaged final outputs


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("name", "keep_checkpoints"), [("adapter.safetensors", False), ("head.safetensors", True),
                                                       ("model.yaml", True)])
def test_a_damaged_output_is_retrained_to_the_identical_result(tmp_path, weights, straight, name, keep_checkpoints,
                                                               caplog):
    out = tmp_path / "out"
    _run(_spec(weights), out)
    original = tmp_path / "original"
    shutil.copytree(out, original)
    if not keep_checkpoints:
        shutil.rmtree(out / "checkpoints")
    _flip_last_byte(out / name)
    with caplog.at_level(logging.WARNING, logger="overspec.finetune.run"):
        assert _run(_spec(weights), out) == out / "model.yaml"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(name in w and "retraining" in w for w in warnings), warnings
    assert (out / "model.yaml").read_text() == (original / "model.yaml").read_text()
    _assert_same_weights(out, original)
    assert _record(out)["resumed_from"] == (STEPS if keep_checkpoints else 0)
    assert _record(out)["final_loss"] == _record(original)["final_loss"]
    for file, record in _record(out)["files"].items():
        assert file_problem(out / file, record) is None


def test_an_intact_result_is_reused_without_training(tmp_path, weights, monkeypatch):
    out = tmp_path / "out"
    _run(_spec(weights), out)
    record = _record(out)
    monkeypatch.setattr("overspec.finetune.run.Trainer.fit", _must_not_train)
    assert _run(_spec(weights), out) == out / "model.yaml"
    assert _record(out) == record


def _must_not_train(self, **kwargs):
    raise AssertionError("a verified result was retrained")


# ----------------------------------------------------------------------------- two processes, one folder


def _racer(index: int, barrier, config_file: str, weights: str, out: str) -> None:
    """Spawned worker: count calls to Trainer.fit, log the run module, then fine-tune into the shared ``out``."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    open_clip.add_model_config(Path(config_file))
    from overspec.finetune import run

    folder = Path(out).parent
    handler = logging.FileHandler(folder / f"log-{index}.txt")
    logging.getLogger("overspec.finetune.run").addHandler(handler)
    logging.getLogger("overspec.finetune.run").setLevel(logging.INFO)
    fit = run.Trainer.fit

    def counted_fit(self, **kwargs):
        with open(folder / "fits.txt", "a") as handle:
            handle.write(f"{index}\n")
        time.sleep(1.0)  # hold the lock long enough for the other process to reach it
        return fit(self, **kwargs)

    run.Trainer.fit = counted_fit
    barrier.wait(timeout=120)
    result = _run(_spec(Path(weights)), Path(out))
    (folder / f"result-{index}.txt").write_text(str(result))


def test_two_processes_fine_tuning_into_one_folder_train_once(tmp_path, micro_config_file, weights, straight):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    out = tmp_path / "out"
    workers = [context.Process(target=_racer, args=(i, barrier, str(micro_config_file), str(weights), str(out)))
               for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    for worker in workers:
        if worker.is_alive():
            worker.kill()
            worker.join()
    assert [w.exitcode for w in workers] == [0, 0]
    assert {(tmp_path / f"result-{i}.txt").read_text() for i in range(2)} == {str(out / "model.yaml")}
    assert len((tmp_path / "fits.txt").read_text().splitlines()) == 1
    logs = [(tmp_path / f"log-{i}.txt").read_text() for i in range(2)]
    assert any("waiting for it to finish" in log and "written by another process" in log for log in logs), logs
    for name, record in _record(out)["files"].items():
        assert file_problem(out / name, record) is None
    _assert_same_weights(out, straight)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, STEPS + 1))
    assert not [p.name for p in out.rglob("*.tmp")]


# ----------------------------------------------------------------------------- ranks of one torch.distributed job


def _ddp_rank(rank: int, init_file: str, config_file: str, weights: str, out: str) -> None:
    """Spawned gloo rank: train, lose the outputs and corrupt the newest checkpoint (rank 0), resume, reuse."""
    import torch.distributed as dist

    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        open_clip.add_model_config(Path(config_file))
        spec, out = _spec(Path(weights)), Path(out)
        first = _run(spec, out)
        if rank == 0:
            shutil.rmtree(out / "checkpoints" / "step-0000006")
            (out / "adapter.safetensors").unlink()
            _altered(out / "checkpoints" / "step-0000004")
        dist.barrier()
        resumed = _run(spec, out)
        reused = _run(spec, out)
        (out.parent / f"rank-{rank}.json").write_text(json.dumps([str(first), str(resumed), str(reused)]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_of_one_job_share_the_lock_of_rank_0_and_agree_on_checkpoints(tmp_path, micro_config_file, weights):
    context = multiprocessing.get_context("spawn")
    out = tmp_path / "out"
    ranks = [context.Process(target=_ddp_rank, args=(r, str(tmp_path / "init"), str(micro_config_file),
                                                      str(weights), str(out))) for r in range(2)]
    for rank in ranks:
        rank.start()
    for rank in ranks:
        rank.join(timeout=300)  # a rank blocked on the lock would deadlock the other in a collective
    for rank in ranks:
        if rank.is_alive():
            rank.kill()
            rank.join()
    assert [r.exitcode for r in ranks] == [0, 0]
    paths = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    assert paths[0] == paths[1] == [str(out / "model.yaml")] * 3
    assert _record(out)["resumed_from"] == 2
    for name, record in _record(out)["files"].items():
        assert file_problem(out / name, record) is None
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, STEPS + 1))
