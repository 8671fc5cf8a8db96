"""Fault injection and concurrency: studies killed with SIGKILL at random moments, or run two at a time on one
cache, end exactly like a clean run.

The study is the default pipeline (world generation, tiny-CLIP pretraining, three fine-tunes, evaluation, report)
at miniature sizes, run in subprocesses by ``_small_study.py``. Each kill comes a random delay (up to 1.5 s) after
the study has finished a randomly drawn amount of work, both from a seeded generator (``OVERSPEC_FAULT_SEED``
picks another draw). Result files must be equal byte for byte (``provenance.json`` and the report's
``made-from.json`` aside: they hold timings and input digests), fine-tuned adapters and pretrained weights tensor
for tensor.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors import safe_open

from overspec.features._files import read_array

DRIVER = Path(__file__).with_name("_small_study.py")
CONFIG = """\
name: default
models: [tiny-s]
world: true
data_root: data
datasets: [world-shapes, world-digits]
biometrics: [world-lfw, world-ijbc, world-mad, world-pad-OCI-to-M]
cache_dir: ../cache
output_dir: runs
progress: false
protocols: {linear_probe: {max_iter: 30, kshot: []}}
finetune:
  recipes: [froundation, madation, foundpad]
  profile: world
  overrides: ["steps=6", "checkpoint_every=2", "batch_size=8", "val_every=0"]
"""
# The run files that differ by design: provenance.json holds timings and which units were reused, and the report's
# made-from.json digests the provenance (cache paths included), so it differs whenever the provenance does.
BY_DESIGN = ("provenance.json", "made-from.json")
#: What records seconds (the cost table, per-unit compute time): it depends on the machine's company by nature.
#: report.md is compared without its cost section; report.html holds the same text.
TIMED = ("report.html", "cost.csv", "cost.tex")


def start_study(folder: Path) -> subprocess.Popen:
    """Start the miniature study in ``folder`` (world in ``folder/data``, cache in ``folder/../cache``), in its own
    process group."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.yaml").write_text(CONFIG)
    return subprocess.Popen([sys.executable, str(DRIVER), "study.yaml"], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(*processes: subprocess.Popen) -> None:
    """Wait for ``processes`` and check that each one succeeded."""
    for process in processes:
        _, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-3000:]


def kill_after(process: subprocess.Popen, folder: Path, target: int, delay: float) -> bool:
    """SIGKILL ``process`` and its children ``delay`` seconds after ``folder`` holds ``target`` finished pieces of
    work (see :func:`finished_work`); return whether it was still running then."""
    while finished_work(folder) < target and process.poll() is None:
        time.sleep(0.05)
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return True


def finished_work(folder: Path) -> int:
    """Pieces of work a study in ``folder`` has finished: pretrained models, fine-tune checkpoints and results,
    evaluation units. Kills are placed by this count, so they spread over the stages at any machine speed."""
    cache = folder.parent / "cache"
    return sum(len(list(root.glob(pattern))) for root, pattern in (
        (cache, "world-models/tiny-clips/*/*/training.json"), (cache, "finetune/*/*/checkpoints/step-*"),
        (cache, "finetune/*/*/finetune.json"), (folder / "runs" / "default", "units/*.json")))


def produced_files(folder: Path) -> dict[str, object]:
    """What a study in ``folder`` leaves that must not depend on kills or company: run outputs, adapters, weights."""
    cache = folder.parent / "cache"
    run = folder / "runs" / "default"
    files = {f"run/{p.relative_to(run)}": p for p in run.rglob("*")
             if p.is_file() and p.name not in BY_DESIGN + TIMED and p.parent.name != "timings"}
    files.update({f"cache/{p.relative_to(cache)}": p for pattern in (
        "finetune/*/*/*.safetensors", "finetune/*/*/model.yaml", "world-models/tiny-clips/*/*/*.safetensors")
        for p in cache.glob(pattern)})
    return {name: comparable_content(path, cache) for name, path in files.items()}


def comparable_content(path: Path, cache: Path) -> object:
    """A file's bytes; for safetensors its tensors and metadata (the writer orders metadata keys at random), and
    for model.yaml its text with the cache folder replaced (it names its adapter by absolute path)."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata(), {k: handle.get_tensor(k).numpy().tobytes() for k in sorted(handle.keys())}
    if path.name == "model.yaml":
        return path.read_text().replace(str(cache), "<cache>")
    if path.name == "report.md":
        return re.sub(r"\n## Cost\n.*?(?=\n## |\Z)", "", path.read_text(), flags=re.S)
    return path.read_bytes()


def stage_reached(folder: Path) -> str:
    """Which stage a killed study was in, judged from what it had finished (for the failure message)."""
    cache = folder.parent / "cache"
    if len(list(cache.glob("world-models/tiny-clips/*/*/training.json"))) < 2:
        return "world/pretraining"
    if len(list(cache.glob("finetune/*/*/finetune.json"))) < 3:
        return "fine-tuning"
    return f"evaluation ({len(list((folder / 'runs' / 'default' / 'units').glob('*.json')))} units done)"


def litter(folder: Path) -> list[str]:
    """Temporary files or folders left behind under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


def test_two_studies_on_one_cache_then_sigkills_and_resume_all_match(tmp_path: Path) -> None:
    pair = [start_study(tmp_path / "shared" / name) for name in ("a", "b")]
    finish(*pair)
    first, second = (produced_files(tmp_path / "shared" / name) for name in ("a", "b"))
    assert sum(name.endswith("adapter.safetensors") for name in first) == 3
    assert first.keys() == second.keys() and [k for k in first if first[k] != second[k]] == []
    for entry in (tmp_path / "shared" / "cache" / "features").rglob("*.npy"):
        read_array(entry)  # raises if a concurrent write left a corrupt entry
    assert litter(tmp_path / "shared") == []
    assert not (tmp_path / "shared" / "cache" / "world-data").exists()  # fine-tunes used data/, tiny CLIPs their own
    assert (tmp_path / "shared" / "cache" / "world-models" / "world").is_dir()

    rng = random.Random(int(os.environ.get("OVERSPEC_FAULT_SEED", "20261124")))
    study = tmp_path / "solo" / "a"
    total = finished_work(tmp_path / "shared" / "a")
    targets = sorted(rng.sample(range(total - 2), 4))  # 0 = during start-up, world generation or pretraining
    kills = []
    for target in targets:
        delay = rng.uniform(0.0, 1.5)
        if kill_after(start_study(study), study, target, delay):
            kills.append((target, round(delay, 2), stage_reached(study)))
    finish(start_study(study))
    print(f"kills (pieces of work done of {total}, delay, stage reached):", kills)
    assert len(kills) >= 3, f"only {len(kills)} kills landed before the study finished: {kills}"
    faulted = produced_files(study)
    assert sorted(faulted) == sorted(first), sorted(set(faulted) ^ set(first))
    differing = [name for name in first if faulted[name] != first[name]]
    assert not differing, f"kills at {kills} (work done, delay, stage) changed {differing[:10]}"
    assert litter(study / "runs") == []
