"""IJB meta folder: writer/reader round trip, validation errors, aligned-face dataset."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from overspec.data.base import DatasetLayoutError
from overspec.data.biometric.align import ARCFACE_TEMPLATE_112
from overspec.data.formats.ijb import IJBFace, detect_prefix, read_ijb_meta, write_ijb_meta


def _face(template: int, media: int, subject: int, score: float, seed: int, name: str | None = None) -> IJBFace:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(150, 130, 3), dtype=np.uint8)
    landmarks = ARCFACE_TEMPLATE_112 + rng.integers(5, 20, size=2)  # a pure integer shift of the template
    return IJBFace(image, landmarks, score, template, media, subject, name)


def _faces() -> list[IJBFace]:
    return [
        _face(1, 100, 7, 0.91, 0), _face(1, 100, 7, 0.55, 1), _face(1, 101, 7, 0.80, 2),
        _face(2, 200, 8, 0.99, 3), _face(3, 300, 7, 0.42, 4, name="img/special.jpg"),
    ]


def _write(root, prefix="ijbc", pairs=((1, 2, 0), (1, 3, 1), (2, 3, 0))):
    return write_ijb_meta(root, prefix, _faces(), pairs, galleries={"G1": [1], "G2": [2]}, probes=[3])


def test_round_trip_recovers_every_field(tmp_path):
    root = _write(tmp_path / "IJBC")
    meta = read_ijb_meta(root)
    faces = _faces()
    assert meta.prefix == "ijbc" and meta.num_faces == 5
    assert meta.image_names == ("1.jpg", "2.jpg", "3.jpg", "4.jpg", "img/special.jpg")
    np.testing.assert_array_equal(meta.template_ids, [1, 1, 1, 2, 3])
    np.testing.assert_array_equal(meta.media_ids, [100, 100, 101, 200, 300])
    np.testing.assert_allclose(meta.scores, [f.score for f in faces], atol=1e-6)
    np.testing.assert_allclose(meta.landmarks, np.stack([f.landmarks for f in faces]), atol=1e-4)
    np.testing.assert_array_equal(meta.pair_t1, [1, 1, 2])
    np.testing.assert_array_equal(meta.pair_t2, [2, 3, 3])
    np.testing.assert_array_equal(meta.pair_labels, [0, 1, 0])
    assert sorted(meta.galleries) == ["G1", "G2"] and list(meta.probes) == ["mixed"]
    np.testing.assert_array_equal(meta.galleries["G1"].template_ids, [1])
    np.testing.assert_array_equal(meta.galleries["G1"].subject_ids, [7])
    np.testing.assert_array_equal(meta.probes["mixed"].subject_ids, [7])


def test_ijbb_prefix_is_detected(tmp_path):
    root = _write(tmp_path / "IJBB", prefix="ijbb")
    assert detect_prefix(root) == "ijbb"
    assert read_ijb_meta(root).prefix == "ijbb"


def test_unknown_template_in_pairs_names_file_line_and_id(tmp_path):
    root = _write(tmp_path / "IJBC", pairs=((1, 2, 0), (2, 99, 1)))
    with pytest.raises(DatasetLayoutError, match=r"line 2: unknown template id 99") as info:
        read_ijb_meta(root)
    assert "ijbc_template_pair_label.txt" in str(info.value)


def test_unknown_template_in_a_gallery_is_refused(tmp_path):
    root = _write(tmp_path / "IJBC")
    (root / "meta" / "ijbc_1N_gallery_G1.csv").write_text("TEMPLATE_ID,SUBJECT_ID\n1,7\n42,9\n")
    with pytest.raises(DatasetLayoutError, match=r"unknown template id 42") as info:
        read_ijb_meta(root)
    assert "ijbc_1N_gallery_G1.csv" in str(info.value)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("ijbc_template_pair_label.txt", "1 2 0\n1 x 1\n", "non-integer"),
        ("ijbc_template_pair_label.txt", "1 2 0\n1 3\n", "not a multiple of 3"),
        ("ijbc_template_pair_label.txt", "1 2 0\n1 3 2\n", "line 2: label 2"),
        ("ijbc_face_tid_mid.txt", "1.jpg 1\n", "line 1 has 2 fields"),
        ("ijbc_name_5pts_score.txt", "1.jpg 1 2 3 4 5 6 7 8 9 10 0.5\n", "no landmarks for image '2.jpg'"),
    ],
)
def test_malformed_meta_files_are_named(tmp_path, file, content, message):
    root = _write(tmp_path / "IJBC")
    (root / "meta" / file).write_text(content)
    with pytest.raises(DatasetLayoutError, match=message) as info:
        read_ijb_meta(root)
    assert file in str(info.value)


def test_missing_meta_folder_explains_the_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="face_tid_mid"):
        read_ijb_meta(tmp_path)


def test_faces_dataset_yields_aligned_crops_with_row_labels(tmp_path):
    meta = read_ijb_meta(_write(tmp_path / "IJBC"))
    ds = meta.faces_dataset()
    assert ds.dataset == "IJBC" and len(ds) == 5
    np.testing.assert_array_equal(ds.labels, np.arange(5))
    image, label = ds[4]
    assert image.size == (112, 112) and image.mode == "RGB" and label == 4
    np.testing.assert_array_equal(ds.info["template_ids"], meta.template_ids)
    # an integer shift of the template: the crop is the stored loose crop cut out at that offset, pixel for pixel
    with Image.open(tmp_path / "IJBC" / "loose_crop" / "1.jpg") as stored:
        loose = np.asarray(stored.convert("RGB"))
    shift = np.rint(meta.landmarks[0, 0] - ARCFACE_TEMPLATE_112[0]).astype(int)
    np.testing.assert_array_equal(np.asarray(ds[0][0]), loose[shift[1]:shift[1] + 112, shift[0]:shift[0] + 112])
