"""Worker of the two-process gloo fine-tuning test (imported by spawned processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.distributed as dist


def train(rank: int, world: int, init_file: str, config_file: str, checkpoint: str, out_dir: str) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        open_clip.add_model_config(Path(config_file))
        from tests.finetune.test_trainer import train_toy_fr

        losses, adapter = train_toy_fr(checkpoint, Path(out_dir) / f"rank{rank}")
        if rank == 0:
            (Path(out_dir) / "losses.json").write_text(json.dumps(losses))
            np.savez(Path(out_dir) / "adapter.npz", **{k: v.numpy() for k, v in adapter.items()})
    finally:
        dist.destroy_process_group()
