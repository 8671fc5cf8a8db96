"""The biometric world writer: its files are accepted by the project's readers; builds are atomic and cached."""

from __future__ import annotations

import json

import numpy as np
import pytest

from overspec.data.biometric.attack_list import ocim_protocols, protocol_from_folders, read_protocol
from overspec.data.formats.bin_pairs import read_bin
from overspec.data.formats.ijb import read_ijb_meta
from overspec.files import temporary_name
from overspec.world.biometric import MARKER, WorldSizes, ensure_biometric_world, read_manifest

TINY = WorldSizes(pairs=20, ijb_subjects=4, mad_subjects=(3, 2), mad_morph_pairs=(2, 1), pad_subjects=(1, 1, 1),
                  pad_frames=2, fr_identities=3, fr_images=2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return ensure_biometric_world(tmp_path_factory.mktemp("bio") / "world", seed=1, sizes=TINY)


def test_verification_bins_read_back(world):
    paths = read_manifest(world)["verification"]
    assert set(paths) == {"lfw", "cfp_fp", "agedb_30"}
    for path in paths.values():
        pairs = read_bin(path)
        assert pairs.num_pairs == 20 and int(pairs.issame.sum()) == 10
        assert pairs.issame[:1].all() and not pairs.issame[1:2].all()  # fold = genuine block then impostor block
        image = pairs.read(3)
        assert image.size == (112, 112) and image.mode == "RGB"


def test_ijb_meta_reads_back(world):
    meta = read_ijb_meta(read_manifest(world)["ijb"]["root"])
    assert meta.prefix == "ijbc"
    assert meta.num_faces == read_manifest(world)["ijb"]["faces"]
    assert len(meta.pair_labels) == 16 and int(meta.pair_labels.sum()) == 4
    assert sorted(meta.galleries) == ["G1", "G2"] and len(meta.galleries["G1"].template_ids) == 2
    assert ((meta.scores > 0) & (meta.scores <= 1)).all()
    aligned, _ = meta.faces_dataset()[0]
    assert aligned.size == (112, 112)


def test_mad_protocol_reads_back(world):
    protocol = read_protocol(read_manifest(world)["mad"]["protocol"], task="mad")
    assert protocol.splits() == ("train", "test")
    assert protocol.attack_types("test") == ("blend", "latent", "warp")
    test = protocol.split("test")
    assert test.labels.tolist().count(1) == 4 and test.labels.tolist().count(0) == 3
    assert test[0][0].size == (112, 112)


def test_pad_sources_read_back_and_build_mcio(world):
    sources = read_manifest(world)["pad"]["sources"]
    assert sorted(sources) == ["C", "I", "M", "O"]
    lists = {key: read_protocol(path) for key, path in sources.items()}
    for key, protocol in lists.items():
        assert protocol.splits() == ("train", "dev", "test")
        assert protocol.attack_types() == ("mask", "print", "replay")
        assert {s.source for s in protocol.samples} == {key}
        by_folder = protocol_from_folders(protocol.root)
        assert sorted((s.path, s.label, s.attack_type, s.video_id, s.split) for s in by_folder.samples) == \
            sorted((s.path, s.label, s.attack_type, s.video_id, s.split) for s in protocol.samples)
        assert len({s.video_id for s in protocol.samples}) == 3 * 4  # 1 subject x 3 splits x (live + 3 PAIs)
    built = ocim_protocols(lists)
    assert {s.source for s in built["O_C_I_to_M"].samples_of("test")} == {"M"}
    assert len(built["O_C_I_to_M"].split("train")) == 3 * 4 * 2


def test_frames_of_a_source_share_its_camera_but_differ_across_sources(world):
    sources = read_manifest(world)["pad"]["sources"]
    means = {}
    for key, path in sources.items():
        live = read_protocol(path).split("train")
        means[key] = np.mean([np.asarray(live[i][0], dtype=float).mean(axis=(0, 1)) for i in range(len(live))], 0)
    assert len({tuple(np.round(m)) for m in means.values()}) == 4


def test_fr_train_folders_and_manifest(world):
    manifest = read_manifest(world)
    folders = sorted(p for p in (world / "fr_train").iterdir())
    assert [p.name for p in folders] == ["id0000", "id0001", "id0002"]
    assert all(len(list(p.glob("*.png"))) == 2 for p in folders)
    assert manifest["seed"] == 1 and manifest["sizes"]["pairs"] == 20


def test_second_call_is_a_noop_and_edits_trigger_a_rebuild(world):
    marker = (world / MARKER).read_text()
    stamp = (world / MARKER).stat().st_mtime_ns
    ensure_biometric_world(world, seed=1, sizes=TINY)
    assert (world / MARKER).stat().st_mtime_ns == stamp
    (world / "fr_train" / "id0000" / "00.png").write_bytes(b"tampered")
    temporary_name(world).mkdir()  # the temporary folder of a killed generator
    ensure_biometric_world(world, seed=1, sizes=TINY)
    assert (world / MARKER).read_text() == marker  # same content hash: regenerated deterministically
    assert not [p for p in world.parent.iterdir() if p.name.endswith(".tmp")]


def test_same_seed_same_content_other_seed_differs(tmp_path, world):
    again = ensure_biometric_world(tmp_path / "again", seed=1, sizes=TINY)
    assert json.loads((again / MARKER).read_text())["content_hash"] == \
        json.loads((world / MARKER).read_text())["content_hash"]
    other = ensure_biometric_world(tmp_path / "other", seed=2, sizes=TINY)
    assert json.loads((other / MARKER).read_text())["content_hash"] != \
        json.loads((world / MARKER).read_text())["content_hash"]


def test_refuses_a_foreign_folder_and_bad_sizes(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a biometric world"):
        ensure_biometric_world(tmp_path / "mine", sizes=TINY)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="multiple of 20"):
        WorldSizes(pairs=30)
