"""A dataset without an official split is scored zero-shot on every image (CLIP_benchmark's SUN397), while the probe
keeps the train / test parts carved from it; one setting switches zero-shot back to the carved test part."""

import numpy as np
from PIL import Image

from overspec.config.model import ModelSpec
from overspec.config.run import RunConfig
from overspec.runner import run_study

COLOURS = ((220, 30, 30), (30, 200, 40), (30, 40, 220))


def _carved_dataset(tmp_path):
    """An image-folder dataset of 3 x 8 images with a carved 50 / 50 split and an ``all`` role."""
    rng = np.random.default_rng(0)
    for label, colour in enumerate(COLOURS):
        for k in range(8):
            pixels = np.clip(np.asarray(colour) + rng.normal(0, 25, (20, 20, 3)), 0, 255).astype(np.uint8)
            path = tmp_path / "data" / "scenes" / f"c{label}" / f"{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    entry = tmp_path / "scenes.yaml"
    entry.write_text("name: scenes\nformat: imagefolder\nroot: scenes\nsplits: {train: train, test: test, all: all}\n"
                     "classnames: loader\ntemplates: cifar10\nlayout: '<class>/*.png'\n"
                     "options: {carve_split: {test_fraction: 0.5, seed: 0}}\n")
    return entry


def _records(tmp_path, checkpoint, config_file, **protocols):
    entry = _carved_dataset(tmp_path)
    config = RunConfig(name="w", models=(ModelSpec(name="micro", config_file=str(config_file), weights=str(checkpoint)),),
                       datasets=("scenes",), dataset_files=(str(entry),), data_root=str(tmp_path / "data"),
                       output_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), progress=False,
                       protocols=protocols)
    return {(r.protocol, r.metric): r for r in run_study(config).records}


def test_zero_shot_scores_every_image_and_the_probe_the_carved_test_part(tmp_path, micro_checkpoint, micro_config_file):
    records = _records(tmp_path, micro_checkpoint, micro_config_file)
    assert records[("zero_shot", "acc1")].split == "all" and records[("zero_shot", "acc1")].n == 24
    assert records[("linear_probe", "acc1")].split == "test" and records[("linear_probe", "acc1")].n == 12


def test_the_carved_test_part_is_one_switch_away(tmp_path, micro_checkpoint, micro_config_file):
    records = _records(tmp_path, micro_checkpoint, micro_config_file, zero_shot={"whole_set": False})
    assert records[("zero_shot", "acc1")].split == "test" and records[("zero_shot", "acc1")].n == 12
