"""Contract: every shipped biometric catalog entry is found and opened when its declared layout is on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from overspec.config.typed import ConfigError, from_dict
from overspec.data.biometric.benchmarks import (
    CATALOG_DIR, BiometricBenchmark, OpenedAttack, OpenedIJB, OpenedVerification, benchmark_status,
    biometric_registry, open_benchmark,
)
from tests.data.biometric._placeholders import IJB_TEMPLATES, PAIRS, ROWS_PER_SPLIT, write_placeholder

SHIPPED = [name for name in biometric_registry().names()
           if Path(biometric_registry().get(name).origin).parent == CATALOG_DIR]


def test_every_catalog_file_is_registered():
    assert len(SHIPPED) == len(list(CATALOG_DIR.glob("*.yaml")))


@pytest.mark.parametrize("name", SHIPPED)
def test_entry_reads_placeholder_files_in_its_layout(tmp_path, name):
    entry = biometric_registry().get(name)
    assert entry.layout.strip() and entry.description.strip()
    present, detail = benchmark_status(entry, tmp_path)
    assert not present and str(tmp_path) in detail and entry.layout in detail
    write_placeholder(entry, tmp_path)
    present, detail = benchmark_status(entry, tmp_path)
    assert present, detail
    opened = open_benchmark(entry, tmp_path)
    if entry.kind == "verification":
        assert isinstance(opened, OpenedVerification) and len(opened.pairs) == 2 * PAIRS
        assert opened.issame.sum() == PAIRS // 2
    elif entry.kind == "ijb":
        assert isinstance(opened, OpenedIJB) and len(opened.faces) == 2 * IJB_TEMPLATES
        assert opened.faces.read(0).size == (112, 112)
    else:
        assert isinstance(opened, OpenedAttack) and opened.kind == entry.kind
        splits = opened.splits()
        assert {"train", "test"} <= set(splits)
        for split in ("train", "test"):
            assert set(np.unique(splits[split].labels)) == {0, 1}
            assert splits[split].info["task"] == entry.kind
        n_sources = len(entry.options["sources"]) - 1 if entry.format == "ocim" else 1
        assert len(splits["train"]) == n_sources * ROWS_PER_SPLIT * len(entry.options.get("train_splits", ["train"]))
        assert len(splits["test"]) == ROWS_PER_SPLIT * len(entry.options.get("test_splits", ["test"]))


def test_split_options_name_protocol_splits_of_ocim_entries():
    raw = {"name": "x", "kind": "pad", "format": "ocim", "root": "pad", "layout": "lists",
           "options": {"target": "M", "sources": {"O": "O.csv", "M": "M.csv"}, "train_splits": ["train", "all"]}}
    with pytest.raises(ConfigError, match=r"x.yaml: options.train_splits must be a non-empty list drawn from"):
        from_dict(BiometricBenchmark, raw, where="x.yaml")
    single = {**raw, "format": "attack_csv", "options": {"train_splits": ["train", "test"]}}
    with pytest.raises(ConfigError, match=r"x.yaml: options.train_splits applies to ocim benchmarks only"):
        from_dict(BiometricBenchmark, single, where="x.yaml")
