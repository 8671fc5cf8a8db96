"""Each dataset's catalog main metric is honoured in the report's tables, averages, GELO and bootstrap (mean
per-class recall for FGVC Aircraft and Flowers102 in the study), with top-1 still shown beside it."""

import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from overspec.report.build import build_report
from overspec.report.rundata import load_run
from overspec.report.stats import _stack_per_sample, general_bootstrap
from overspec.report.tables import general_table
from overspec.results.records import Record, read_jsonl, write_jsonl
from tests.report.synthetic import make_run

MODELS = {"base": {}, "ft": {"base": "base", "specialisation": "fr"}}


@pytest.fixture
def run_dir(tmp_path):
    """A run whose 'flowers' dataset has mean per-class recall as main metric, computed here with scikit-learn."""
    accuracy = {"base": {"flowers": 0.8, "cifar": 0.7}, "ft": {"flowers": 0.6, "cifar": 0.65}}
    run_dir = make_run(tmp_path, "r", MODELS, accuracy)
    records = read_jsonl(run_dir / "results.jsonl")
    for model in MODELS:
        for dataset in ("flowers", "cifar"):
            arrays = np.load(run_dir / "predictions" / f"{model}__{dataset}__zero_shot.npz")
            recall = balanced_accuracy_score(arrays["label"], arrays["pred"])
            records.append(Record(run="r", model=model, model_fingerprint=f"fp-{model}", dataset=dataset, split="test",
                                  protocol="zero_shot", metric="mean_per_class_recall", value=float(recall), n=500,
                                  config_hash="cafe", split_fingerprint=f"sfp-{dataset}"))
    write_jsonl(run_dir / "results.jsonl", records)
    provenance = json.loads((run_dir / "provenance.json").read_text())
    provenance["main_metrics"] = {"flowers": "mean_per_class_recall", "cifar": "acc1"}
    (run_dir / "provenance.json").write_text(json.dumps(provenance))
    return run_dir


def _value(run, model, dataset, metric):
    return next(r.value for r in run.records if (r.model, r.dataset, r.metric) == (model, dataset, metric))


def test_tables_average_and_gelo_use_each_datasets_main_metric(run_dir):
    run = load_run(run_dir)
    table = general_table(run, "zero_shot", "main")
    assert table.metric == "main"
    main = {"flowers": "mean_per_class_recall", "cifar": "acc1"}
    expected = {m: [_value(run, m, d, main[d]) for d in table.datasets] for m in MODELS}
    assert sorted(table.datasets) == ["cifar", "flowers"]
    for model, values in expected.items():
        assert table.row(model) == pytest.approx(values)
    assert table.gelo("ft") == pytest.approx(np.mean(expected["ft"]) / np.mean(expected["base"]))
    top1 = general_table(run, "zero_shot", "acc1")
    assert top1.values[("ft", "flowers")] == _value(run, "ft", "flowers", "acc1")


def test_the_bootstrap_resamples_class_weighted_correctness_whose_mean_is_the_recall(run_dir):
    run = load_run(run_dir)
    stacked, reason = _stack_per_sample(run, list(MODELS), "flowers", "zero_shot", "mean_per_class_recall")
    assert reason == ""
    for row, model in zip(stacked, MODELS):
        assert row.mean() == pytest.approx(_value(run, model, "flowers", "mean_per_class_recall"), abs=1e-12)
    boot = general_bootstrap(run, "zero_shot", "main", models=list(MODELS), n_boot=50)
    assert set(boot.replicates) == {"flowers", "cifar"}


def test_a_collapsed_main_table_is_labelled_top_1_and_the_report_shows_both(run_dir, tmp_path):
    report = (build_report(run_dir) / "report.md").read_text()
    assert "zero shot (main metric: mean per-class recall where the catalog names it, else top-1)" in report
    assert "zero shot: acc1 (%)" in report and "zero shot: main (%)" in report
    plain = make_run(tmp_path / "plain", "p", MODELS, {"base": {"cifar": 0.7}, "ft": {"cifar": 0.6}})
    assert general_table(load_run(plain), "zero_shot", "main").metric == "acc1"
