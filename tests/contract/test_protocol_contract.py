"""A protocol is one registered entry: a toy protocol defined here, and registered from here only, is planned,
keyed by its settings, run on typed inputs and reported, with no other file of the package touched."""

from dataclasses import dataclass

import numpy as np
import pytest

from overspec.protocols.base import (GENERAL, PROTOCOLS, Needs, Protocol, ReportSection, UnitOutput, UnitPlan,
                                     ordered_protocols, settings_dict)
from overspec.protocols.inputs import ClassificationInputs
from overspec.report.build import build_report
from overspec.report.summary import summary_markdown
from overspec.results import read_jsonl
from overspec.runner import plan_study, run_study
from tests.test_runner import _config

NAME = "toy_centroid"


@dataclass(frozen=True)
class CentroidSettings:
    enabled: bool = True
    distance: str = "cosine"


class NearestCentroid(Protocol):
    """Nearest class centroid of the training features, by cosine or Euclidean distance."""

    name = NAME
    targets = (GENERAL,)
    settings_type = CentroidSettings
    report = ReportSection("nearest centroid")
    calls: list[ClassificationInputs] = []

    def units(self, settings, target):
        return [UnitPlan(NAME, Needs(train_split=True, task="linear_probe"), settings_dict(settings), "centroid")]

    def run(self, unit, inputs, settings):
        type(self).calls.append(inputs)
        predicted = centroid_predictions(inputs.train.x, inputs.train.labels, inputs.test.x, settings.distance)
        accuracy = float(np.mean(predicted == inputs.test.labels))
        row = {"split": inputs.test.split.split, "metric": "acc1", "value": accuracy, "n": len(inputs.test.index),
               "split_fingerprint": inputs.test.split.fingerprint, "extra": {"distance": settings.distance}}
        return UnitOutput([row], {"label": inputs.test.labels, "pred": predicted,
                                  "correct": predicted == inputs.test.labels, "index": inputs.test.index})


def centroid_predictions(train_x, train_y, test_x, distance):
    """Independent of overspec: the class whose mean training feature is nearest."""
    classes = np.unique(train_y)
    centroids = np.stack([train_x[train_y == c].mean(0) for c in classes])
    if distance == "cosine":
        unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
        return classes[np.argmax(unit(test_x) @ unit(centroids).T, axis=1)]
    return classes[np.argmin(((test_x[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)]


@pytest.fixture
def toy_protocol():
    NearestCentroid.calls = []
    PROTOCOLS.register(NAME, NearestCentroid())
    yield PROTOCOLS.get(NAME)
    PROTOCOLS.unregister(NAME)


def test_a_registered_protocol_is_planned_keyed_run_and_reported(tmp_path, csv_dataset, micro_checkpoint,
                                                                  micro_config_file, toy_protocol):
    data_root, entry = csv_dataset
    config = _config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file)
    assert toy_protocol in ordered_protocols()
    text, problems = plan_study(config)
    assert problems == [] and "2 models x (3 general + 0 biometric)" in text

    first = run_study(config)
    assert sorted(u for u in first.computed if NAME in u) == [f"micro-img__test-colours__{NAME}",
                                                              f"micro__test-colours__{NAME}"]
    records = {(r.model, r.protocol): r for r in read_jsonl(config.run_dir / "results.jsonl")}
    for call, model in zip(NearestCentroid.calls, ("micro", "micro-img"), strict=True):
        expected = np.mean(centroid_predictions(call.train.x, call.train.labels, call.test.x, "cosine")
                           == call.test.labels)
        assert call.train.x.shape[0] == 30 and call.test.x.shape[0] == 15 and call.classifier is None
        assert records[(model, NAME)].value == pytest.approx(expected) and records[(model, NAME)].n == 15

    summary = (config.run_dir / "summary.md").read_text()
    assert "## toy centroid — top-1 accuracy (%)" in summary
    report = (build_report(config.run_dir) / "report.md").read_text()
    assert "toy centroid (top-1 accuracy)" in report

    changed = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file,
                                protocols={NAME: {"distance": "euclidean"}}))
    assert sorted(changed.computed) == [f"micro-img__test-colours__{NAME}", f"micro__test-colours__{NAME}"]
    assert len(changed.reused) == 3

    off = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file,
                            protocols={NAME: {"enabled": False}}))
    assert off.computed == [] and not any(NAME in u for u in off.reused)


def test_records_of_a_protocol_nobody_registered_are_named_not_dropped(tmp_path, csv_dataset,
                                                                       micro_checkpoint, micro_config_file,
                                                                       toy_protocol):
    data_root, entry = csv_dataset
    config = _config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file)
    records = run_study(config).records
    PROTOCOLS.unregister(NAME)
    try:
        summary = summary_markdown(records, ["micro", "micro-img"], ["test-colours"])
        assert f"- `{NAME}`: no registered protocol reports it" in summary
        assert f"no registered protocol reports {NAME}" in (build_report(config.run_dir) / "report.md").read_text()
    finally:
        PROTOCOLS.register(NAME, NearestCentroid())


def test_every_registered_protocol_declares_what_the_runner_needs():
    for protocol in ordered_protocols():
        settings = protocol.settings_type()
        assert protocol.targets and isinstance(protocol.report, ReportSection)
        for target in protocol.targets:
            plans = protocol.units(settings, target)
            assert plans, (protocol.name, target)
            for plan in plans:
                assert protocol.owns(plan.name) and plan.label, plan
                assert isinstance(plan.needs, Needs)
                if target != GENERAL:
                    assert protocol.headline(plan.name) is not None, plan.name
