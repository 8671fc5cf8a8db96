"""Tiny placeholder files in a biometric catalog entry's declared layout (a .bin, an IJB meta folder, protocol CSVs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from overspec.data.biometric.align import ARCFACE_TEMPLATE_112
from overspec.data.biometric.attack_list import AttackProtocol, AttackSample, write_protocol
from overspec.data.biometric.benchmarks import BiometricBenchmark
from overspec.data.formats.bin_pairs import write_bin
from overspec.data.formats.ijb import IJBFace, write_ijb_meta

PAIRS = 20
IJB_TEMPLATES = 6
ATTACK_SPLITS = ("train", "dev", "test")
ROWS_PER_SPLIT = 8  # 2 labels x 2 videos x 2 frames


def write_placeholder(entry: BiometricBenchmark, data_root: Path, seed: int = 0) -> None:
    """Write the smallest valid files ``entry`` expects under ``data_root`` (or at its absolute root)."""
    path = entry.path(data_root)
    rng = np.random.default_rng(seed)
    if entry.format == "bin":
        write_placeholder_bin(path, rng)
    elif entry.format == "ijb":
        write_placeholder_ijb(path, entry.options["prefix"], rng)
    elif entry.format == "attack_csv":
        write_placeholder_protocol(path, entry.kind, "", rng)
    elif entry.format == "ocim":
        for source, rel in entry.options["sources"].items():
            write_placeholder_protocol(path / rel, entry.kind, source, rng)
    else:
        raise AssertionError(f"{entry.origin}: no placeholder writer for format {entry.format!r}")


def write_placeholder_bin(path: Path, rng: np.random.Generator) -> Path:
    """An insightface ``.bin`` of :data:`PAIRS` pairs of 16×16 images, genuine and impostor alternating."""
    images = list(rng.integers(0, 256, size=(2 * PAIRS, 16, 16, 3), dtype=np.uint8))
    return write_bin(path, images, [k % 2 == 0 for k in range(PAIRS)])


def write_placeholder_ijb(root: Path, prefix: str, rng: np.random.Generator) -> Path:
    """An IJB meta folder: two faces per template, templates 2k-1 and 2k of subject k, G1 / G2 galleries, probes."""
    templates = range(1, IJB_TEMPLATES + 1)
    faces = [IJBFace(rng.integers(0, 256, size=(40, 36, 3), dtype=np.uint8),
                     ARCFACE_TEMPLATE_112 / 3 + rng.integers(0, 3, size=2), 0.9, template, 10 * template + face,
                     (template + 1) // 2) for template in templates for face in range(2)]
    pairs = [(a, b, int((a + 1) // 2 == (b + 1) // 2)) for a in templates for b in templates if a < b]
    return write_ijb_meta(root, prefix, faces, pairs, galleries={"G1": [1, 3], "G2": [5]}, probes=[2, 4, 6])


def write_placeholder_protocol(path: Path, task: str, source: str, rng: np.random.Generator) -> Path:
    """A protocol CSV with two bona fide and two attack videos (two frames each) in every split."""
    folder = path.parent / f"{path.stem}-images"
    samples = []
    for split in ATTACK_SPLITS:
        for label, attack_type in (("bona_fide", ""), ("attack", "print")):
            for video in range(2):
                for frame in range(2):
                    rel = f"{split}/{label}/v{video}_{frame}.png"
                    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(folder / rel)
                    samples.append(AttackSample(rel, label, attack_type, f"{split}/{label}/v{video}",
                                                f"{split}-s{video}", split, source))
    return write_protocol(path, AttackProtocol(path.stem, folder, tuple(samples), task))
