"""Protocol units under ``on_bad_image="skip"``: their numbers equal those computed on the same data without the
bad files, and every record counts what was skipped."""

import json

import numpy as np
import pytest
from PIL import Image

from overspec.cli.main import main
from overspec.config.run import RunConfig
from overspec.data.biometric.attack_list import COLUMNS
from overspec.data.biometric.benchmarks import BiometricBenchmark, open_benchmark
from overspec.features.store import FeatureStore, ModelFeatures
from overspec.models import ModelSpec, load_model
from overspec.data.formats.ijb import IJBMeta, TemplateSubjects
from overspec.protocols.base import resolve_settings
from overspec.protocols.biometric import ATTACK, VERIFICATION
from overspec.protocols.inputs import compute_unit, meta_of_faces
from overspec.results import read_jsonl
from overspec.runner import run_study

COLOURS = ((220, 30, 30), (30, 200, 40), (30, 40, 220))


def _save(path, seed, base=(128, 128, 128), size=20):
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).normal(0, 30, (size, size, 3))
    Image.fromarray(np.clip(np.asarray(base) + noise, 0, 255).astype(np.uint8)).save(path)


def _colour_dataset(root, bad: dict[str, int], drop_bad: bool):
    """csv colour dataset; image ``bad[split]`` of a split is corrupted, or left out of the table when ``drop_bad``."""
    (root / "classnames.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("red\ngreen\nblue\n")
    (root / "templates.txt").write_text("a photo of the colour {c}.\n")
    for split, n in (("train", 24), ("test", 12)):
        rows = ["path,label"]
        for i in range(n):
            name = f"images/{split}_{i}.png"
            _save(root / name, 100 * (split == "test") + i, COLOURS[i % 3])
            if bad.get(split) == i:
                if drop_bad:
                    continue
                (root / name).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
            rows.append(f"{name},{i % 3}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")


def _entry_file(tmp_path):
    entry = tmp_path / "skip-colours.yaml"
    entry.write_text("name: skip-colours\nformat: csv\nroot: colours\nsplits: {train: train, test: test}\n"
                     "classnames: file\ntemplates: file\nlayout: 'classnames.txt, templates.txt, {train,test}.csv'\n"
                     "num_classes: 3\n")
    return entry


def _run(tmp_path, data_root, checkpoint, config_file, **extra):
    config = RunConfig(name="r", models=(ModelSpec(name="micro", config_file=str(config_file), weights=str(checkpoint)),),
                       datasets=("skip-colours",), dataset_files=(str(_entry_file(tmp_path)),),
                       data_root=str(data_root), output_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"),
                       progress=False, batch_size=4, **extra)
    return {(r.protocol, r.metric): r for r in run_study(config).records}


def test_general_units_skip_bad_images_and_match_the_clean_dataset(tmp_path, micro_checkpoint, micro_config_file):
    bad = {"train": 5, "test": 7}
    _colour_dataset(tmp_path / "bad" / "data" / "colours", bad, drop_bad=False)
    _colour_dataset(tmp_path / "clean" / "data" / "colours", bad, drop_bad=True)
    skipped = _run(tmp_path / "bad", tmp_path / "bad" / "data", micro_checkpoint, micro_config_file,
                   on_bad_image="skip")
    clean = _run(tmp_path / "clean", tmp_path / "clean" / "data", micro_checkpoint, micro_config_file)
    assert set(skipped) == set(clean) and len(clean) == 6
    for key, record in skipped.items():
        assert record.value == pytest.approx(clean[key].value, abs=1e-9, nan_ok=True), key
        assert record.n == clean[key].n == 11
        assert clean[key].extra["skipped_images"] == 0
    assert skipped[("zero_shot", "acc1")].extra["skipped_images"] == 1
    assert skipped[("linear_probe", "acc1")].extra["skipped_images"] == 2
    assert skipped[("linear_probe", "acc1")].extra["n_train"] == clean[("linear_probe", "acc1")].extra["n_train"]
    predictions = np.load(tmp_path / "bad" / "runs" / "r" / "predictions" / "micro__skip-colours__zero_shot.npz")
    assert 7 not in predictions["index"] and predictions["index"].shape == (11,)


def test_cli_fails_in_one_line_naming_the_file_or_skips_and_counts(tmp_path, capsys, micro_checkpoint,
                                                                     micro_config_file):
    _colour_dataset(tmp_path / "data" / "colours", {"test": 4}, drop_bad=False)
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"name: cli\nmodels:\n  - {{name: micro, config_file: {micro_config_file}, weights: {micro_checkpoint}}}\n"
        f"datasets: [skip-colours]\ndataset_files: [{_entry_file(tmp_path)}]\ndata_root: {tmp_path / 'data'}\n"
        f"output_dir: {tmp_path / 'runs'}\ncache_dir: {tmp_path / 'cache'}\nprogress: false\n")
    assert main(["run", str(config), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("overspec run: error: dataset 'skip-colours' split 'test'")
    assert str(tmp_path / "data" / "colours" / "images" / "test_4.png") in err
    assert not (tmp_path / "runs" / "cli" / "results.jsonl").exists()
    headers = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("*.json") if "image" in p.parts]
    assert all(h["split"] != "test" for h in headers)

    assert main(["run", str(config), "--no-report", "--on-bad-image", "skip"]) == 0
    records = read_jsonl(tmp_path / "runs" / "cli" / "results.jsonl")
    assert {r.protocol for r in records} == {"zero_shot", "linear_probe"}
    assert all(r.extra["skipped_images"] == 1 and r.n == 11 for r in records)


@pytest.fixture
def encoder(tmp_path, micro_checkpoint):
    return load_model(ModelSpec(name="m", architecture="micro-clip", weights=str(micro_checkpoint)), cache_dir=tmp_path)


def _unit_records(protocol, root, encoder, entry, unit, policy):
    store = FeatureStore(root / "store", batch_size=5, progress=False, on_bad_image=policy)
    settings = resolve_settings({})[protocol.name]
    plan = next(p for p in protocol.units(settings, entry.kind) if p.name == unit)
    output = compute_unit(protocol, plan, entry.kind, open_benchmark(entry, root), ModelFeatures(store, lambda: encoder),
                          settings, seed=0, device="cpu")
    return output.rows


def _pairs_benchmark(root, bad_image: str | None, dropped_pair: int | None):
    rows = ["path1,path2,issame"]
    for k in range(24):
        same = k % 2 == 0
        for side in (0, 1):
            _save(root / f"p{k}_{side}.png", 1000 + 2 * k + side, COLOURS[(k + side * (not same)) % 3])
        if k == dropped_pair:
            continue
        rows.append(f"p{k}_0.png,p{k}_1.png,{int(same)}")
    if bad_image is not None:
        (root / bad_image).write_bytes(b"")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return BiometricBenchmark(name="skip-pairs", kind="verification", format="pairs_csv", root="pairs.csv",
                              layout="pairs.csv + images")


def test_verification_drops_pairs_with_a_bad_image(tmp_path, encoder):
    entry = _pairs_benchmark(tmp_path / "bad", "p5_1.png", None)
    with pytest.raises(ValueError, match=r"p5_1\.png"):
        _unit_records(VERIFICATION, tmp_path / "bad", encoder, entry, "verification", "fail")
    skipped = _unit_records(VERIFICATION, tmp_path / "bad", encoder, entry, "verification", "skip")
    clean_entry = _pairs_benchmark(tmp_path / "clean", None, 5)
    clean = _unit_records(VERIFICATION, tmp_path / "clean", encoder, clean_entry, "verification", "fail")
    assert [r["metric"] for r in skipped] == [r["metric"] for r in clean]
    for ours, theirs in zip(skipped, clean, strict=True):
        assert ours["value"] == pytest.approx(theirs["value"], abs=1e-9)
        assert ours["n"] == theirs["n"] == 46
        assert ours["extra"]["skipped_images"] == 1 and theirs["extra"]["skipped_images"] == 0


def _attack_benchmark(root, bad: set[int], drop: bool):
    rows = [",".join(COLUMNS)]
    samples = [(split, i) for split, n in (("train", 16), ("dev", 8), ("test", 12)) for i in range(n)]
    for number, (split, i) in enumerate(samples):
        bona = i % 2 == 0
        path = f"{split}/{i}.png"
        _save(root / path, 2000 + number, (200, 180, 160) if bona else (90, 80, 120))
        if number in bad:
            if drop:
                continue
            (root / path).write_bytes(b"GIF89a" + bytes(10))
        label, kind = ("bona_fide", "") if bona else ("attack", "morph-a" if i % 4 == 1 else "morph-b")
        rows.append(f"{path},{label},{kind},{path},s{i // 2},{split},")
    (root / "protocol.csv").write_text("\n".join(rows) + "\n")
    return BiometricBenchmark(name="skip-mad", kind="mad", format="attack_csv", root="protocol.csv",
                              layout="protocol.csv")


@pytest.mark.parametrize("scoring", ["probe", "zero_shot"])
def test_attack_detection_drops_bad_samples(tmp_path, encoder, scoring):
    bad = {3, 30}  # one training image, one test image
    entry = _attack_benchmark(tmp_path / "bad", bad, drop=False)
    skipped = _unit_records(ATTACK, tmp_path / "bad", encoder, entry, f"mad/{scoring}", "skip")
    clean_entry = _attack_benchmark(tmp_path / "clean", bad, drop=True)
    clean = _unit_records(ATTACK, tmp_path / "clean", encoder, clean_entry, f"mad/{scoring}", "fail")
    assert [r["metric"] for r in skipped] == [r["metric"] for r in clean] and "d_eer" in [r["metric"] for r in clean]
    for ours, theirs in zip(skipped, clean, strict=True):
        assert ours["value"] == pytest.approx(theirs["value"], abs=1e-9), ours["metric"]
        assert ours["n"] == theirs["n"] == 11
    assert {r["extra"]["skipped_images"] for r in skipped} == {2 if scoring == "probe" else 1}


def test_non_finite_own_head_scores_name_the_benchmark(tmp_path, encoder):
    class NaNHead:
        def scores(self, x):
            return np.full(len(x), np.nan)

    entry = _attack_benchmark(tmp_path, set(), drop=False)
    encoder.head = NaNHead()
    with pytest.raises(ValueError, match=r"benchmark 'skip-mad': 8 of 8 own_head attack scores of its 'dev' split"):
        _unit_records(ATTACK, tmp_path, encoder, entry, "mad/own_head", "fail")


def test_ijb_skip_empties_templates_and_drops_their_pairs_and_list_entries(tmp_path):
    faces = ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")
    meta = IJBMeta(tmp_path, "ijbc", faces, np.array([1, 1, 2, 3, 3]), np.array([10, 11, 20, 30, 30]),
                   np.zeros((5, 5, 2), np.float32), np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32),
                   np.array([1, 1, 2]), np.array([2, 3, 3]), np.array([1, 0, 0], np.int8),
                   {"G1": TemplateSubjects(np.array([1, 2]), np.array([7, 8])),
                    "G2": TemplateSubjects(np.array([2]), np.array([8]))},
                   {"mixed": TemplateSubjects(np.array([3]), np.array([9]))})
    kept = meta_of_faces("ijb", meta, np.array([True, True, False, False, True]))
    assert kept.image_names == ("a.jpg", "b.jpg", "e.jpg") and kept.num_faces == 3
    assert kept.template_ids.tolist() == [1, 1, 3] and kept.media_ids.tolist() == [10, 11, 30]
    assert kept.scores.tolist() == pytest.approx([0.9, 0.8, 0.5])
    assert list(zip(kept.pair_t1.tolist(), kept.pair_t2.tolist(), kept.pair_labels.tolist())) == [(1, 3, 0)]
    assert list(kept.galleries) == ["G1"] and kept.galleries["G1"].template_ids.tolist() == [1]
    assert kept.galleries["G1"].subject_ids.tolist() == [7] and list(kept.probes) == ["mixed"]
    assert meta_of_faces("ijb", meta, np.ones(5, bool)) is meta
    with pytest.raises(ValueError, match="benchmark 'ijb': no template pair is left"):
        meta_of_faces("ijb", meta, np.array([True, True, False, False, False]))
