"""Protocol CSVs for MAD / PAD: round trip, validation messages, folder readers, MCIO builders, video scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from overspec.data.base import DatasetLayoutError
from overspec.data.biometric.attack_list import (
    COLUMNS, AttackProtocol, AttackSample, ProtocolListError, leave_one_out, ocim_protocols,
    protocol_from_folders, read_protocol, video_scores, write_protocol,
)

HEADER = ",".join(COLUMNS) + "\n"


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), value, dtype=np.uint8)).save(path)


def _protocol(tmp_path: Path, key: str) -> AttackProtocol:
    """A hand-built per-dataset list: per split one bona fide video and one print video, two frames each."""
    root = tmp_path / key
    samples = []
    for split in ("train", "dev", "test"):
        for label, kind in (("bona_fide", ""), ("attack", "print")):
            for frame in range(2):
                rel = f"{split}/{label}/{kind or 'live'}_{frame}.png"
                _png(root / rel, 10 * frame)
                samples.append(AttackSample(rel, label, kind, f"{split}-{label}", f"s-{split}", split, key))
    return AttackProtocol(key, root, tuple(samples))


def test_round_trip_keeps_every_field_and_relative_paths(tmp_path):
    protocol = _protocol(tmp_path, "C")
    csv_path = write_protocol(tmp_path / "lists" / "c.csv", protocol)
    back = read_protocol(csv_path, name="C")
    assert back.samples != protocol.samples  # paths are now relative to lists/, not to the data root
    assert [s.path for s in back.samples][0] == "../C/train/bona_fide/live_0.png"
    assert [(s.label, s.attack_type, s.video_id, s.subject_id, s.split, s.source) for s in back.samples] == \
        [(s.label, s.attack_type, s.video_id, s.subject_id, s.split, s.source) for s in protocol.samples]
    assert [(back.root / s.path).resolve() for s in back.samples] == \
        [(protocol.root / s.path).resolve() for s in protocol.samples]
    assert not list((tmp_path / "lists").glob(".*"))  # no temporary file left behind


def test_split_gives_labelled_images_with_per_sample_info(tmp_path):
    protocol = _protocol(tmp_path, "C")
    test = protocol.split("test")
    assert len(test) == 4
    assert test.labels.tolist() == [1, 1, 0, 0]
    assert test.info["attack_type"].tolist() == ["", "", "print", "print"]
    assert test.info["video_id"].tolist() == ["test-bona_fide"] * 2 + ["test-attack"] * 2
    assert test.classnames == ("spoof face", "real face")
    image, label = test[3]
    assert image.mode == "RGB" and image.size == (6, 6) and label == 0
    assert test.fingerprint != protocol.split("train").fingerprint
    with pytest.raises(KeyError, match="has no 'eval' split"):
        protocol.split("eval")


def test_unknown_label_names_file_line_and_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(HEADER + "a.png,bona_fide,,v1,s1,train,O\nb.png,real,,v2,s1,train,O\n")
    with pytest.raises(ProtocolListError, match=r"p\.csv: line 3, column 'label': unknown value 'real'"):
        read_protocol(path, check_files=False)


def test_missing_columns_are_listed(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("path,label,split\na.png,attack,test\n")
    with pytest.raises(ProtocolListError,
                       match=r"p\.csv: line 1: missing column\(s\) 'attack_type', 'video_id', 'subject_id', 'source'"):
        read_protocol(path, check_files=False)


@pytest.mark.parametrize(("row", "pattern"), [
    ("a.png,attack,print,v,s,validation,O", r"line 2, column 'split': unknown value 'validation'"),
    ("a.png,bona_fide,print,v,s,train,O", r"line 2, column 'attack_type': bona fide row has attack type 'print'"),
    ("missing.png,attack,print,v,s,train,O", r"line 2, column 'path': file not found"),
])
def test_other_row_errors(tmp_path, row, pattern):
    path = tmp_path / "p.csv"
    path.write_text(HEADER + row + "\n")
    with pytest.raises(ProtocolListError, match=pattern):
        read_protocol(path)


def test_empty_video_id_defaults_to_the_path(tmp_path):
    _png(tmp_path / "x.png")
    path = tmp_path / "p.csv"
    path.write_text(HEADER + "x.png,attack,replay,,,test,\n")
    assert read_protocol(path).samples[0].video_id == "x.png"


def test_folder_layout_with_frame_folders_and_loose_images(tmp_path):
    root = tmp_path / "data"
    _png(root / "train/bona_fide/vid1/f0.png")
    _png(root / "train/bona_fide/vid1/f1.png")
    _png(root / "train/attack/print/p1.png")
    _png(root / "test/attack/replay/vid9/f0.png")
    protocol = protocol_from_folders(root, source="M")
    rows = [(s.path, s.label, s.attack_type, s.video_id, s.split, s.source) for s in protocol.samples]
    assert rows == [
        ("test/attack/replay/vid9/f0.png", "attack", "replay", "test/attack/replay/vid9", "test", "M"),
        ("train/bona_fide/vid1/f0.png", "bona_fide", "", "train/bona_fide/vid1", "train", "M"),
        ("train/bona_fide/vid1/f1.png", "bona_fide", "", "train/bona_fide/vid1", "train", "M"),
        ("train/attack/print/p1.png", "attack", "print", "train/attack/print/p1", "train", "M"),
    ]


def test_folder_layout_stem_rule_and_bad_split(tmp_path):
    root = tmp_path / "data"
    _png(root / "test/bona_fide/clip7_frame0.png")
    _png(root / "test/bona_fide/clip7_frame1.png")
    protocol = protocol_from_folders(root, video_from="stem")
    assert {s.video_id for s in protocol.samples} == {"test/bona_fide/clip7"}
    _png(root / "validation/bona_fide/x.png")
    with pytest.raises(DatasetLayoutError, match="unknown split folder 'validation'"):
        protocol_from_folders(root)


def test_ocim_builders_have_exact_membership(tmp_path):
    lists = {key: _protocol(tmp_path, key) for key in "OCIM"}
    built = ocim_protocols(lists)
    assert list(built) == ["O_C_I_to_M", "O_M_I_to_C", "O_C_M_to_I", "I_C_M_to_O"]
    p = built["O_C_I_to_M"]
    assert p.root == tmp_path.resolve() or p.root == tmp_path
    train = {(s.source, s.path) for s in p.samples_of("train")}
    expected_train = {(k, f"{k}/train/{lab}/{kind}_{f}.png") for k in "OCI"
                      for lab, kind in (("bona_fide", "live"), ("attack", "print")) for f in range(2)}
    assert train == expected_train
    assert {(s.source, s.path) for s in p.samples_of("test")} == {
        ("M", f"M/test/{lab}/{kind}_{f}.png") for lab, kind in (("bona_fide", "live"), ("attack", "print"))
        for f in range(2)}
    assert {s.source for s in p.samples_of("dev")} == {"O", "C", "I"}
    assert all(s.split == "dev" for s in p.samples_of("dev")) and len(p.samples_of("dev")) == 12
    assert {s.video_id for s in p.samples_of("test")} == {"M/test-bona_fide", "M/test-attack"}
    assert (p.root / p.samples_of("test")[0].path).is_file()
    for name, (sources, target) in {"I_C_M_to_O": ("ICM", "O"), "O_M_I_to_C": ("OMI", "C")}.items():
        assert {s.source for s in built[name].samples_of("train")} == set(sources)
        assert {s.source for s in built[name].samples_of("test")} == {target}


def test_leave_one_out_pooled_variant_and_errors(tmp_path):
    lists = {key: _protocol(tmp_path, key) for key in "OCI"}
    pooled = leave_one_out(lists, "I", train_splits=("train", "test"), test_splits=("train", "test"))
    assert len(pooled.samples_of("train")) == 2 * 2 * 4 and len(pooled.samples_of("test")) == 2 * 4
    with pytest.raises(KeyError, match="unknown target 'M'"):
        leave_one_out(lists, "M")
    with pytest.raises(KeyError, match="missing M"):
        ocim_protocols(lists)


def test_video_scores_hand_worked():
    result = video_scores([0.2, 0.4, 0.9, 0.1, 0.7, 0.5], ["b", "b", "a", "c", "a", "c"], [0, 0, 1, 0, 1, 0],
                          ["print", "print", "", "mask", "", "mask"])
    assert result.video_ids.tolist() == ["b", "a", "c"]
    np.testing.assert_allclose(result.scores, [0.3, 0.8, 0.3])
    assert result.labels.tolist() == [0, 1, 0]
    assert result.attack_types.tolist() == ["print", "", "mask"]
    assert result.n_frames.tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="video 'a' mixes labels"):
        video_scores([0.1, 0.2], ["a", "a"], [0, 1])
