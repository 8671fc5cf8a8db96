"""torch.distributed helpers: start from torchrun's environment, shard work, gather results.

Under ``torchrun --nproc-per-node N overspec run ...`` every rank extracts a contiguous shard of each split's
images (NCCL on GPUs, gloo on CPU); the shards are gathered so every rank holds the full features, and only
rank 0 writes files.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["init_from_env", "is_distributed", "rank", "world_size", "is_main", "shard_bounds", "gather_rows",
           "barrier"]


def init_from_env(device: str = "cpu") -> bool:
    """Initialise the default process group when torchrun's variables are set; return whether it is active."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def is_distributed() -> bool:
    """Whether a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes files (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def shard_bounds(n: int, index: int | None = None, count: int | None = None) -> tuple[int, int]:
    """Return ``[start, stop)`` of the contiguous shard of ``n`` items owned by rank ``index`` of ``count``."""
    index = rank() if index is None else index
    count = world_size() if count is None else count
    per = -(-n // count)
    return min(n, index * per), min(n, (index + 1) * per)


def gather_rows(local: np.ndarray, n: int) -> np.ndarray:
    """Concatenate every rank's contiguous shard (in rank order) into the full ``n``-row array."""
    if not is_distributed():
        return local
    per = -(-n // world_size())
    padded = np.zeros((per, *local.shape[1:]), dtype=np.float32)
    padded[: local.shape[0]] = local
    tensor = torch.from_numpy(padded)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor)
    return torch.cat(parts).cpu().numpy()[:n]
