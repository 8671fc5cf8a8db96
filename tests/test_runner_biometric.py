import numpy as np
import pytest

from overspec.config.run import RunConfig
from overspec.config.model import ModelSpec
from overspec.results import read_jsonl
from overspec.runner import PreflightError, run_study

WORLD_BENCHMARKS = ("world-lfw", "world-cfp_fp", "world-agedb_30", "world-ijbc", "world-mad", "world-pad-OCI-to-M")


@pytest.fixture(scope="module")
def small_biometric_world(tmp_path_factory):
    from overspec.world.biometric import WorldSizes, ensure_biometric_world

    root = tmp_path_factory.mktemp("bio")
    sizes = WorldSizes(pairs=40, ijb_subjects=6, mad_subjects=(6, 6), mad_morph_pairs=(6, 6), pad_subjects=(2, 1, 2),
                       pad_frames=2, fr_identities=2, fr_images=2)
    ensure_biometric_world(root / "world" / "biometric", seed=0, sizes=sizes)
    return root


def _config(tmp_path, data_root, checkpoint, config_file, benchmarks=WORLD_BENCHMARKS):
    models = (ModelSpec(name="micro", config_file=str(config_file), weights=str(checkpoint)),
              ModelSpec(name="micro-img", config_file=str(config_file), weights=str(checkpoint), text=False))
    return RunConfig(name="bio", models=models, biometrics=benchmarks, data_root=str(data_root),
                     output_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), progress=False)


def test_biometric_units_produce_labelled_records(tmp_path, small_biometric_world, micro_checkpoint,
                                                  micro_config_file):
    result = run_study(_config(tmp_path, small_biometric_world, micro_checkpoint, micro_config_file))
    records = read_jsonl(tmp_path / "runs" / "bio" / "results.jsonl")
    by_key = {(r.model, r.dataset, r.protocol, r.metric): r for r in records}
    for bench in ("world-lfw", "world-cfp_fp", "world-agedb_30"):
        accuracy = by_key[("micro", bench, "verification", "accuracy")]
        assert 0.0 <= accuracy.value <= 1.0 and accuracy.n == 80 and accuracy.split == "pairs"
    assert ("micro", "world-ijbc", "ijb", "tar_at_far_0.0001") in by_key
    assert ("micro", "world-ijbc", "ijb", "rank1") in by_key
    deer = by_key[("micro", "world-mad", "mad/probe", "d_eer")]
    assert deer.extra["scoring"] == "probe" and 0.0 <= deer.value <= 1.0
    assert by_key[("micro", "world-mad", "mad/zero_shot", "d_eer")].extra["scoring"] == "zero_shot"
    morphs = sorted(r.extra["attack_type"] for r in records if r.model == "micro" and r.protocol == "mad/probe"
                    and r.metric.startswith("d_eer["))
    assert morphs == ["blend", "latent", "warp"]
    for morph in morphs:
        point = by_key[("micro", "world-mad", "mad/probe", f"bpcer@apcer10_nearest[{morph}]")]
        assert (point.extra["rule"], point.extra["attack_type"], point.extra["operating_point"]) == (
            "nearest", morph, 0.1)
    assert by_key[("micro", "world-mad", "mad/probe", "apcer@bpcer20_bob")].extra["rule"] == "bob"
    assert by_key[("micro", "world-pad-OCI-to-M", "pad/probe", "acer")].extra["rule"].startswith(("dev-", "test-"))
    hter = by_key[("micro", "world-pad-OCI-to-M", "pad/probe", "hter_test_eer")]
    assert hter.extra["level"] == "video" and "FoundPAD" in hter.extra["convention"]
    assert ("micro-img", "world-mad", "mad/probe", "d_eer") in by_key
    assert not any(k[0] == "micro-img" and k[2].endswith("zero_shot") for k in by_key)
    assert sorted(u for u, _ in result.skipped) == sorted(
        [f"{m}__{b}__{k}-own_head" for m in ("micro", "micro-img") for b, k in (("world-mad", "mad"),
                                                                             ("world-pad-OCI-to-M", "pad"))]
        + ["micro-img__world-mad__mad-zero_shot", "micro-img__world-pad-OCI-to-M__pad-zero_shot"])
    summary = (tmp_path / "runs" / "bio" / "summary.md").read_text()
    assert "## face verification — acc (%) ↑" in summary and "| model | world-lfw |" in summary
    assert "## MAD — D-EER (%) ↓" in summary and "| model | scoring | world-mad |" in summary
    assert "| micro | probe |" in summary
    again = run_study(_config(tmp_path, small_biometric_world, micro_checkpoint, micro_config_file))
    assert again.computed == [] and len(again.reused) == len(result.computed)
    np.testing.assert_array_equal([r.value for r in again.records], [r.value for r in result.records])


