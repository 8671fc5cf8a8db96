"""Worker for the two-process gloo test of distributed feature extraction (imported by spawned processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import open_clip
import torch.distributed as dist


def extract(rank: int, world: int, init_file: str, config_file: str, checkpoint: str, store_root: str,
            out_dir: str, n: int) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        open_clip.add_model_config(Path(config_file))
        from overspec.features import FeatureStore
        from overspec.models import ModelSpec, load_model
        from tests.conftest import make_split

        encoder = load_model(ModelSpec(name="m", architecture="micro-clip", weights=checkpoint), cache_dir=Path(out_dir))
        store = FeatureStore(Path(store_root), batch_size=2, progress=False)
        features = store.image_features(encoder, make_split(n=n), view="flip")
        np.save(Path(out_dir) / f"rank{rank}.npy", np.asarray(features.x))
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps({"cached": features.cached}))
    finally:
        dist.destroy_process_group()
