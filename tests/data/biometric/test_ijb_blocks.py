"""IJB meta files parsed a block of whole lines at a time: the same arrays whatever the block size.

Blocks are shrunk to a few bytes so that they end mid-line, mid-number and on blank lines; files without a final
newline, with CRLF line ends, blank lines and different 1:N header rows are read as a whole-file parse reads them
(the reference: ``str.split`` on the whole text).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from overspec.data.base import DatasetLayoutError
from overspec.data.formats import _lines, ijb
from overspec.data.formats._lines import count_lines, line_blocks, text_line_blocks
from overspec.data.formats.ijb import read_ijb_meta

POINTS = " ".join(f"{v:.3f}" for v in np.linspace(30.0, 90.0, 10))


@pytest.mark.parametrize("content", [b"", b"\n", b"a", b"a\n", b"ab\ncd", b"ab\ncd\n", b"\n\nab\r\n\ncd\r\nef",
                                     b"one very long line without a newline", b"x\n" * 17])
@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 22])
def test_line_blocks_rejoin_to_the_file_and_end_on_newlines(tmp_path, content, block):
    path = tmp_path / "f.txt"
    path.write_bytes(content)
    blocks = list(line_blocks(path, block))
    assert b"".join(blocks) == content
    assert all(b.endswith(b"\n") for b in blocks[:-1]) and all(blocks)
    assert count_lines(path, block) == len(content.splitlines())
    expected = [line for line in content.decode().splitlines() if line.strip()]
    assert [line for lines in text_line_blocks(path, block) for line in lines] == expected


def write_meta(root: Path, faces: str, landmarks: str, pairs: str, gallery: str | None = None) -> Path:
    """A meta folder with the given file contents (written as bytes: line ends and final newline as given)."""
    meta = root / "meta"
    meta.mkdir(parents=True)
    (meta / "ijbc_face_tid_mid.txt").write_bytes(faces.encode())
    (meta / "ijbc_name_5pts_score.txt").write_bytes(landmarks.encode())
    (meta / "ijbc_template_pair_label.txt").write_bytes(pairs.encode())
    if gallery is not None:
        (meta / "ijbc_1N_gallery_G1.csv").write_bytes(gallery.encode())
        (meta / "ijbc_1N_probe_mixed.csv").write_bytes(gallery.encode())
    return root


def reference_ids(text: str) -> np.ndarray:
    """Every field but the first of each non-blank line, as integers (the whole-file parse)."""
    return np.array([[int(v) for v in line.split()[1:]] for line in text.splitlines() if line.strip()])


def meta_text(n_faces: int, final_newline: bool, line_end: str = "\n") -> tuple[str, str, str]:
    """Face list, landmark file (shuffled order) and pair file for ``n_faces`` faces in ``n_faces // 3 + 1``
    templates; the pair file has a blank line and its own final newline choice."""
    rng = np.random.default_rng(n_faces)
    tids = 1 + np.arange(n_faces) // 3
    faces = line_end.join(f"{k}.jpg {t} {1000 + k // 2}" for k, t in enumerate(tids))
    order = rng.permutation(n_faces)
    landmarks = line_end.join(f"{k}.jpg {POINTS} {k / n_faces:.6f}" for k in order)
    t1 = rng.integers(1, tids[-1] + 1, 40)
    t2 = rng.integers(1, tids[-1] + 1, 40)
    pairs = [f"{a} {b} {int(a == b)}" for a, b in zip(t1, t2)]
    pairs.insert(7, "")
    end = line_end if final_newline else ""
    return faces + end, landmarks + end, line_end.join(pairs) + end


@pytest.mark.parametrize("final_newline", [True, False])
@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
@pytest.mark.parametrize("block", [1, 5, 13, 64, 1 << 22])
def test_blocked_parse_equals_the_whole_file_parse(tmp_path, monkeypatch, final_newline, line_end, block):
    monkeypatch.setattr(_lines, "BLOCK_BYTES", block)
    monkeypatch.setattr(ijb, "line_blocks", lambda path: line_blocks(path, block))
    monkeypatch.setattr(ijb, "text_line_blocks", lambda path: text_line_blocks(path, block))
    faces, landmarks, pairs = meta_text(50, final_newline, line_end)
    gallery = line_end.join(["TEMPLATE_ID,SUBJECT_ID,FILENAME", "1,7,0.jpg", "", "1,7,1.jpg", "2,8,3.jpg"])
    meta = read_ijb_meta(write_meta(tmp_path / "IJBC", faces, landmarks, pairs, gallery + line_end * final_newline))
    ids = reference_ids(faces)
    assert meta.image_names == tuple(line.split()[0] for line in faces.splitlines())
    np.testing.assert_array_equal(meta.template_ids, ids[:, 0])
    np.testing.assert_array_equal(meta.media_ids, ids[:, 1])
    np.testing.assert_array_equal(meta.scores, (np.arange(50) / 50).round(6).astype(np.float32))
    np.testing.assert_array_equal(meta.landmarks[3].ravel(), np.array(POINTS.split(), dtype=np.float32))
    table = np.array([[int(v) for v in line.split()] for line in pairs.splitlines() if line.strip()])
    np.testing.assert_array_equal(np.c_[meta.pair_t1, meta.pair_t2, meta.pair_labels], table)
    assert meta.pair_t1.dtype == np.int32 and meta.pair_labels.dtype == np.int8 and meta.pair_t1.flags.owndata
    np.testing.assert_array_equal(meta.galleries["G1"].template_ids, [1, 2])
    np.testing.assert_array_equal(meta.probes["mixed"].subject_ids, [7, 8])


@pytest.mark.parametrize("header", ["TEMPLATE_ID,SUBJECT_ID,FILENAME", "template_id,subject_id", "\ufefftid,sid,f",
                                    "TEMPLATE_ID,SUBJECT_ID,FILENAME,EXTRA"])
def test_any_first_row_of_a_1n_list_is_its_header(tmp_path, header):
    faces, landmarks, pairs = meta_text(9, True)
    meta = read_ijb_meta(write_meta(tmp_path / "IJBC", faces, landmarks, pairs, f"{header}\n2,5,x.jpg\n3,6,y.jpg"))
    np.testing.assert_array_equal(meta.galleries["G1"].template_ids, [2, 3])
    np.testing.assert_array_equal(meta.galleries["G1"].subject_ids, [5, 6])


def test_a_header_only_list_is_empty(tmp_path):
    faces, landmarks, pairs = meta_text(9, True)
    meta = read_ijb_meta(write_meta(tmp_path / "IJBC", faces, landmarks, pairs, "TEMPLATE_ID,SUBJECT_ID"))
    assert meta.galleries["G1"].template_ids.size == 0


def test_several_pairs_on_one_line_grow_the_columns(tmp_path):
    faces, landmarks, _ = meta_text(9, True)
    meta = read_ijb_meta(write_meta(tmp_path / "IJBC", faces, landmarks, "1 2 0 2 3 0\n3 3 1 1 1 1\n2 2 1"))
    np.testing.assert_array_equal(meta.pair_t1, [1, 2, 3, 1, 2])
    np.testing.assert_array_equal(meta.pair_labels, [0, 0, 1, 1, 1])


@pytest.mark.parametrize("block", [3, 1 << 22])
@pytest.mark.parametrize(("file", "content", "message"), [
    ("ijbc_face_tid_mid.txt", "0.jpg 1 5\n\n1.jpg 1 5\n2.jpg 1 x\n", "line 3: 'x' is not an integer"),
    ("ijbc_face_tid_mid.txt", "0.jpg 1 5\n1.jpg 1\n", "line 2 has 2 fields"),
    ("ijbc_name_5pts_score.txt", f"0.jpg {POINTS} 0.5\n1.jpg {POINTS} zz\n", "line 2 has a non-number"),
    ("ijbc_template_pair_label.txt", "1 2 0\n\n1 3 2\n", "line 2: label 2"),
])
def test_errors_name_the_line_across_blocks(tmp_path, monkeypatch, block, file, content, message):
    monkeypatch.setattr(ijb, "line_blocks", lambda path: line_blocks(path, block))
    monkeypatch.setattr(ijb, "text_line_blocks", lambda path: text_line_blocks(path, block))
    faces, landmarks, pairs = meta_text(3, True)
    root = write_meta(tmp_path / "IJBC", faces, landmarks, pairs)
    (root / "meta" / file).write_text(content)
    with pytest.raises(DatasetLayoutError, match=message) as info:
        read_ijb_meta(root)
    assert file in str(info.value)
