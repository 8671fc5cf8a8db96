"""A run config's ``benchmark_files``: a user's own .bin, IJB folder and protocol CSV as biometric benchmarks."""

from __future__ import annotations

import numpy as np
import pytest

from overspec.config.model import ModelSpec
from overspec.config.run import RunConfig, load_run_config
from overspec.config.typed import ConfigError
from overspec.data.biometric.benchmarks import (
    CATALOG_DIR, biometric_registry, read_benchmark_file, register_benchmark_file,
)
from overspec.registry import RegistryError
from overspec.runner import plan_study, run_study
from tests.data.biometric._placeholders import (
    write_placeholder_bin, write_placeholder_ijb, write_placeholder_protocol,
)

NAMES = ("my-pairs", "my-ijb", "my-morphs")


@pytest.fixture
def user_files(tmp_path):
    """Three entry files in ``tmp_path/entries``: a relative .bin, an absolute IJB folder, a relative MAD CSV."""
    rng = np.random.default_rng(0)
    data = tmp_path / "mine"
    write_placeholder_bin(data / "pairs.bin", rng)
    write_placeholder_ijb(data / "ijb", "ijbc", rng)
    write_placeholder_protocol(data / "morphs" / "protocol.csv", "mad", "", rng)
    entries = tmp_path / "entries"
    entries.mkdir()
    texts = {
        "my-pairs": "kind: verification\nformat: bin\nroot: ../mine/pairs.bin\nlayout: an insightface .bin\n",
        "my-ijb": f"kind: ijb\nformat: ijb\nroot: {data / 'ijb'}\nlayout: IJB meta folder\noptions: {{prefix: ijbc}}\n",
        "my-morphs": "kind: mad\nformat: attack_csv\nroot: ../mine/morphs/protocol.csv\nlayout: protocol CSV\n",
    }
    paths = []
    for name, text in texts.items():
        paths.append(entries / f"{name}.yaml")
        paths[-1].write_text(f"name: {name}\n{text}")
    yield paths
    for name in NAMES:
        if name in biometric_registry():
            biometric_registry().unregister(name)


def _config(tmp_path, files, checkpoint, config_file, biometrics=NAMES, name="mine"):
    model = ModelSpec(name="micro", config_file=str(config_file), weights=str(checkpoint))
    return RunConfig(name=name, models=(model,), biometrics=biometrics, benchmark_files=tuple(map(str, files)),
                     data_root=str(tmp_path / "elsewhere"), output_dir=str(tmp_path / "runs"),
                     cache_dir=str(tmp_path / "cache"), progress=False)


def test_relative_root_is_taken_from_the_entry_files_folder(tmp_path, user_files):
    entry = read_benchmark_file(user_files[0])
    assert entry.root == str(tmp_path / "mine" / "pairs.bin") and entry.origin == str(user_files[0])
    assert entry.path(tmp_path / "any-data-root") == tmp_path / "mine" / "pairs.bin"
    assert read_benchmark_file(user_files[1]).root == str(tmp_path / "mine" / "ijb")


def test_dry_run_registers_and_shows_the_users_benchmarks(tmp_path, user_files, micro_checkpoint, micro_config_file):
    (tmp_path / "elsewhere").mkdir()
    text, problems = plan_study(_config(tmp_path, user_files, micro_checkpoint, micro_config_file))
    assert problems == []
    assert f"benchmark file {user_files[0]}: my-pairs (verification, bin) at {tmp_path / 'mine' / 'pairs.bin'}" in text
    assert "my-ijb (ijb, ijb)" in text and "my-morphs (mad, attack_csv)" in text
    assert "not run" not in text
    (tmp_path / "mine" / "pairs.bin").unlink()
    text, problems = plan_study(_config(tmp_path, user_files, micro_checkpoint, micro_config_file,
                                        biometrics=NAMES[:2]))
    assert len(problems) == 1 and "'my-pairs'" in problems[0] and str(tmp_path / "mine" / "pairs.bin") in problems[0]
    assert "my-morphs (mad, attack_csv)" in text and "(not listed in biometrics: not run)" in text


