"""Stored feature files stream in row blocks without reading through the mapping; the checksum is unchanged."""

import numpy as np

from overspec.features._files import _data_sha256, _sha256, read_entry, row_blocks, write_array


def test_row_blocks_of_a_mapped_entry_and_of_a_view_equal_the_array(tmp_path):
    array = np.random.default_rng(0).normal(size=(103, 2, 5)).astype(np.float32)
    write_array(tmp_path / "a.npy", array, {})
    mapped, _ = read_entry(tmp_path / "a.npy")
    for source in (mapped, mapped[1:], array):
        blocks = list(row_blocks(source, 10))
        assert [start for start, _ in blocks] == list(range(0, source.shape[0], 10))
        np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), np.asarray(source))
    assert _data_sha256(mapped) == _sha256(array)
