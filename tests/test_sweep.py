"""The λ sweep: points, own-task gains and GELO read from the sweep's own records, frontier, chosen λ, merged rows."""

import dataclasses
import json

import pytest
import torch

from overspec.config.model import ModelSpec
from overspec.config.run import FinetuneRunConfig, RunConfig
from overspec.errors import InputError
from overspec.report.build import MADE_FROM, build_report
from overspec.results import read_jsonl
from overspec.sweep import RegularisedPoint, SweepPoint, _dominating_lambdas, _with_frontier, run_sweep, sweep_config
from overspec.finetune.variants import FinetuneVariant
from tests.test_runner_biometric import small_biometric_world  # noqa: F401  (a fixture)

#: A regularised fine-tune small enough for a test: FoundPAD with L2-SP on the small world's source O, two steps.
_PAD_L2SP = FinetuneVariant("foundpad", ("regularise.l2sp=1",))
_TINY_FINETUNE = ("steps=2", "batch_size=4", "val_every=0", "checkpoint_every=0", "lora.rank=2",
                  "train_transform.resize=18", "train_transform.crop=16")


def _perturbed(checkpoint, path, seed: int, scale: float):
    state = torch.load(checkpoint, weights_only=True)
    generator = torch.Generator().manual_seed(seed)
    torch.save({k: v + scale * torch.randn(v.shape, generator=generator) if k.startswith("visual.")
                and v.is_floating_point() else v for k, v in state.items()}, path)
    return str(path)


def _config(tmp_path, world, entry, checkpoint, config_file) -> RunConfig:
    base = ModelSpec(name="micro", config_file=str(config_file), weights=str(checkpoint))
    fr = dataclasses.replace(base, name="fr", weights=_perturbed(checkpoint, tmp_path / "fr.pt", 1, 0.05),
                             base="micro", specialisation="fr")
    pad = dataclasses.replace(base, name="pad", weights=_perturbed(checkpoint, tmp_path / "pad.pt", 2, 0.05),
                              base="micro", specialisation="pad")
    finetune = FinetuneRunConfig(overrides=_TINY_FINETUNE,
                                 data={"foundpad": str(world / "world" / "biometric" / "pad" / "O" / "protocol.csv")})
    return RunConfig(name="s", models=(base, fr, pad), datasets=("test-colours",), dataset_files=(str(entry),),
                     biometrics=("world-lfw", "world-pad-OCI-to-M"), data_root=str(world),
                     output_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), progress=False,
                     finetune=finetune)


@pytest.fixture
def world_with_colours(tmp_path, small_biometric_world, csv_dataset):  # noqa: F811
    import shutil

    data_root, entry = csv_dataset
    shutil.copytree(small_biometric_world / "world", data_root / "world")
    return data_root, entry


