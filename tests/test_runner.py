import dataclasses
import json

import numpy as np
import pytest

from overspec.config.run import RunConfig
from overspec.config.model import ModelSpec
from overspec.errors import InputError
from overspec.results import read_jsonl
from overspec.runner import run_study


def _config(tmp_path, data_root, entry, checkpoint, config_file, **extra):
    models = (ModelSpec(name="micro", config_file=str(config_file), weights=str(checkpoint)),
              ModelSpec(name="micro-img", config_file=str(config_file), weights=str(checkpoint), text=False))
    return RunConfig(name="t", models=models, datasets=("test-colours",), dataset_files=(str(entry),),
                     data_root=str(data_root), output_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"),
                     progress=False, **extra)


def test_run_writes_tidy_results_and_resumes(tmp_path, csv_dataset, micro_checkpoint, micro_config_file):
    data_root, entry = csv_dataset
    config = _config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file)
    first = run_study(config)
    assert sorted(first.computed) == ["micro-img__test-colours__linear_probe", "micro__test-colours__linear_probe",
                                      "micro__test-colours__zero_shot"]
    assert first.skipped == [("micro-img__test-colours__zero_shot",
                              "micro-img is image-only (no text tower): zero-shot not applicable")]
    run_dir = tmp_path / "runs" / "t"
    records = read_jsonl(run_dir / "results.jsonl")
    assert len(records) == 3 * 3
    assert {(r.model, r.protocol, r.metric) for r in records} >= {("micro", "zero_shot", "acc1"),
                                                                  ("micro-img", "linear_probe", "mean_per_class_recall")}
    assert all(r.n == 15 and r.config_hash == records[0].config_hash for r in records)
    probe = next(r for r in records if r.protocol == "linear_probe" and r.metric == "acc1" and r.model == "micro")
    assert probe.value > 0.6 and "C" in probe.extra
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["versions"]["torch"].startswith("2.14.1")
    assert provenance["model_fingerprints"]["micro"] == probe.model_fingerprint
    stages = {row["stage"]: row for row in provenance["timings"]["stages"]}
    assert {"load models", "features micro", "zero-shot text classifiers",
            "protocol linear_probe", "protocol zero_shot", "write results", "other"} <= set(stages)
    assert stages["protocol linear_probe"]["count"] == 2  # micro and micro-img, whose image features are the same
    assert stages["features micro"]["count"] == 2 and "features micro-img" not in stages  # train and test, once
    assert first.stages.table()[0]["cpu_s"] >= first.stages.table()[-1]["cpu_s"]
    assert (run_dir / "results.csv").read_text().splitlines()[0].startswith("run,model,model_fingerprint")
    assert "| micro |" in (run_dir / "summary.md").read_text()
    predictions = np.load(run_dir / "predictions" / "micro__test-colours__zero_shot.npz")
    assert predictions["correct"].shape == (15,) and predictions["label"].tolist() == [i % 3 for i in range(15)]

    second = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    assert second.computed == [] and len(second.reused) == 3
    np.testing.assert_array_equal([r.value for r in second.records], [r.value for r in first.records])

    (run_dir / "units" / "micro__test-colours__linear_probe.json").unlink()
    third = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    assert third.computed == ["micro__test-colours__linear_probe"]
    np.testing.assert_array_equal([r.value for r in third.records], [r.value for r in first.records])


def test_changed_probe_setting_recomputes_only_probe_units(tmp_path, csv_dataset, micro_checkpoint,
                                                           micro_config_file):
    data_root, entry = csv_dataset
    run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    again = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file,
                              protocols={"linear_probe": {"val_fraction": 0.3}}))
    assert sorted(again.computed) == ["micro-img__test-colours__linear_probe", "micro__test-colours__linear_probe"]
    assert again.reused == ["micro__test-colours__zero_shot"]


def _result_bytes(run_dir):
    """Every file of a run but what records time (provenance, per-unit seconds): what it computed, not how fast."""
    return {p.name: p.read_bytes() for p in run_dir.rglob("*")
            if p.is_file() and p.name != "provenance.json" and p.parent.name != "timings"}


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _alter_value(path):
    stored = json.loads(path.read_text())
    stored["records"][0]["value"] = 0.123  # still valid JSON: only the checksum can tell
    path.write_text(json.dumps(stored))


def _flip_prediction(path):
    data = bytearray(path.read_bytes())
    data[-200] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "target"), [(_truncate, "units"), (_alter_value, "units"),
                                                (_flip_prediction, "predictions")])
def test_damaged_unit_files_are_reported_and_recomputed(tmp_path, csv_dataset, micro_checkpoint, micro_config_file,
                                                        caplog, damage, target):
    data_root, entry = csv_dataset
    first = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    run_dir = tmp_path / "runs" / "t"
    originals = _result_bytes(run_dir)
    suffix = ".json" if target == "units" else ".npz"
    damaged = run_dir / target / f"micro__test-colours__zero_shot{suffix}"
    damage(damaged)
    again = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    assert again.computed == ["micro__test-colours__zero_shot"] and str(damaged) in caplog.text
    assert _result_bytes(run_dir) == originals
    np.testing.assert_array_equal([r.value for r in again.records], [r.value for r in first.records])


