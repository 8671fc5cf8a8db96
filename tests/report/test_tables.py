"""GELO, averages and the biometric table against the study's published numbers and hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from overspec.report.rundata import load_run
from overspec.report.tables import attack_set_tables, biometric_table, gelo, general_protocols, general_table, mean_of
from overspec.results.records import Record

from .synthetic import make_run

DATASETS = ["Food101", "CIFAR10", "CIFAR100", "SUN397", "Cars", "FGVC", "DTD", "MNIST", "Flowers102", "STL10",
            "GTSRB", "Country211", "SST2", "ImageNet-v2"]
# study.md §1.5 Table A, zero-shot accuracy (%): CLIP ViT-B/16 and FRoundation ViT-B/16
CLIP_B16 = [88.22, 90.80, 68.22, 63.75, 64.71, 24.33, 45.64, 51.79, 69.96, 98.25, 43.33, 22.22, 60.52, 61.93]
FROUNDATION_B16 = [57.50, 72.61, 39.16, 47.34, 29.27, 9.12, 32.13, 51.63, 29.05, 89.50, 23.70, 10.40, 57.88, 38.41]


def _record(model: str, dataset: str, value: float, protocol: str = "zero_shot", metric: str = "acc1",
            extra: dict | None = None) -> Record:
    return Record(run="study", model=model, model_fingerprint="fp", dataset=dataset, split="test", protocol=protocol,
                  metric=metric, value=value, n=100, config_hash="h", extra=extra or {})


@pytest.fixture()
def study_run(tmp_path):
    records = [_record("clip-b16", d, v / 100) for d, v in zip(DATASETS, CLIP_B16)]
    records += [_record("froundation-b16", d, v / 100) for d, v in zip(DATASETS, FROUNDATION_B16)]
    models = {"clip-b16": {}, "froundation-b16": {"base": "clip-b16", "specialisation": "fr"}}
    return load_run(make_run(tmp_path, "study", models, {}, extra_records=records, predictions=False))


def test_gelo_reproduces_the_studys_worked_example(study_run):
    table = general_table(study_run, "zero_shot")
    assert table.datasets == DATASETS
    assert 100 * table.average("froundation-b16") == pytest.approx(41.979, abs=5e-4)
    assert 100 * table.average("clip-b16") == pytest.approx(60.98, abs=0.01)
    assert table.gelo("froundation-b16") == pytest.approx(0.688, abs=5e-4)
    assert table.variants() == ["froundation-b16"]
    assert 100 * table.delta("froundation-b16", "Food101") == pytest.approx(57.50 - 88.22)


def test_average_uses_unrounded_values_and_gelo_is_a_ratio_of_means():
    values = [0.123456, 0.654321, 0.5]
    assert mean_of(values) == pytest.approx(sum(values) / 3, abs=1e-15)
    # average of ratios would be (0.5/1 + 0.5/0.25)/2 = 1.25; the ratio of means is 0.5/0.625 = 0.8
    assert gelo([0.5, 0.5], [1.0, 0.25]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="same datasets"):
        gelo([0.5], [0.5, 0.6])
    with pytest.raises(ValueError, match="base average is 0"):
        gelo([0.5], [0.0])


def test_average_is_not_recomputed_from_rounded_cells(tmp_path):
    records = [_record("a", "x", 0.12344), _record("a", "y", 0.12344), _record("a", "z", 0.12344)]
    run = load_run(make_run(tmp_path, "r", {"a": {}}, {}, extra_records=records, predictions=False))
    assert general_table(run, "zero_shot").average("a") == pytest.approx(0.12344, abs=1e-12)


def test_datasets_missing_for_a_model_are_excluded_and_reported(tmp_path):
    records = [_record("base", "x", 0.8), _record("base", "y", 0.6), _record("ft", "x", 0.4)]
    models = {"base": {}, "ft": {"base": "base", "specialisation": "mad"}}
    run = load_run(make_run(tmp_path, "r", models, {}, extra_records=records, predictions=False))
    table = general_table(run, "zero_shot")
    assert table.datasets == ["x"]
    assert table.excluded == {"y": ["ft"]}
    assert table.gelo("ft") == pytest.approx(0.5)
    assert general_table(run, "linear_probe") is None


def test_general_protocols_are_ordered_with_kshot_by_k():
    records = [_record("m", "d", 0.5, p) for p in ("linear_probe_16shot", "linear_probe", "linear_probe_4shot",
                                                   "zero_shot", "verification")]
    assert general_protocols(records) == ["zero_shot", "linear_probe", "linear_probe_4shot", "linear_probe_16shot"]


def test_biometric_table_prefers_own_head_and_labels_the_scoring(tmp_path):
    records = [
        _record("clip", "lfw", 0.9333, "verification", "accuracy"),
        _record("mad-ft", "lfw", 0.8648, "verification", "accuracy"),
        _record("clip", "smdd", 0.2359, "mad/probe", "d_eer", {"convention": "SMDD D-EER"}),
        _record("clip", "smdd", 0.40, "mad/zero_shot", "d_eer"),
        _record("mad-ft", "smdd", 0.1189, "mad/own_head", "d_eer"),
        _record("mad-ft", "smdd", 0.15, "mad/probe", "d_eer"),
        _record("mad-ft", "smdd", 0.3936, "mad/own_head", "apcer@bpcer1_nearest"),
        _record("mad-ft", "smdd", 0.50, "mad/own_head", "apcer@bpcer1"),
        _record("clip", "oulu", 0.4395, "pad/zero_shot", "hter_test_eer"),
    ]
    models = {"clip": {}, "mad-ft": {"base": "clip", "specialisation": "mad"}}
    run = load_run(make_run(tmp_path, "r", models, {}, extra_records=records, predictions=False))
    table = biometric_table(run)
    labels = [c.label for c in table.columns]
    assert labels == ["lfw acc", "oulu HTER", "smdd D-EER", "smdd APCER@BPCER1%"]
    by_label = {c.label: c for c in table.columns}
    assert table.cell("mad-ft", by_label["smdd D-EER"]).scoring == "own_head"
    assert table.cell("mad-ft", by_label["smdd D-EER"]).value == pytest.approx(0.1189)
    assert table.cell("clip", by_label["smdd D-EER"]).scoring == "probe"
    assert table.cell("clip", by_label["oulu HTER"]).scoring == "zero_shot"
    assert table.cell("mad-ft", by_label["smdd APCER@BPCER1%"]).value == pytest.approx(0.3936)
    assert table.cell("mad-ft", by_label["oulu HTER"]) is None
    assert table.cell("clip", by_label["lfw acc"]).scoring == ""
    assert not by_label["smdd D-EER"].higher_is_better and by_label["lfw acc"].higher_is_better
    assert "smdd D-EER: SMDD D-EER" in table.conventions
    assert np.isclose(table.cell("mad-ft", by_label["lfw acc"]).value, 0.8648)


# study.md §1.9: MADation-B per-set D-EER (%) on SYN-MAD-2022's five methods and MorDIFF; their mean is Table C's 11.89
MADATION_B_SETS = {("mad-synmad2022", "facemorpher"): 0.00, ("mad-synmad2022", "mipgan-i"): 33.37,
                   ("mad-synmad2022", "mipgan-ii"): 22.21, ("mad-synmad2022", "opencv"): 3.85,
                   ("mad-synmad2022", "webmorph"): 10.80, ("mad-mordiff", "mordiff"): 1.10}
LONG_NAME = "froundation-vit-b-16-webface4m"  # 30 characters, as the released presets are named


def _per_set_records(model: str, protocol: str, scale: float) -> list[Record]:
    records = [_record(model, "mad-synmad2022", 0.2, protocol, "d_eer"),
               _record(model, "mad-synmad2022", 0.3, protocol, "apcer@bpcer10_nearest")]
    for (benchmark, attack), deer in MADATION_B_SETS.items():
        scope = {"attack_type": attack}
        records.append(_record(model, benchmark, scale * deer / 100, protocol, f"d_eer[{attack}]",
                               {**scope, "convention": "D-EER on all bona fide + this method's morphs"}))
        for k, pct in enumerate((1, 10, 20)):
            for stem, base in (("apcer@bpcer", 0.5), ("bpcer@apcer", 0.6)):
                for suffix, shift, rule in (("_nearest", 0.0, "nearest"), ("", 0.05, "at_most")):
                    records.append(_record(model, benchmark, scale * (base - 0.1 * k + shift), protocol,
                                           f"{stem}{pct}{suffix}[{attack}]",
                                           {**scope, "rule": rule, "convention": f"{rule} rule"}))
    return records


@pytest.fixture()
def mad_run(tmp_path):
    records = _per_set_records("madation-b16", "mad/own_head", 1.0) + _per_set_records("madation-b16", "mad/probe", 2.0)
    records += _per_set_records(LONG_NAME, "mad/zero_shot", 1.5)
    records += [_record("clip-b16", "lfw", 0.93, "verification", "accuracy")]
    models = {"clip-b16": {}, "madation-b16": {"base": "clip-b16", "specialisation": "mad"}, LONG_NAME: {}}
    return load_run(make_run(tmp_path, "mad", models, {}, extra_records=records, predictions=False))


def test_attack_set_table_reproduces_table_c_six_set_average(mad_run):
    (table,) = attack_set_tables(mad_run)
    assert table.kind == "mad" and table.models == ["madation-b16", LONG_NAME]
    assert table.sets == list(MADATION_B_SETS)
    assert [g.label for g in table.groups] == ["D-EER", "APCER@BPCER 1/10/20", "BPCER@APCER 1/10/20"]
    assert table.metrics == [["d_eer"], [f"apcer@bpcer{p}_nearest" for p in (1, 10, 20)],
                             [f"bpcer@apcer{p}_nearest" for p in (1, 10, 20)]]
    assert table.scoring == {"madation-b16": "own_head", LONG_NAME: "zero_shot"}
    assert table.value("madation-b16", ("mad-synmad2022", "mipgan-i"), "d_eer") == pytest.approx(0.3337)
    assert f"{100 * table.average('madation-b16', 'd_eer'):.2f}" == "11.89"
    assert table.average("madation-b16", "apcer@bpcer10_nearest") == pytest.approx(0.4)
    assert table.set_label(("mad-mordiff", "mordiff")) == "mordiff"
    assert "APCER@BPCER 1/10/20: nearest rule" in table.conventions


def test_attack_set_average_is_missing_when_a_set_is_missing(mad_run):
    (table,) = attack_set_tables(mad_run)
    table.values.pop(("madation-b16", ("mad-mordiff", "mordiff"), "d_eer"))
    assert table.average("madation-b16", "d_eer") is None
    assert table.average(LONG_NAME, "d_eer") == pytest.approx(1.5 * 0.1189, abs=1e-4)


def test_attack_sets_sharing_a_name_are_labelled_with_their_benchmark(mad_run):
    (table,) = attack_set_tables(mad_run)
    table.sets.append(("mad-frll", "opencv"))
    assert table.set_label(("mad-frll", "opencv")) == "mad-frll/opencv"
    assert table.set_label(("mad-synmad2022", "opencv")) == "mad-synmad2022/opencv"


def test_attack_set_table_in_the_report_fits_120_columns(mad_run):
    from overspec.report.build import report_blocks
    from overspec.report.render import to_csv, to_markdown

    blocks, _ = report_blocks(mad_run, n_boot=10)
    (block,) = [b for b in blocks if getattr(b, "name", "") == "mad_attack_sets"]
    assert block.header == ["model", "scoring", "set", "D-EER ↓", "APCER@BPCER 1/10/20 ↓",
                            "BPCER@APCER 1/10/20 ↓"]
    assert block.rows[1] == ["madation-b16", "own head", "mipgan-i", "33.37", "50.00/40.00/30.00", "60.00/50.00/40.00"]
    assert block.rows[6][:4] == ["madation-b16", "own head", "Avg (6 sets)", "11.89"]
    assert len(block.rows) == 2 * 7
    lines = [line for line in to_markdown([block]).splitlines() if line.startswith("|")]
    assert max(len(line) for line in lines) <= 120
    csv_text = to_csv(block)
    assert csv_text.splitlines()[0].startswith("model,scoring,benchmark,attack_type,d_eer,apcer@bpcer1_nearest")
    assert "madation-b16,own_head,,average,0.11888333333333" in csv_text


def test_unreachable_operating_points_are_marked_and_left_out_of_the_gain(tmp_path):
    from overspec.report.build import specialisation_gain
    from overspec.report.rundata import load_run
    from overspec.report.summary import summary_markdown

    def ijb(model, value, reachable):
        return Record(run="r", model=model, model_fingerprint="fp", dataset="ijbc", split="faces", protocol="ijb",
                      metric="tar_at_far_0.0001", value=value, n=100, config_hash="c",
                      extra={"reachable": reachable})

    def lfw(model, value):
        return Record(run="r", model=model, model_fingerprint="fp", dataset="lfw", split="pairs",
                      protocol="verification", metric="accuracy", value=value, n=100, config_hash="c")

    records = [ijb("base", 0.0, False), ijb("ft", 0.5, False), lfw("base", 0.8), lfw("ft", 0.9)]
    run_dir = make_run(tmp_path, "r", {"base": {}, "ft": {"base": "base", "specialisation": "fr"}},
                       {"base": {"cifar": 0.5}, "ft": {"cifar": 0.5}}, extra_records=records)
    run = load_run(run_dir)
    bio = biometric_table(run)
    cells = [bio.cell("ft", c) for c in bio.columns]
    assert [c.reachable for c in cells] == [True, False]
    assert specialisation_gain(run, bio, "ft") == pytest.approx(10.0)  # LFW only: +10 pp
    summary = summary_markdown(records, ["base", "ft"], ["lfw", "ijbc"])
    assert "| ft | n/r |" in summary and "n/r: operating point not reachable" in summary