def test_sweep_reads_every_point_from_its_own_records(tmp_path, world_with_colours, micro_checkpoint,
                                                      micro_config_file):
    data_root, entry = world_with_colours
    config = _config(tmp_path, data_root, entry, micro_checkpoint, micro_config_file)
    result = run_sweep(config, lambdas=(0.0, 0.5, 1.0), keep=0.5, regularised=(_PAD_L2SP,))
    records = {(r.model, r.dataset, r.protocol, r.metric): r.value
               for r in read_jsonl(tmp_path / "runs" / "s-sweep" / "results.jsonl")}
    fr = result.points["fr"]
    assert [(p.lam, p.model) for p in fr] == [(0.0, "micro"), (0.5, "fr@0.5"), (1.0, "fr")]
    assert fr[0].gain_pp == 0.0 and fr[0].gelo == {"zero_shot": 1.0, "linear_probe": 1.0}
    for point in fr[1:]:
        expected_gain = 100 * (records[(point.model, "world-lfw", "verification", "accuracy")]
                               - records[("micro", "world-lfw", "verification", "accuracy")])
        assert point.gain_pp == pytest.approx(expected_gain, abs=1e-9)
        for protocol in ("zero_shot", "linear_probe"):
            expected = records[(point.model, "test-colours", protocol, "acc1")] / records[
                ("micro", "test-colours", protocol, "acc1")]
            assert point.gelo[protocol] == pytest.approx(expected, abs=1e-12)
    chosen = result.chosen["fr"]
    kept = [p for p in fr if p.lam > 0 and all(g >= 0.5 for g in p.gelo.values())]
    assert (chosen is None) == (not kept)
    assert chosen is None or (chosen in kept and all(p.lam <= chosen.lam for p in kept))
    assert ("pad@0.5", "world-pad-OCI-to-M", "pad/probe", "hter_test_eer") in records
    # each model with a task meets only its own tasks' benchmarks; the base meets all; no preprocessing controls
    benchmarks = {}
    for model, dataset, _, _ in records:
        benchmarks.setdefault(model, set()).add(dataset)
    assert benchmarks["micro"] == benchmarks["micro-merged-fr+pad"] == {"test-colours", "world-lfw",
                                                                        "world-pad-OCI-to-M"}
    assert benchmarks["fr@0.5"] == benchmarks["fr"] == {"test-colours", "world-lfw"}
    assert benchmarks["pad@0.5"] == {"test-colours", "world-pad-OCI-to-M"}
    assert not any("~" in model for model in benchmarks)
    # the study's units are copied from its run, not computed again
    units = json.loads((tmp_path / "runs" / "s-sweep" / "provenance.json").read_text())["units"]
    shared = "fr__test-colours__linear_probe"
    assert shared in units["reused"] and shared not in units["computed"]
    assert (tmp_path / "runs" / "s-sweep" / "units" / f"{shared}.json").read_bytes() == \
        (tmp_path / "runs" / "s" / "units" / f"{shared}.json").read_bytes()
    assert all(not slug.startswith(("micro__", "fr__", "pad__")) for slug in units["computed"])
    assert not any(k[2].endswith("own_head") for k in records)
    merged = {row.model: row for row in result.merged}
    assert set(merged) == {"micro-merged-fr+pad"}
    assert set(merged["micro-merged-fr+pad"].gains_pp) == {"fr", "pad"}

    # the regularised fine-tune: made, evaluated in the sweep run, placed on the λ path of the PAD fine-tune only
    assert set(result.regularised) == {"pad"}
    (point,) = result.regularised["pad"]
    assert (point.model, point.label) == ("micro-foundpad-l2sp1", "foundpad-l2sp1")
    def pad(model, metric):
        return records[(model, "world-pad-OCI-to-M", "pad/probe", metric)]

    # PAD's columns: HTER (lower is better) and AUC, each a difference in pp, averaged
    expected = (-100 * (pad(point.model, "hter_test_eer") - pad("micro", "hter_test_eer"))
                + 100 * (pad(point.model, "auc") - pad("micro", "auc"))) / 2
    assert point.gain_pp == pytest.approx(expected, abs=1e-9)
    for protocol in ("zero_shot", "linear_probe"):
        assert point.gelo[protocol] == pytest.approx(records[(point.model, "test-colours", protocol, "acc1")]
                                                     / records[("micro", "test-colours", protocol, "acc1")])
    assert point.dominated_by == tuple(p.lam for p in result.points["pad"] if p.gain_pp >= point.gain_pp and all(
        p.gelo[g] >= point.gelo[g] for g in point.gelo))
    made = list((tmp_path / "cache" / "finetune" / "micro").glob("foundpad-default-*/finetune.json"))
    assert len(made) == 1
    assert json.loads(made[0].read_text())["config"]["regularise"] == {"distill": 0.0, "l2sp": 1.0}

    folder = tmp_path / "runs" / "s-sweep" / "sweep"
    text = (folder / "sweep.md").read_text()
    assert "## fr" in text and "| 0.5 |" in text and "micro-merged-fr+pad" in text
    assert "## Regularised fine-tunes on the frontier" in text and "| micro-foundpad-l2sp1 | pad | foundpad-l2sp1 |" \
        in text
    csv = (folder / "sweep.csv").read_text().splitlines()
    assert csv[0].startswith("variant,lambda,model,own_task_gain_pp") and csv[0].endswith(",regularisation")
    assert csv[-1].startswith("pad,,micro-foundpad-l2sp1,") and csv[-1].endswith(",0,foundpad-l2sp1")
    assert (folder / "section.json").is_file()

    # the study's own report carries the sweep's section, figure included
    report = build_report(tmp_path / "runs" / "s")
    body = (report / "report.md").read_text()
    assert "### Regularised fine-tunes on the frontier" in body and "From `overspec sweep` of this study" in body
    assert "## Moving along the trade-off" in body and "changed after that sweep" not in body
    made_from = json.loads((report / MADE_FROM).read_text())
    if (folder / "figures" / "frontier.png").is_file():
        assert "figures/sweep_frontier.png" in made_from["files"] and "diamond" in body
        assert (report / "figures" / "sweep_frontier.png").read_bytes() == (folder / "figures" / "frontier.png"
                                                                           ).read_bytes()

    finetune_record = made[0].read_text()
    again = run_sweep(config, lambdas=(0.0, 0.5, 1.0), keep=0.5, regularised=(_PAD_L2SP,))
    assert again.points == result.points and again.regularised == result.regularised
    assert len(read_jsonl(tmp_path / "runs" / "s-sweep" / "results.jsonl")) == len(records)
    assert made[0].read_text() == finetune_record  # the regularised fine-tune was reused
    assert build_report(tmp_path / "runs" / "s") == report and json.loads(
        (report / MADE_FROM).read_text()) == made_from  # nothing changed: the report is kept