def _refuse_loading(monkeypatch):
    """Make any model load in the runner fail, to prove a run needed none."""
    def refuse(spec, **kwargs):
        raise AssertionError(f"model {spec.name} was loaded")

    monkeypatch.setattr("overspec.evaluation.load_model", refuse)


def test_a_run_with_nothing_left_to_do_loads_no_model(tmp_path, csv_dataset, micro_checkpoint, micro_config_file,
                                                     monkeypatch):
    data_root, entry = csv_dataset
    first = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    run_dir = tmp_path / "runs" / "t"
    outputs = {name: (run_dir / name).read_bytes() for name in ("results.jsonl", "results.csv", "summary.md")}
    parameters = json.loads((run_dir / "provenance.json").read_text())["models"]["micro"]["parameters"]
    with monkeypatch.context() as patched:
        _refuse_loading(patched)
        second = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    assert second.computed == [] and sorted(second.reused) == sorted(first.computed)
    assert {name: (run_dir / name).read_bytes() for name in outputs} == outputs
    assert json.loads((run_dir / "provenance.json").read_text())["models"]["micro"]["parameters"] == parameters > 0


def test_changed_weights_bytes_are_loaded_and_recomputed(tmp_path, csv_dataset, micro_checkpoint, micro_config_file,
                                                        monkeypatch):
    import torch

    data_root, entry = csv_dataset
    run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    state = torch.load(micro_checkpoint, weights_only=True)
    state["visual.proj"] = state["visual.proj"] * 1.5  # same file name, size and spec; other weights
    torch.save(state, micro_checkpoint)
    again = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    assert sorted(again.computed) == ["micro-img__test-colours__linear_probe", "micro__test-colours__linear_probe",
                                      "micro__test-colours__zero_shot"]


def test_damaged_model_facts_are_reported_and_the_model_loaded(tmp_path, csv_dataset, micro_checkpoint,
                                                              micro_config_file, caplog):
    data_root, entry = csv_dataset
    run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    facts = sorted((tmp_path / "cache" / "model-facts").rglob("*.json"))
    assert len(facts) == 2  # micro and micro-img
    for path in facts:
        stored = json.loads(path.read_text())
        stored["facts"]["fingerprint"] = "0" * 32  # would key every unit wrongly, were it believed
        path.write_text(json.dumps(stored))
    again = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    assert again.computed == [] and len(again.reused) == 3
    assert "unusable model facts (checksum mismatch)" in caplog.text


def test_progress_bars_leave_no_carriage_returns_in_a_log(tmp_path, csv_dataset, micro_checkpoint, micro_config_file,
                                                          capsys):
    data_root, entry = csv_dataset
    config = _config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file)
    run_study(type(config)(**{**{f: getattr(config, f) for f in config.__dataclass_fields__}, "progress": True}))
    captured = capsys.readouterr()
    for stream in (captured.out, captured.err):
        assert "\r" not in stream and "\x1b[" not in stream


def test_a_weight_space_combination_is_evaluated_like_any_model(tmp_path, csv_dataset, micro_checkpoint,
                                                               micro_config_file):
    """A combination naming another model of the run is resolved, evaluated and cached under its own fingerprint;
    at scale 0 its weights and numbers are the base's."""
    import torch

    from overspec.config.model import CombineTerm

    data_root, entry = csv_dataset
    state = torch.load(micro_checkpoint, weights_only=True)
    tuned = {k: v + 0.05 * torch.randn_like(v) if k.startswith("visual.") and v.is_floating_point() else v
             for k, v in state.items()}
    torch.save(tuned, tmp_path / "tuned.pt")
    base = ModelSpec(name="micro", config_file=str(micro_config_file), weights=str(micro_checkpoint))
    models = (base, ModelSpec(name="tuned", config_file=str(micro_config_file), weights=str(tmp_path / "tuned.pt"),
                              base="micro", specialisation="fr"),
              ModelSpec(name="tuned@0", config_file=str(micro_config_file), weights=str(micro_checkpoint),
                        base="micro", specialisation="fr", combine=(CombineTerm("tuned", 0.0),)),
              ModelSpec(name="tuned@0.5", config_file=str(micro_config_file), weights=str(micro_checkpoint),
                        base="micro", specialisation="fr", combine=(CombineTerm("tuned", 0.5),)))
    config = RunConfig(name="c", models=models, datasets=("test-colours",), dataset_files=(str(entry),),
                       data_root=str(data_root), output_dir=str(tmp_path / "runs"),
                       cache_dir=str(tmp_path / "cache"), progress=False)
    result = run_study(config)
    fingerprints = json.loads((tmp_path / "runs" / "c" / "provenance.json").read_text())["model_fingerprints"]
    assert fingerprints["tuned@0"] == fingerprints["micro"]
    assert len({fingerprints[m] for m in ("micro", "tuned", "tuned@0.5")}) == 3
    value = {(r.model, r.protocol, r.metric): r.value for r in result.records}
    assert value[("tuned@0", "zero_shot", "acc1")] == value[("micro", "zero_shot", "acc1")]
    assert ("tuned@0.5", "linear_probe", "acc1") in value

    unknown = dataclasses.replace(config, models=(base, dataclasses.replace(models[3], combine=(
        CombineTerm("nowhere", 0.5),))))
    with pytest.raises(InputError, match="combine term 'nowhere' is neither a model of this run"):
        run_study(unknown)


