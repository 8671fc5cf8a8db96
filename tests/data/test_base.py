import io

import numpy as np
import pytest
from PIL import Image

from overspec.data.base import LabelledImages


def _split(n=6):
    return LabelledImages("d", "test", np.arange(n) % 2, lambda i: Image.new("L", (4, 4), i * 10), identity=("d", n),
                          info={"video_id": np.array([f"v{i}" for i in range(n)], dtype=object), "task": "pad",
                                "matrix": np.zeros((3, 3))})


def test_subset_slices_per_sample_info_and_reads_the_right_images():
    split = _split()
    sub = split.subset([4, 1])
    assert sub.labels.tolist() == [0, 1]
    assert sub.info["video_id"].tolist() == ["v4", "v1"]
    assert sub.info["task"] == "pad" and sub.info["matrix"].shape == (3, 3)
    image, label = sub[0]
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (40, 40, 40) and label == 0
    assert sub.fingerprint != split.subset([1, 4]).fingerprint


def test_locations_follow_subsets_and_transforms_and_fall_back_to_item_numbers():
    split = _split()
    assert split.location(2) == "d/test item 2"
    assert split.subset([4, 1], split="carved").location(1) == "d/test item 1"
    located = LabelledImages("d", "test", np.zeros(4), lambda i: Image.new("RGB", (2, 2)), identity="x",
                             locate=lambda i: f"/data/{i}.png")
    nested = located.subset([3, 2, 0]).subset([1, 2]).with_transform(lambda im: im.size)
    assert [nested.location(i) for i in range(2)] == ["/data/2.png", "/data/0.png"]
    assert nested[0] == ((2, 2), 0)


def test_checked_items_turn_decode_errors_into_a_placeholder_and_a_problem():
    def read(i):
        if i == 1:
            return Image.open(io.BytesIO(b""))
        return Image.new("L", (3, 3), 7)

    split = LabelledImages("d", "test", np.array([0, 1, 0]), read, identity="x", locate=lambda i: f"f{i}.png",
                           transform=lambda im: np.asarray(im).shape)
    checked = split.checked()
    assert len(checked) == 3 and checked[0] == ((3, 3, 3), 0, "")
    placeholder, label, problem = checked[1]
    assert placeholder[2] == 3 and label == 1 and problem.startswith("UnidentifiedImageError: cannot identify")
    # PIL names an in-memory stream by its repr, whose address differs between two reads of the same item
    assert split.decode_problem(0) == "" and split.decode_problem(1).split(" <")[0] == problem.split(" <")[0]
    error = split.bad_image_error(1, problem)
    assert isinstance(error, ValueError) and "f1.png" in str(error) and problem in str(error)
    with pytest.raises(OSError):
        split[1]
