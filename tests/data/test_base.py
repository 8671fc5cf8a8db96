import numpy as np
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