def test_run_evaluates_the_users_benchmarks_and_a_second_run_reuses_them(tmp_path, user_files, micro_checkpoint,
                                                                        micro_config_file):
    config = _config(tmp_path, user_files, micro_checkpoint, micro_config_file)
    result = run_study(config)
    by_key = {(r.dataset, r.protocol, r.metric): r for r in result.records}
    accuracy = by_key[("my-pairs", "verification", "accuracy")]
    assert accuracy.n == 40 and 0.0 <= accuracy.value <= 1.0
    assert ("my-ijb", "ijb", "tar_at_far_0.0001") in by_key
    assert 0.0 <= by_key[("my-morphs", "mad/probe", "d_eer")].value <= 1.0
    again = run_study(config)
    assert again.computed == [] and len(again.reused) == len(result.computed)


def test_same_entry_twice_is_a_no_op_and_a_different_one_names_both_files(tmp_path, user_files):
    first = register_benchmark_file(user_files[0])
    assert register_benchmark_file(user_files[0]) is first
    other = tmp_path / "other" / "deeper" / "my-pairs.yaml"
    other.parent.mkdir(parents=True)
    other.write_text(user_files[0].read_text())  # the same relative root, from another folder: another file
    with pytest.raises(RegistryError, match="my-pairs") as info:
        register_benchmark_file(other)
    assert str(other) in str(info.value) and str(user_files[0]) in str(info.value)
    shipped = tmp_path / "lfw.yaml"
    shipped.write_text(f"name: lfw\nkind: verification\nformat: bin\nroot: {tmp_path / 'lfw.bin'}\nlayout: a .bin\n")
    with pytest.raises(RegistryError) as info:
        register_benchmark_file(shipped)
    assert str(shipped) in str(info.value) and str(CATALOG_DIR / "lfw.yaml") in str(info.value)
    assert biometric_registry().get("lfw").root == "faces_emore/lfw.bin"


def test_a_bad_entry_file_names_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: verification\nformat: bin\nroot: x.bin\nlayout: a .bin\nlayuot: typo\n")
    with pytest.raises(ConfigError, match=rf"{bad}: unknown key 'layuot'; did you mean 'layout'"):
        register_benchmark_file(bad)
    assert "x" not in biometric_registry()


def test_run_config_yaml_accepts_benchmark_files(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("models: [tiny-s]\nbenchmark_files: [a.yaml, /data/b.yaml]\nbiometrics: [a]\n")
    assert load_run_config(path).benchmark_files == (str(tmp_path / "a.yaml"), "/data/b.yaml")


def test_cli_dry_run_lists_benchmark_files_and_a_clash_exits_2(tmp_path, user_files, micro_checkpoint,
                                                               micro_config_file, capsys):
    from overspec.cli.main import main

    (tmp_path / "elsewhere").mkdir()
    config = tmp_path / "study.yaml"
    config.write_text(f"models: [{{name: micro, config_file: {micro_config_file}, weights: {micro_checkpoint}}}]\n"
                      f"biometrics: [my-pairs]\nbenchmark_files: [{user_files[0]}]\n"
                      f"data_root: {tmp_path / 'elsewhere'}\noutput_dir: {tmp_path / 'runs'}\n"
                      f"cache_dir: {tmp_path / 'cache'}\n")
    assert main(["run", str(config), "--dry-run"]) == 0
    assert f"benchmark file {user_files[0]}: my-pairs (verification, bin)" in capsys.readouterr().out
    clash = tmp_path / "clash.yaml"
    clash.write_text(user_files[0].read_text().replace("../mine/pairs.bin", "elsewhere.bin"))
    config.write_text(config.read_text().replace(f"[{user_files[0]}]", f"[{user_files[0]}, {clash}]"))
    assert main(["run", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(clash) in err and str(user_files[0]) in err and len(err.strip().splitlines()) == 1