def test_missing_benchmarks_are_listed_before_any_work(tmp_path, micro_checkpoint, micro_config_file):
    config = _config(tmp_path, tmp_path / "empty", micro_checkpoint, micro_config_file,
                     benchmarks=("world-lfw", "world-ijbc", "world-pad-OCI-to-M"))
    with pytest.raises(PreflightError, match=r"3 problem\(s\)") as info:
        run_study(config)
    text = str(info.value)
    assert "world-lfw" in text and "lfw.bin" in text and "world-ijbc" in text and "O/protocol.csv" in text
    assert not (tmp_path / "cache" / "features").exists()


def test_own_head_scoring_uses_the_models_binary_head(tmp_path, small_biometric_world, micro_checkpoint,
                                                      micro_config_file):
    import torch

    from overspec.models.heads import BinaryHead, save_binary_head

    head = save_binary_head(tmp_path / "head.safetensors",
                            BinaryHead(torch.randn(2, 16, generator=torch.Generator().manual_seed(0)), torch.zeros(2)))
    models = (ModelSpec(name="with-head", config_file=str(micro_config_file), weights=str(micro_checkpoint),
                        head=str(head)),)
    config = RunConfig(name="head", models=models, biometrics=("world-mad",),
                       protocols={"attack": {"scoring": ["own_head"]}},
                       data_root=str(small_biometric_world), output_dir=str(tmp_path / "runs"),
                       cache_dir=str(tmp_path / "cache"), progress=False)
    result = run_study(config)
    deer = next(r for r in result.records if r.metric == "d_eer")
    assert deer.protocol == "mad/own_head" and deer.extra["scoring"] == "own_head"
    no_head = RunConfig(name="nohead", models=(ModelSpec(name="plain", config_file=str(micro_config_file),
                                                         weights=str(micro_checkpoint)),),
                        biometrics=("world-mad",), protocols={"attack": {"scoring": ["own_head"]}}, data_root=str(small_biometric_world),
                        output_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), progress=False)
    assert run_study(no_head).skipped == [("plain__world-mad__mad-own_head",
                                           "plain has no binary head: own-head attack scoring not applicable")]


def test_run_fine_tunes_variants_and_evaluates_them_beside_their_base(tmp_path, small_biometric_world,
                                                                      micro_checkpoint, micro_config_file):
    import json

    from overspec.config.run import FinetuneRunConfig

    mad_list = small_biometric_world / "world" / "biometric" / "mad" / "protocol.csv"
    config = RunConfig(
        name="ft", models=(ModelSpec(name="micro", config_file=str(micro_config_file), weights=str(micro_checkpoint)),),
        biometrics=("world-mad",), protocols={"attack": {"scoring": ["own_head", "probe"]}}, data_root=str(small_biometric_world),
        output_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), progress=False,
        finetune=FinetuneRunConfig(recipes=("madation",), profile="world", data={"madation": str(mad_list)},
                                   overrides=("steps=3", "batch_size=8", "val_every=0", "checkpoint_every=0",
                                              "dev_fraction=0.5", "train_transform.resize=16")),
    )
    result = run_study(config)
    models = {r.model for r in result.records}
    assert models == {"micro", "micro-mad"}
    own = [r for r in result.records if r.protocol == "mad/own_head"]
    assert {r.model for r in own} == {"micro-mad"}
    provenance = json.loads((tmp_path / "runs" / "ft" / "provenance.json").read_text())
    assert provenance["models"]["micro-mad"]["base"] == "micro"
    assert provenance["models"]["micro-mad"]["specialisation"] == "mad"
    assert provenance["models"]["micro"]["parameters"] > 0
    fingerprints = provenance["model_fingerprints"]
    assert fingerprints["micro-mad"] != fingerprints["micro"]
    again = run_study(config)
    assert again.computed == []
