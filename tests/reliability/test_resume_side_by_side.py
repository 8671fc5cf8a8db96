"""A run whose models are evaluated side by side, killed with SIGKILL (workers and all) while they work, resumes
with only the missing units and ends with the unit files of a run never killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

MODELS = 4


def _write_config(folder: Path, data_root: Path, entry: Path, checkpoint: Path, config_file: Path) -> Path:
    """Four micro models (the checkpoint perturbed per model) on the colours dataset, one torch thread each."""
    state = torch.load(checkpoint, weights_only=True)
    models = []
    for i in range(MODELS):
        generator = torch.Generator().manual_seed(i)
        weights = folder / f"m{i}.pt"
        torch.save({k: v + 0.05 * torch.randn(v.shape, generator=generator) if k.startswith("visual.")
                    and v.is_floating_point() else v for k, v in state.items()}, weights)
        models.append({"name": f"m{i}", "config_file": str(config_file), "weights": str(weights)})
    config = {"name": "t", "models": models, "datasets": ["test-colours"], "dataset_files": [str(entry)],
              "data_root": str(data_root), "output_dir": str(folder / "runs"), "cache_dir": str(folder / "cache"),
              "progress": False, "threads": 1}
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


#: ``overspec run CONFIG`` on a machine that says it has two cores, whatever this one has.
_DRIVER = ("import os, sys; os.cpu_count = lambda: 2; from overspec.cli.main import main; "
           "sys.exit(main(['run', sys.argv[1], '--no-report']))")


def _run(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _DRIVER, str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _units(folder: Path) -> dict[str, dict]:
    """Each unit file's key and records (the config hash aside: it names the run's folders)."""
    out = {}
    for path in sorted((folder / "runs" / "t" / "units").glob("*.json")):
        stored = json.loads(path.read_text())
        out[path.name] = (stored["unit_key"], [{**r, "config_hash": ""} for r in stored["records"]])
    return out


def test_a_run_killed_while_its_models_are_evaluated_side_by_side_resumes_to_the_same_units(
        tmp_path, csv_dataset, micro_checkpoint, micro_config_file):
    data_root, entry = csv_dataset
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    for folder in (clean, killed):
        folder.mkdir()
    clean_run = _run(_write_config(clean, data_root, entry, micro_checkpoint, micro_config_file))
    assert clean_run.wait(timeout=600) == 0, clean_run.stderr.read()[-3000:]
    expected = _units(clean)
    assert len(expected) == 2 * MODELS  # zero-shot and linear probe per model
    timings = json.loads((clean / "runs" / "t" / "provenance.json").read_text())["timings"]
    assert {row["stage"] for row in timings["stages"]} >= {"evaluate (2 processes)"}  # side by side indeed

    config = _write_config(killed, data_root, entry, micro_checkpoint, micro_config_file)
    process = _run(config)
    units = killed / "runs" / "t" / "units"
    while process.poll() is None and len(list(units.glob("*.json"))) < 1:
        time.sleep(0.01)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    left = len(list(units.glob("*.json")))
    assert 1 <= left < len(expected), f"the kill came after {left} of {len(expected)} units"
    resumed = _run(config)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert _units(killed) == expected
    assert not [p for p in killed.rglob("*") if ".tmp" in p.name]
