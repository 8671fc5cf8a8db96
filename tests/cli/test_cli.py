import pytest

from overspec.cli.main import main


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "overspec run" in out and "overspec datasets" in out


def test_models_lists_presets(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny-s" in out and "openai-vit-l-14" in out and "ViT-L-14-quickgelu" in out


def test_datasets_lists_presence_with_expected_layout(tmp_path, capsys):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-batches-py").mkdir()
    assert main(["datasets", "--data-root", str(tmp_path)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "yes" in lines["cifar10"].split()
    assert "missing:" in lines["food101"] and str(tmp_path / "food101") in lines["food101"]


def test_bad_config_is_one_line_error_with_exit_2(tmp_path, capsys):
    config = tmp_path / "study.yaml"
    config.write_text("models: [tiny-s]\nbatch_sise: 4\n")
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "unknown key 'batch_sise'; did you mean 'batch_size'" in err and "study.yaml" in err


def test_unknown_model_and_missing_data_root_are_clear(tmp_path, capsys):
    config = tmp_path / "s.yaml"
    config.write_text(f"models: [tiny-z]\ndatasets: [cifar10]\ndata_root: {tmp_path}\noutput_dir: {tmp_path}\n")
    assert main(["run", str(config)]) == 2
    assert "unknown model 'tiny-z'; did you mean" in capsys.readouterr().err
    config.write_text(f"models: [tiny-s]\ndatasets: [cifar10]\ndata_root: {tmp_path / 'nowhere'}\n"
                      f"output_dir: {tmp_path}\ncache_dir: {tmp_path}\n")
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "cifar10" in err and "nowhere" in err


@pytest.mark.parametrize("named", ["by name", "by path"])
def test_study_config_dry_run_lists_everything_missing_and_exits_1(tmp_path, capsys, named):
    from overspec.config.run import shipped_studies

    config = "ijcb2025" if named == "by name" else str(shipped_studies()["ijcb2025"])
    assert main(["run", config, "--data-root", str(tmp_path), "--dry-run"]) == 1
    out = capsys.readouterr().out
    for name in ("froundation-vit-l-14-webface4m", "madation-vit-b-16", "food101", "imagenetv2", "lfw", "ijbc",
                 "mad-synmad2022", "pad-OCM-to-CA"):
        assert f"'{name}'" in out
    assert "units: 8 models" in out
    assert not (tmp_path / "runs").exists()


def test_study_config_run_refuses_before_computing(tmp_path, capsys):
    assert main(["run", "ijcb2025", "--data-root", str(tmp_path), "--output-dir", str(tmp_path / "runs"),
                 "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "problem(s) before running" in err and "pad-OCM-to-CA" in err
    assert not (tmp_path / "cache" / "features").exists()


def test_a_config_that_is_neither_a_file_nor_a_shipped_study_names_the_shipped_ones(tmp_path, capsys):
    assert main(["run", str(tmp_path / "ijcb2024.yaml")]) == 2
    err = capsys.readouterr().err
    assert "ijcb2024.yaml: no such config file" in err and "shipped: ijcb2025" in err


def test_a_file_of_the_same_name_wins_over_the_shipped_study(tmp_path, monkeypatch):
    from overspec.config.run import config_path, shipped_studies

    monkeypatch.chdir(tmp_path)
    assert config_path("ijcb2025") == shipped_studies()["ijcb2025"]
    (tmp_path / "ijcb2025").write_text("models: [tiny-s]\n")
    assert config_path("ijcb2025") == tmp_path.joinpath("ijcb2025").relative_to(tmp_path)


@pytest.mark.parametrize(("raised", "code", "shown"), [
    (ValueError("operands could not be broadcast together"), 1, "internal error: this is a bug in overspec"),
    (KeyError("boom"), 1, "internal error: this is a bug in overspec"),
])
def test_a_bug_is_shown_as_a_bug_with_its_traceback(monkeypatch, capsys, raised, code, shown):
    import overspec.runner

    def broken(config):
        raise raised

    monkeypatch.setattr(overspec.runner, "run_study", broken)
    assert main(["run", "--no-report"]) == code
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and shown in err


def test_an_input_error_is_one_line_with_exit_2(monkeypatch, capsys):
    import overspec.runner
    from overspec.errors import InputError

    def refused(config):
        raise InputError("study.yaml: seed must be in [0, 4294967295], got -1")

    monkeypatch.setattr(overspec.runner, "run_study", refused)
    assert main(["run", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "overspec run: error: study.yaml: seed must be in [0, 4294967295], got -1"
