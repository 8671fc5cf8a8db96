import json

import numpy as np
import torch.multiprocessing as mp

from overspec.distributed import shard_bounds
from overspec.features import FeatureStore
from overspec.models import ModelSpec, load_model
from tests.conftest import make_split
from tests.features._dist_worker import extract


def test_shard_bounds_cover_every_item_once():
    for n in (0, 1, 7, 12):
        for count in (1, 2, 3, 5):
            covered = [i for r in range(count) for i in range(*shard_bounds(n, r, count))]
            assert covered == list(range(n))


def test_two_gloo_processes_extract_what_one_process_does(tmp_path, micro_config_file, micro_checkpoint):
    n = 7  # odd, so the two shards differ in size
    out = tmp_path / "out"
    out.mkdir()
    mp.start_processes(extract, args=(2, str(tmp_path / "init"), str(micro_config_file), str(micro_checkpoint),
                                      str(tmp_path / "dist-store"), str(out), n), nprocs=2, start_method="spawn")
    encoder = load_model(ModelSpec(name="m", architecture="micro-clip", weights=str(micro_checkpoint)),
                         cache_dir=tmp_path)
    single = FeatureStore(tmp_path / "single-store", progress=False).image_features(encoder, make_split(n=n),
                                                                                    view="flip")
    for rank in (0, 1):
        np.testing.assert_allclose(np.load(out / f"rank{rank}.npy"), np.asarray(single.x), rtol=1e-5, atol=1e-6)
        assert json.loads((out / f"rank{rank}.json").read_text())["cached"] is False
    stored = list((tmp_path / "dist-store" / "image").rglob("*.npy"))
    assert len(stored) == 1
    np.testing.assert_allclose(np.load(stored[0]), np.asarray(single.x), rtol=1e-5, atol=1e-6)
