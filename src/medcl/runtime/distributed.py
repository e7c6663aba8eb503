"""Multi-process training with ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node=N -m medcl train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` then joins the process group (``nccl`` on GPUs, ``gloo`` on CPUs).
Without those variables everything here is a no-op for a single process.

Conventions: ``--batch-size`` is per process (the global batch is ``batch_size x world_size``);
every process draws the same global batch and trains on its own shard, so N processes x B see
the same data as 1 process x N*B; only rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

#: how long a process waits for the others (rank 0 validates while the others wait).
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_env() -> DistInfo:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by torchrun); defaults to one process."""
    return DistInfo(rank=int(os.environ.get("RANK", 0)),
                    world_size=int(os.environ.get("WORLD_SIZE", 1)),
                    local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def setup(info: DistInfo, device: torch.device) -> torch.device:
    """Join the process group when running under torchrun; returns this process's device."""
    if not info.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=TIMEOUT)
    log.info("process %d of %d on %s", info.rank, info.world_size, device)
    return device


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x (N, ...)`` from every process along dim 0; gradients flow back to each
    process's own part. Identity for one process."""
    if not is_active():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()))


def broadcast_float(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` on every process (keeps time-based decisions in step)."""
    if not is_active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def barrier() -> None:
    if is_active():
        dist.barrier()