def test_threads_hold_for_the_run_and_are_given_back(tmp_path, csv_dataset, micro_checkpoint, micro_config_file,
                                                      monkeypatch):
    import torch

    import overspec.evaluation as evaluation
    from overspec.config.run import default_config

    monkeypatch.setattr("os.cpu_count", lambda: 1)  # the run's own process computes every unit
    seen = []
    real = evaluation.compute_unit
    monkeypatch.setattr(evaluation, "compute_unit", lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    data_root, entry = csv_dataset
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file, threads=1))
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert default_config().threads == 1 and RunConfig().threads == 0
    with pytest.raises(ValueError, match="threads"):
        RunConfig(threads=-1)


def test_costs_survive_unit_reuse(tmp_path, csv_dataset, micro_checkpoint, micro_config_file):
    data_root, entry = csv_dataset
    first = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    provenance_path = tmp_path / "runs" / "t" / "provenance.json"
    costs = json.loads(provenance_path.read_text())["costs"]
    assert set(costs) == {s.name for s in first.models} and costs["micro"]["kind"] == "base"
    assert sum(c["eval_units"] for c in costs.values()) == len(first.computed) > 0
    assert sum(c["eval_seconds"] for c in costs.values()) == pytest.approx(sum(first.unit_seconds.values()), abs=1e-2)
    again = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    assert again.computed == [] and json.loads(provenance_path.read_text())["costs"] == costs


def test_a_run_copies_the_units_another_run_finished_under_the_same_key(tmp_path, csv_dataset, micro_checkpoint,
                                                                        micro_config_file):
    data_root, entry = csv_dataset
    first = run_study(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file))
    other = dataclasses.replace(_config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file), name="u")
    second = run_study(other, reuse_from=(first.run_dir,))
    assert second.computed == [] and sorted(second.reused) == sorted(first.computed)
    for slug in first.computed:  # the run holds the units itself, byte for byte
        for folder, suffix in (("units", ".json"), ("timings", ".json")):
            assert (second.run_dir / folder / f"{slug}{suffix}").read_bytes() == \
                (first.run_dir / folder / f"{slug}{suffix}").read_bytes()
    assert (second.run_dir / "predictions" / "micro__test-colours__zero_shot.npz").is_file()
    assert {r.run for r in second.records} == {"u"}
    np.testing.assert_array_equal([r.value for r in second.records], [r.value for r in first.records])
    reseeded = dataclasses.replace(other, name="v", seed=1)  # another key: nothing to copy
    assert sorted(run_study(reseeded, reuse_from=(first.run_dir,)).computed) == sorted(first.computed)


def test_models_evaluated_side_by_side_give_the_units_one_process_gives(tmp_path, csv_dataset, micro_checkpoint,
                                                                       micro_config_file, monkeypatch):
    import os

    from overspec import workers

    data_root, entry = csv_dataset
    pools = []
    real_pool = workers.ProcessPoolExecutor
    monkeypatch.setattr(workers, "ProcessPoolExecutor", lambda *a, **k: pools.append(a) or real_pool(*a, **k))
    runs = {}
    for cores in (1, 2):
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        config = dataclasses.replace(_config(tmp_path / str(cores), data_root, entry, micro_checkpoint,
                                             micro_config_file, threads=1), name="t")
        runs[cores] = run_study(config)
    assert pools == [(2,)]  # one pool, for the two-core run
    one, two = runs[1], runs[2]
    assert sorted(two.computed) == sorted(one.computed) and two.reused == []
    assert set(two.unit_seconds) == set(two.computed)
    stages = {row["stage"]: row for row in two.stages.table()}
    assert stages["evaluate (2 processes)"]["count"] == 1 and "protocol linear_probe" not in stages
    timings = json.loads((two.run_dir / "provenance.json").read_text())["timings"]
    in_workers = {row["stage"]: row for row in timings["worker_stages"]}
    assert in_workers["protocol linear_probe"]["count"] == 2 and in_workers["protocol zero_shot"]["count"] == 1
    assert "worker_stages" not in json.loads((one.run_dir / "provenance.json").read_text())["timings"]
    for slug in one.computed:
        mine, theirs = (json.loads((run.run_dir / "units" / f"{slug}.json").read_text()) for run in (one, two))
        assert mine["unit_key"] == theirs["unit_key"] and mine["predictions_sha256"] == theirs["predictions_sha256"]
        assert [{**r, "config_hash": ""} for r in mine["records"]] == \
            [{**r, "config_hash": ""} for r in theirs["records"]]
    again = run_study(config)  # everything stored: no pool, nothing computed
    assert pools == [(2,)] and again.computed == []
