"""General-vision units feed a variant its base's preprocessing, so a variant whose weights equal its base's shows
no general change whatever its own (biometric) preprocessing; a control run of the base under the variant's
preprocessing shows what that preprocessing alone costs, and every record names the preprocessing it used."""

import json

import numpy as np
import pytest

from overspec.config.model import ModelSpec, PreprocessSpec
from overspec.report.build import build_report
from overspec.runner import run_study
from tests.test_runner import _config

MADATION_LIKE = PreprocessSpec(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear",
                               resize_mode="squash", channel_order="BGR")
CONTROL = "micro~micro-mad-preprocess"


def _run(tmp_path, csv_dataset, checkpoint, config_file, **extra):
    data_root, entry = csv_dataset
    base = ModelSpec(name="micro", config_file=str(config_file), weights=str(checkpoint))
    variant = ModelSpec(name="micro-mad", config_file=str(config_file), weights=str(checkpoint),
                        preprocess=MADATION_LIKE, base="micro", specialisation="mad")
    config = _config(tmp_path, data_root, entry, checkpoint, config_file, **extra)
    config = type(config)(**{**{f: getattr(config, f) for f in config.__dataclass_fields__}, "models": (base, variant)})
    result = run_study(config)
    return config, {(r.model, r.protocol, r.metric): r for r in result.records}


def test_a_variant_with_the_base_weights_loses_nothing_on_general_data(tmp_path, csv_dataset, micro_checkpoint,
                                                                       micro_config_file):
    config, records = _run(tmp_path, csv_dataset, micro_checkpoint, micro_config_file)
    for protocol in ("zero_shot", "linear_probe"):
        for metric in ("acc1", "acc5", "mean_per_class_recall"):
            same = records[("micro", protocol, metric)].value
            assert records[("micro-mad", protocol, metric)].value == pytest.approx(same, abs=0, nan_ok=True)
        variant = records[("micro-mad", protocol, "acc1")].extra["preprocess"]
        assert variant["from"] == "base micro" and variant["channel_order"] == "RGB"
        control = records[(CONTROL, protocol, "acc1")].extra["preprocess"]
        assert control["from"] == "spec general_preprocess" and control["channel_order"] == "BGR"
        assert records[("micro", protocol, "acc1")].extra["preprocess"]["from"] == "own"
    report = (build_report(config.run_dir) / "report.md").read_text()
    assert "Preprocessing control" in report and "| micro-mad | zero_shot |" in report
    features = _cached_features(config.cache_path)
    for split in ("train", "test"):
        assert np.array_equal(features[("micro-mad", split)], features[("micro", split)])
        assert not np.allclose(features[(CONTROL, split)], features[("micro", split)])


def _cached_features(cache):
    """The image features the run stored, by (model, split), read from the store's files."""
    found = {}
    for header in (cache / "features").rglob("*.json"):
        meta = json.loads(header.read_text())
        if "split" in meta:
            found[(meta["model"], meta["split"])] = np.load(header.with_suffix(".npy"))
    return found


def test_own_preprocessing_is_one_switch_away_and_equals_the_control(tmp_path, csv_dataset, micro_checkpoint,
                                                                     micro_config_file):
    _, records = _run(tmp_path, csv_dataset, micro_checkpoint, micro_config_file, general_preprocessing="own")
    for protocol in ("zero_shot", "linear_probe"):
        own = records[("micro-mad", protocol, "acc1")]
        assert own.extra["preprocess"]["from"] == "own" and own.extra["preprocess"]["channel_order"] == "BGR"
        assert own.value == pytest.approx(records[(CONTROL, protocol, "acc1")].value, abs=0)


def test_controls_are_one_switch_away(tmp_path, csv_dataset, micro_checkpoint, micro_config_file):
    _, records = _run(tmp_path, csv_dataset, micro_checkpoint, micro_config_file, preprocessing_controls=False)
    assert {model for model, _, _ in records} == {"micro", "micro-mad"}
