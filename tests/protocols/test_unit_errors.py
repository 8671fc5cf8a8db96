"""A metric error inside a biometric unit names the benchmark, the file it was read from and the unit."""

import numpy as np
import pytest

from overspec.cli.main import main
from overspec.data.biometric.benchmarks import BiometricBenchmark, open_benchmark
from overspec.data.formats.bin_pairs import write_bin
from overspec.features.store import Features
from overspec.protocols.base import resolve_settings
from overspec.protocols.biometric import ATTACK, VERIFICATION
from overspec.protocols.inputs import compute_unit


class RandomFeatures:
    """A feature source that embeds nothing: seeded random features (``nan`` rows when asked)."""

    def __init__(self, nan_rows: int = 0) -> None:
        self.nan_rows = nan_rows

    def image(self, split, view="plain"):
        shape = (len(split), 2, 8) if view == "flip" else (len(split), 8)
        x = np.random.default_rng(0).normal(size=shape)
        x[: self.nan_rows] = np.nan
        return Features(x, split.labels, key="random", cached=False)

    def text_classifier(self, classnames, templates, dataset):
        raise AssertionError("not needed")

    @property
    def head(self):
        return None


def _only_genuine_bin(root, name="genuine-only.bin"):
    images = [np.full((8, 8, 3), 10 * i, dtype=np.uint8) for i in range(24)]
    root.mkdir(parents=True, exist_ok=True)
    return write_bin(root / name, images, [True] * 12, fmt="png")


def _compute(protocol, entry, root, source, unit=None):
    settings = resolve_settings({})[protocol.name]
    plan = next(p for p in protocol.units(settings, entry.kind) if unit is None or p.name == unit)
    return compute_unit(protocol, plan, entry.kind, open_benchmark(entry, root), source, settings, 0, "cpu")


VERIFICATION_ENTRY = BiometricBenchmark(name="lfw-genuine", kind="verification", format="bin",
                                        root="genuine-only.bin", layout="an insightface .bin pair file")


def test_bin_without_impostor_pairs_names_benchmark_file_and_unit(tmp_path):
    path = _only_genuine_bin(tmp_path)
    with pytest.raises(ValueError) as raised:
        _compute(VERIFICATION, VERIFICATION_ENTRY, tmp_path, RandomFeatures())
    assert str(raised.value) == ("benchmark 'lfw-genuine': issame has no different (impostor) pairs: accuracy needs "
                                 f"both genuine and impostor pairs (read from {path}; unit verification)")
    assert "issame has no different" in str(raised.value.__cause__)


def test_a_message_naming_the_benchmark_is_prefixed_once(tmp_path):
    path = _only_genuine_bin(tmp_path)
    with pytest.raises(ValueError, match=r"^benchmark 'lfw-genuine': 1 of 12 ") as raised:
        _compute(VERIFICATION, VERIFICATION_ENTRY, tmp_path, RandomFeatures(nan_rows=2))
    message = str(raised.value)
    assert message.count("lfw-genuine") == 1 and str(path) in message
    assert message.endswith("pair similarities are NaN or infinite (first: index 0) "
                            f"(read from {path}; unit verification)")


def test_mad_protocol_without_morphs_in_test_is_refused_naming_its_csv(tmp_path):
    rows = ["path,label,attack_type,video_id,subject_id,split,source"]
    for i, (label, attack, split) in enumerate([("bona_fide", "", "train"), ("attack", "blend", "train"),
                                                ("bona_fide", "", "test"), ("bona_fide", "", "test")]):
        (tmp_path / f"{i}.png").write_bytes(b"")
        rows.append(f"{i}.png,{label},{attack},v{i},s{i},{split},world")
    (tmp_path / "mad.csv").write_text("\n".join(rows) + "\n")
    entry = BiometricBenchmark(name="mad-bona-only", kind="mad", format="attack_csv", root="mad.csv",
                               layout="protocol CSV")
    with pytest.raises(ValueError, match=r"the 'test' split has no attack samples") as raised:
        _compute(ATTACK, entry, tmp_path, RandomFeatures(), unit="mad/probe")
    assert str(raised.value).startswith(f"{tmp_path / 'mad.csv'}: ")


def test_cli_run_prints_the_named_error_in_one_line(tmp_path, capsys, micro_checkpoint, micro_config_file):
    path = _only_genuine_bin(tmp_path / "data" / "world" / "biometric" / "verification", "lfw.bin")
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"name: cli\nmodels:\n  - {{name: micro, config_file: {micro_config_file}, weights: {micro_checkpoint}}}\n"
        f"biometrics: [world-lfw]\ndata_root: {tmp_path / 'data'}\noutput_dir: {tmp_path / 'runs'}\n"
        f"cache_dir: {tmp_path / 'cache'}\nprogress: false\n")
    assert main(["run", str(config), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err == (f"overspec run: error: benchmark 'world-lfw': issame has no different (impostor) pairs: accuracy "
                   f"needs both genuine and impostor pairs (read from {path}; unit verification)")
    assert not (tmp_path / "runs" / "cli" / "results.jsonl").exists()