def test_frontier_keeps_the_points_nothing_beats_on_every_axis():
    def point(lam, gain, zs, probe):
        return SweepPoint("v", lam, f"v@{lam}", gain, {"zero_shot": zs, "linear_probe": probe})

    points = _with_frontier([point(0, 0.0, 1.0, 1.0), point(0.5, 5.0, 0.99, 0.98), point(0.8, 4.0, 0.97, 0.97),
                             point(1, 6.0, 0.90, 0.99), SweepPoint("v", 0.9, "v@0.9", None, {})])
    assert [p.pareto for p in points] == [True, True, False, True, False]


def test_sweep_config_refuses_lambdas_outside_0_1(tmp_path, micro_checkpoint, micro_config_file):
    base = ModelSpec(name="micro", config_file=str(micro_config_file), weights=str(micro_checkpoint))
    config = RunConfig(name="s", models=(base,))
    with pytest.raises(InputError, match=r"λ values must lie in \[0, 1\], got \[1.5\]"):
        sweep_config(config, [base], (0.0, 1.5), merged=False)
    with pytest.raises(InputError, match="keep must be a share"):
        run_sweep(config, keep=1.5)


def test_a_regularised_point_is_matched_by_the_lambdas_at_least_as_good_on_every_axis():
    def point(lam, gain, zs, probe):
        return SweepPoint("v", lam, f"v@{lam}", gain, {"zero_shot": zs, "linear_probe": probe})

    line = [point(0, 0.0, 1.0, 1.0), point(0.5, 4.0, 0.98, 0.97), point(1, 6.0, 0.90, 0.95)]

    def placed(gain, zs, probe):
        return _dominating_lambdas(RegularisedPoint("v", "r", "r", gain, {"zero_shot": zs, "linear_probe": probe}),
                                   line)

    assert placed(3.0, 0.97, 0.97) == (0.5,)
    assert placed(5.0, 0.97, 0.96) == ()  # more gain than λ = 0.5, more GELO than λ = 1: beyond the frontier
    assert placed(4.0, 0.98, 0.97) == (0.5,)  # equal to a λ point: matched
    assert placed(-1.0, 0.9, 0.9) == (0, 0.5, 1)
    assert RegularisedPoint("v", "r", "r", 5.0, {"zero_shot": 1.0}).beyond
    assert not RegularisedPoint("v", "r", "r", None, {}).beyond


def test_a_bad_regularised_variant_fails_before_the_study_runs(tmp_path, micro_checkpoint, micro_config_file):
    base = ModelSpec(name="micro", config_file=str(micro_config_file), weights=str(micro_checkpoint))
    config = RunConfig(name="s", models=(base,), output_dir=str(tmp_path / "runs"))
    with pytest.raises(InputError, match=r"foundpad-distill-1.*regularise\.distill must be a finite number >= 0"):
        run_sweep(config, regularised=(FinetuneVariant("foundpad", ("regularise.distill=-1",)),))
    with pytest.raises(InputError, match="regularised_bases must be >= 0"):
        run_sweep(config, regularised_bases=-1)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("chosen_gain", "expected"), [
    (1.0, "(it costs 2.00 pp)"), (3.0, "(it costs nothing)"),
    (4.5, "(it is 1.50 pp better than λ = 1 on its own task too)")])
def test_the_chosen_lambda_sentence_says_what_it_costs_or_gains(tmp_path, chosen_gain, expected):
    from overspec.sweep import SweepResult, _chosen_sentence

    chosen = SweepPoint("v", 0.5, "v@0.5", chosen_gain, {"zero_shot": 0.995})
    full = SweepPoint("v", 1.0, "v", 3.0, {"zero_shot": 0.9})
    result = SweepResult(tmp_path, 0.99, {"v": [chosen, full]}, {"v": chosen}, [])
    sentence = _chosen_sentence(result, "v")
    assert sentence.startswith("λ = 0.5 is the most specialised point keeping 99 %") and sentence.endswith(expected + ".")
