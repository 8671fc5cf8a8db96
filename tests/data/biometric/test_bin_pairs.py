"""insightface ``.bin`` pair files and the pairs-CSV layout: round trips, Python-2 files, malformed input."""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from overspec.data.base import DatasetLayoutError
from overspec.data.formats.bin_pairs import read_bin, read_pairs_csv, write_bin
from overspec.safeload import UnreadableFileError, UnsafeFileError


def _faces(n: int, size: int = 16, seed: int = 0) -> list[np.ndarray]:
    """``n`` smooth random RGB images (smooth so JPEG keeps them close)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 4, 4, 3)).astype(np.uint8)
    return [np.asarray(Image.fromarray(b).resize((size, size), Image.BILINEAR)) for b in base]


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def _py2_binstring(data: bytes) -> bytes:
    """A Python-2 ``str`` as pickle protocol 2 writes it (BINSTRING opcode)."""
    return b"T" + struct.pack("<i", len(data)) + data


def _py2_uint8_array(data: bytes) -> bytes:
    """A (N, 1) uint8 numpy array pickled the way numpy under Python 2 did (str dtype codes and raw data)."""
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
        + b"(K\x01J" + struct.pack("<i", len(data)) + b"K\x01\x86"
        + b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89" + _py2_binstring(data) + b"tb"
    )


def _py2_bin(items: list[bytes], issame: list[bool]) -> bytes:
    """A whole ``(bins, issame_list)`` pickle as Python 2 wrote it (protocol 2, no BINBYTES)."""
    bools = b"".join(b"\x88" if s else b"\x89" for s in issame)
    return b"\x80\x02](" + b"".join(items) + b"e](" + bools + b"e\x86."


def test_write_then_read_round_trips_png_exactly(tmp_path):
    images = _faces(6)
    path = write_bin(tmp_path / "lfw.bin", images, [True, False, True], fmt="png")
    pairs = read_bin(path)
    assert pairs.name == "lfw" and pairs.num_pairs == 3 and pairs.num_images == 6
    np.testing.assert_array_equal(pairs.issame, [True, False, True])
    for i, image in enumerate(images):
        np.testing.assert_array_equal(np.asarray(pairs.read(i)), image)


def test_jpeg_round_trip_is_close_and_stored_like_cv2_imencode(tmp_path):
    images = _faces(4, size=32)
    path = write_bin(tmp_path / "agedb_30.bin", images, [True, False])
    bins, issame = pickle.loads(path.read_bytes())  # our own file, trusted here to inspect its structure
    assert all(b.dtype == np.uint8 and b.ndim == 2 and b.shape[1] == 1 for b in bins)
    assert bins[0].tobytes()[:2] == b"\xff\xd8" and issame == [True, False]
    decoded = np.asarray(read_bin(path).read(3), dtype=np.int16)
    assert np.abs(decoded - images[3]).mean() < 4


@pytest.mark.parametrize("protocol", [2, 5])
def test_files_written_with_other_pickle_protocols_are_read(tmp_path, protocol):
    images = _faces(2)
    path = write_bin(tmp_path / "cfp_fp.bin", images, [False], fmt="png", protocol=protocol)
    np.testing.assert_array_equal(np.asarray(read_bin(path).read(1)), images[1])


def test_python2_file_with_str_buffers_is_read(tmp_path):
    images = _faces(4)
    path = tmp_path / "old.bin"
    path.write_bytes(_py2_bin([_py2_binstring(_png(im)) for im in images], [True, False]))
    pairs = read_bin(path)
    np.testing.assert_array_equal(pairs.issame, [True, False])
    np.testing.assert_array_equal(np.asarray(pairs.read(2)), images[2])


def test_python2_file_with_numpy_buffers_is_read(tmp_path):
    images = _faces(2, size=8)
    encoded = [_png(im) for im in images]
    path = tmp_path / "old_numpy.bin"
    path.write_bytes(_py2_bin([_py2_uint8_array(e) for e in encoded], [True]))
    pairs = read_bin(path)
    np.testing.assert_array_equal(np.asarray(pairs.read(0)), images[0])
    np.testing.assert_array_equal(np.asarray(pairs.read(1)), images[1])


def test_images_as_dataset_labels_are_pair_indices(tmp_path):
    images = _faces(4)
    ds = read_bin(write_bin(tmp_path / "calfw.bin", images, [True, False], fmt="png")).images_as_dataset("calfw")
    assert ds.dataset == "calfw" and ds.split == "pairs" and len(ds) == 4
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1])
    image, label = ds[3]
    assert image.mode == "RGB" and image.size == (16, 16) and label == 1
    np.testing.assert_array_equal(ds.info["issame"], [True, False])


def test_fingerprint_follows_content(tmp_path):
    images = _faces(4)
    a = read_bin(write_bin(tmp_path / "a.bin", images, [True, False], fmt="png")).images_as_dataset("x")
    b = read_bin(write_bin(tmp_path / "b.bin", images, [True, False], fmt="png")).images_as_dataset("x")
    c = read_bin(write_bin(tmp_path / "c.bin", images, [True, True], fmt="png")).images_as_dataset("x")
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_malicious_bin_is_refused_and_command_never_runs(tmp_path):
    marker = tmp_path / "created_by_pickle"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(([Exploit(), b"x"], [True]), protocol=2))
    with pytest.raises(UnsafeFileError, match="lfw.bin"):
        read_bin(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (([b"a", b"b", b"c"], [True]), "odd number of images"),
        (([], []), "holds no pairs"),
        (([b"a", b"b"], [True, False]), "issame_list has 2 entries"),
        (([b"a", b"b"], [True], "extra"), "expected a pickled"),
        (([b"a", 3], [True]), "image 1 is a int"),
        (([b"a", b"b"], ["yes"]), "issame_list must hold booleans"),
    ],
)
def test_malformed_bin_errors_name_the_file(tmp_path, payload, message):
    path = tmp_path / "broken.bin"
    path.write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(UnreadableFileError, match=message) as info:
        read_bin(path)
    assert str(path) in str(info.value)


def test_undecodable_image_error_names_file_and_index(tmp_path):
    path = tmp_path / "garbage.bin"
    path.write_bytes(pickle.dumps(([b"not a jpeg", b"nor this"], [True]), protocol=4))
    pairs = read_bin(path)
    with pytest.raises(UnreadableFileError, match=r"garbage.bin: image 1"):
        pairs.read(1)


def test_missing_bin_is_a_layout_error(tmp_path):
    with pytest.raises(DatasetLayoutError, match="nope.bin"):
        read_bin(tmp_path / "nope.bin")


def test_write_bin_rejects_wrong_counts_and_formats(tmp_path):
    with pytest.raises(ValueError, match="cannot form 2 pairs"):
        write_bin(tmp_path / "x.bin", _faces(3), [True, False])
    with pytest.raises(ValueError, match="unknown image format"):
        write_bin(tmp_path / "x.bin", _faces(2), [True], fmt="gif")
    assert not (tmp_path / "x.bin").exists()


def test_pairs_csv_reader_matches_the_bin_contract(tmp_path):
    images = _faces(4)
    (tmp_path / "img").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "pairs.csv").write_text("path1,path2,issame\nimg/0.png,img/1.png,1\nimg/2.png,img/3.png,false\n")
    pairs = read_pairs_csv(tmp_path / "pairs.csv")
    np.testing.assert_array_equal(pairs.issame, [True, False])
    ds = pairs.images_as_dataset("mine")
    np.testing.assert_array_equal(np.asarray(ds[2][0]), images[2])
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1])


def test_pairs_csv_errors_name_line_and_path(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(_faces(1)[0]))
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("path1,path2,issame\na.png,a.png,1\na.png,missing.png,0\n")
    with pytest.raises(DatasetLayoutError, match=r"line 3.*missing.png|missing.png.*line 3"):
        read_pairs_csv(csv_path)
    csv_path.write_text("path1,path2,issame\na.png,a.png,maybe\n")
    with pytest.raises(ValueError, match="line 2: issame"):
        read_pairs_csv(csv_path)
    csv_path.write_text("left,right,issame\na.png,a.png,1\n")
    with pytest.raises(DatasetLayoutError, match="missing columns"):
        read_pairs_csv(csv_path)
