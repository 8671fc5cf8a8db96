"""The λ sweep: points, own-task gains and GELO read from the sweep's own records, frontier, chosen λ, merged rows."""

import dataclasses

import pytest
import torch

from overspec.config.model import ModelSpec
from overspec.config.run import RunConfig
from overspec.errors import InputError
from overspec.results import read_jsonl
from overspec.sweep import SweepPoint, _with_frontier, run_sweep, sweep_config
from tests.test_runner_biometric import small_biometric_world  # noqa: F401  (a fixture)


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
    return RunConfig(name="s", models=(base, fr, pad), datasets=("test-colours",), dataset_files=(str(entry),),
                     biometrics=("world-lfw", "world-pad-OCI-to-M"), data_root=str(world),
                     output_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), progress=False)


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
    result = run_sweep(config, lambdas=(0.0, 0.5, 1.0), keep=0.5)
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
    assert not any(k[2].endswith("own_head") for k in records)
    merged = {row.model: row for row in result.merged}
    assert set(merged) == {"micro-merged-fr+pad"}
    assert set(merged["micro-merged-fr+pad"].gains_pp) == {"fr", "pad"}
    folder = tmp_path / "runs" / "s-sweep" / "sweep"
    text = (folder / "sweep.md").read_text()
    assert "## fr" in text and "| 0.5 |" in text and "micro-merged-fr+pad" in text
    assert (folder / "sweep.csv").read_text().splitlines()[0].startswith("variant,lambda,model,own_task_gain_pp")

    again = run_sweep(config, lambdas=(0.0, 0.5, 1.0), keep=0.5)
    assert again.points == result.points
    assert len(read_jsonl(tmp_path / "runs" / "s-sweep" / "results.jsonl")) == len(records)


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
